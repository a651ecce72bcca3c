"""The README's first example does what its comment says: one transaction commits it all."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, select, text

from outbox.tables import outbox_messages
from sagas.tables import saga_instances
from tests import doc_blocks
from tests.test_docs import ROOT, run_page

README = ROOT / "README.md"


def _first_block_after(header: str) -> int:
    """The line where the README's block after the one headed `header` begins."""
    found = doc_blocks.blocks(README)
    index = next(i for i, block in enumerate(found) if block.code.startswith(header))
    return found[index + 1].line


def test_starting_the_saga_commits_loan_saga_and_command_together(tmp_path: Path) -> None:
    """Run as printed (module, `sagabox db upgrade`, web handler), the first section leaves the
    loan row, the saga in `checking` and the credit-check command in the outbox."""
    done = run_page(README, tmp_path, until=_first_block_after("# myservice/web.py"))
    assert 0 == done.returncode, done.stdout + done.stderr
    assert ["myservice/loans.py", "myservice/web.py"] == sorted(
        str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.py")
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'loans.db'}")
    try:
        with engine.connect() as connection:
            assert [("L-1", "checking")] == [
                tuple(row)
                for row in connection.execute(
                    select(saga_instances.c.correlation_id, saga_instances.c.state)
                )
            ]
            assert [("credit.RunCreditCheck", "credit")] == [
                tuple(row)
                for row in connection.execute(
                    select(outbox_messages.c.type, outbox_messages.c.destination)
                )
            ]
            assert [("L-1", 2500)] == [
                tuple(row) for row in connection.execute(text("SELECT id, amount FROM loans"))
            ]
    finally:
        engine.dispose()


def test_the_saga_section_says_to_create_the_tables_first() -> None:
    """The first runnable shell block is `sagabox db upgrade`, before the saga is started."""
    found = [block for block in doc_blocks.blocks(README) if block.runs]
    assert found[0].code.startswith("# myservice/loans.py")
    assert found[1].code.startswith("sagabox db upgrade")
    assert found[2].code.startswith("# myservice/web.py")
