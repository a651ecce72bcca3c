"""Migration 0006 on a database that has sagas: each keeps emitting ids from its saga id (its
incarnation becomes that id) and its journal lines stay its own, so retention keeps them."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from outbox.database import make_engine
from sagabox import migrate


def test_existing_sagas_get_their_id_as_incarnation(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url, "0005_relay_retries")
    engine = make_engine(empty_database_url)
    saga_id, ghost_id = uuid.uuid4(), uuid.uuid4()
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO sagabox_saga_instances (id, saga_type, correlation_id, state, "
                    "data, version, created_at, updated_at) VALUES (:id, 't', 'k', 's', '{}', 1, "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"id": saga_id.hex if engine.dialect.name == "sqlite" else saga_id},
            )
            for line_saga in (saga_id, ghost_id):
                connection.execute(
                    text(
                        "INSERT INTO sagabox_saga_journal (saga_id, saga_type, correlation_id, "
                        "trigger, message_id, outcome, at) VALUES (:saga, 't', 'k', 'm', :mid, "
                        "'transition', '2026-01-01 00:00:00')"
                    ),
                    {
                        "saga": line_saga.hex if engine.dialect.name == "sqlite" else line_saga,
                        "mid": uuid.uuid4().hex,
                    },
                )
        migrate.upgrade(empty_database_url)
        with engine.connect() as connection:
            [(instance_id, incarnation)] = connection.execute(
                text("SELECT id, incarnation FROM sagabox_saga_instances")
            ).all()
            lines = connection.execute(
                text("SELECT saga_id, incarnation FROM sagabox_saga_journal ORDER BY id")
            ).all()
        assert str(instance_id).replace("-", "") == str(incarnation).replace("-", "")
        assert [True, False] == [row.incarnation is not None for row in lines]
    finally:
        engine.dispose()
