"""The `SAGABOX_*` settings: one object, shown in `--help`, overridden by flags, all documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sagabox.app import App
from sagabox.cli import build_parser, main
from sagabox.settings import Settings, env_name

TABLE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere


def test_help_shows_the_defaults_and_their_variables(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` shows each default in force and the variable that sets it."""
    out = _help(capsys, "worker")
    assert "(default: 50; env SAGABOX_WORKER_PREFETCH)" in out
    assert "(default: info; env SAGABOX_LOG_LEVEL)" in out
    assert "(default: 200; env SAGABOX_RELAY_BATCH_SIZE)" in _help(capsys, "relay")


def test_a_variable_sets_the_default_and_the_flag_wins(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAGABOX_WORKER_PREFETCH", "7")
    monkeypatch.setenv("SAGABOX_DATABASE_URL", "postgresql://app:s3cret@db/app")
    assert "(default: 7; env SAGABOX_WORKER_PREFETCH)" in _help(capsys, "worker")
    help_text = _help(capsys, "db", "upgrade")
    assert "default: postgresql://app:***@db/app" in help_text
    assert "s3cret" not in help_text
    parser = build_parser()
    assert 7 == parser.parse_args(["worker", "--app", "x:y"]).prefetch
    assert 9 == parser.parse_args(["worker", "--app", "x:y", "--prefetch", "9"]).prefetch


def test_a_bad_value_stops_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAGABOX_RELAY_BATCH_SIZE", "lots")
    assert 1 == main(["relay", "--once", "--broker", "memory://"])
    err = capsys.readouterr().err
    assert err.startswith("sagabox: error: $SAGABOX_RELAY_BATCH_SIZE:")
    assert 1 == len(err.strip().splitlines())


def test_an_app_reads_its_database_and_broker_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SAGABOX_DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    monkeypatch.setenv("SAGABOX_BROKER_URL", "memory://settings")
    app = App("billing")
    assert str(tmp_path / "app.db") in app.database_url
    assert "memory://settings" == app.broker_url


def test_every_setting_is_in_the_configuration_table() -> None:
    """docs/configuration.md lists every setting, and nothing the settings do not have."""
    row = re.compile(r"^\| `(SAGABOX_[A-Z_]+)` \|[^|]*\|[^|]*\|[^|]*\|$", re.MULTILINE)
    rows = row.findall(TABLE.read_text())
    assert len(rows) == len(set(rows))
    assert {env_name(field) for field in Settings.model_fields} == set(rows)
