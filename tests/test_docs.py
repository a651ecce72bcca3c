"""Every code block of the README and of the documentation site runs as written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import doc_blocks

ROOT = Path(__file__).parent.parent
RUNNER = Path(doc_blocks.__file__)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# A reader's shell has none of these; the test run's own would send the blocks elsewhere.
_NOT_PASSED_ON = (
    "SAGABOX_DATABASE_URL",
    "SAGABOX_BROKER_URL",
    "SAGABOX_HARNESS_DATABASE_URL",
    "PYTEST_ADDOPTS",
)


def run_page(
    page: Path, folder: Path, until: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `page`'s blocks in `folder` as `tests/doc_blocks.py` does, in a process of its own."""
    env = {key: value for key, value in os.environ.items() if key not in _NOT_PASSED_ON}
    command = [sys.executable, str(RUNNER), str(page), str(folder)]
    if until is not None:
        command.append(str(until))
    return subprocess.run(
        command,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_code_block_of_the_page_runs(page: Path, tmp_path: Path) -> None:
    """The page's python blocks, and its shell blocks marked `run`, succeed in order."""
    if not any(block.runs for block in doc_blocks.blocks(page)):
        return  # nothing to run: spare the start-up of a runner
    done = run_page(page, tmp_path)
    assert 0 == done.returncode, done.stdout + done.stderr


def test_every_page_is_tested() -> None:
    """The README and at least the site's pages are collected, each with a block that runs."""
    assert (ROOT / "docs" / "index.md") in PAGES
    for page in PAGES:
        runnable = [block for block in doc_blocks.blocks(page) if block.runs]
        python = [block for block in doc_blocks.blocks(page) if block.language == "python"]
        assert not python or runnable, f"{page.name}: every python block is skipped"


def _page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent(text))
    return page


def test_a_failing_block_fails_the_page_and_names_its_line(tmp_path: Path) -> None:
    """A block that raises stops the run with exit 1 and the page's line of the error."""
    page = _page(
        tmp_path,
        """\
        Some text.

        ```python
        x = 1
        raise RuntimeError("broken snippet")
        ```

        ```python
        print("never reached")
        ```
        """,
    )
    done = run_page(page, tmp_path)
    assert 1 == done.returncode
    assert "page.md:4" in done.stdout
    assert 'File "' + str(page) + '", line 5' in done.stderr
    assert "never reached" not in done.stdout


def test_a_snippet_missing_an_import_fails(tmp_path: Path) -> None:
    """Blocks share no Python state: a name defined by an earlier block is not there."""
    page = _page(
        tmp_path,
        """\
        ```python
        from outbox import default_registry
        ```

        ```python
        default_registry.upcaster("x.Y", from_version=1)
        ```
        """,
    )
    done = run_page(page, tmp_path)
    assert 1 == done.returncode
    assert "NameError: name 'default_registry' is not defined" in done.stderr


def test_blocks_share_files_they_name(tmp_path: Path) -> None:
    """A block headed `# pkg/mod.py` is written there, so a later block imports it."""
    page = _page(
        tmp_path,
        """\
        ```python
        # shop/orders.py
        from outbox import Event


        class OrderPlaced(Event, type="shop.OrderPlaced"):
            order_id: str
        ```

        ```python
        from shop.orders import OrderPlaced

        print(OrderPlaced(order_id="O-1").type_name)
        ```
        """,
    )
    done = run_page(page, tmp_path)
    assert 0 == done.returncode, done.stderr
    assert "shop.OrderPlaced" in done.stdout
    assert (tmp_path / "shop" / "orders.py").exists()


def test_a_warning_fails_the_block(tmp_path: Path) -> None:
    """Warnings are errors, as in the suite: a snippet must not teach a deprecated call."""
    page = _page(
        tmp_path,
        """\
        ```python
        import warnings

        warnings.warn("old API", DeprecationWarning, stacklevel=1)
        ```
        """,
    )
    assert 1 == run_page(page, tmp_path).returncode


def test_shell_blocks_run_only_when_marked(tmp_path: Path) -> None:
    """An unmarked shell block is shown, not run; one marked `run` must succeed."""
    page = _page(
        tmp_path,
        """\
        ```sh
        exit 7
        ```

        <!-- test: run -->
        ```sh
        sagabox --version > version.txt
        ```

        <!-- test: skip shows a failure on purpose -->
        ```python
        raise SystemExit(3)
        ```

        <!-- test: run -->
        ```sh
        exit 4
        ```
        """,
    )
    done = run_page(page, tmp_path)
    assert 1 == done.returncode
    assert "page.md:17" in done.stdout
    assert (tmp_path / "version.txt").read_text().startswith("sagabox ")


def test_a_misspelt_marker_is_an_error(tmp_path: Path) -> None:
    """`<!-- test: skipp -->` must not silently skip (or run) the block after it."""
    page = _page(
        tmp_path,
        """\
        <!-- test: skipp -->
        ```python
        print("hi")
        ```
        """,
    )
    with pytest.raises(doc_blocks.BadMarker, match=r"page.md:1: unknown marker 'skipp'"):
        doc_blocks.blocks(page)
