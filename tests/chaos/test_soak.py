"""The CI-sized soak: 300 sagas in 15 s through killed (SIGKILL) and restarted relays and
workers, a RabbitMQ restart and cut database connections; nothing lost, nothing done twice.
`make soak SAGAS=10000` is the long profile."""

from __future__ import annotations

from collections.abc import Callable

from tests.chaos.soak import run_soak


def test_soak_under_chaos_loses_nothing_and_doubles_nothing(
    postgres_url: str, amqp_url: str, rabbitmq_control: Callable[[str], None]
) -> None:
    report = run_soak(postgres=postgres_url, broker=amqp_url, sagas=300, duration=15)
    print(f"\n{report}")
    assert report.ok, str(report)
    assert report.kills >= 5
    assert (1, 1) == (report.broker_restarts, report.connection_cuts)
