"""Every `SAGABOX_*` setting in one object: read from the environment, overridden by flags.

The command line takes its defaults from here, so `--help` shows the value in force and the
variable that sets it; `App` reads its database and broker from here too. One table of them all
is in docs/configuration.md (a test keeps it complete).
"""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from relay.broker import DEFAULT_EXCHANGE

PREFIX = "SAGABOX_"


class SettingsError(ValueError):
    """A `SAGABOX_*` environment variable holds a value sagabox cannot use."""


class Settings(BaseSettings):
    """sagabox's configuration; each field is read from `SAGABOX_<FIELD NAME>`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None, description="the database of the relay, the worker and the CLI (--db)"
    )
    broker_url: str | None = Field(
        default=None,
        description="the broker of the relay and the worker (--broker); an App without one "
        "uses memory://",
    )
    exchange: str = Field(default=DEFAULT_EXCHANGE, description="the topic exchange (--exchange)")
    log_level: str = Field(default="info", description="relay and worker log level (--log-level)")
    metrics_port: int | None = Field(
        default=None, description="serve Prometheus metrics on this port (--metrics-port)"
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="the address metrics listen on (--metrics-host)"
    )
    relay_batch_size: int = Field(
        default=200, gt=0, description="outbox rows per relay transaction (relay --batch-size)"
    )
    relay_poll_interval: float = Field(
        default=1.0, gt=0, description="seconds between the relay's safety-net polls"
    )
    worker_prefetch: int = Field(
        default=50, gt=0, description="messages in flight per worker at most (--prefetch)"
    )
    worker_batch_size: int = Field(
        default=1, gt=0, description="messages per worker transaction (worker --batch-size)"
    )
    worker_batch_wait: float = Field(
        default=0.005, ge=0, description="seconds a partial batch waits for one more message"
    )
    harness_database_url: str | None = Field(
        default=None,
        description="a PostgreSQL server for the saga_harness pytest fixture (--sagabox-db)",
    )


def env_name(field: str) -> str:
    """The environment variable of a settings field: `database_url` → `SAGABOX_DATABASE_URL`."""
    return f"{PREFIX}{field.upper()}"


def load_settings() -> Settings:
    """Read the settings from the environment now; a bad value is one `SettingsError` naming
    the variable and what it must be."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"${env_name(str(error['loc'][0]))}: {error['msg']}" for error in exc.errors()
        )
        raise SettingsError(f"{problems} (fix or unset it)") from None
