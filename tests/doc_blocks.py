"""Runs the code blocks of a Markdown page in order, as a reader would, in one empty folder.

Every ```python block is a complete program: it runs in a fresh process of its own (forked from
one that has imported sagabox's dependencies, so a page costs one start-up, not one per block),
with warnings as errors. A block whose first line is a comment naming a file (`# myservice/
loans.py`) is also written to that path first, so later blocks can import it. Blocks share the
folder (files, SQLite databases), never Python state. Shell blocks run only when marked
`<!-- test: run -->` on the line before them; `<!-- test: skip REASON -->` skips any block, and
`<!-- test: needs MODULE -->` runs it where MODULE is installed (in CI it must be);
`<!-- test: write -->` only writes a file block, for a later command to run (an Alembic
env.py, say). A page that
builds on another says so on a line of its own, `<!-- test: uses ../getting-started.md -->`:
that page's blocks run first, in the same folder.

Run as a script (`python tests/doc_blocks.py PAGE FOLDER`) it executes one page and exits 1 at
the first failing block, naming the page's line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<language>[\w+-]*)[ \t]*$")
_MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<what>.*?)\s*-->\s*$")
_USES = re.compile(r"^<!--\s*test:\s*uses\s+(?P<page>\S+\.md)\s*-->\s*$")
_FILE_HEADER = re.compile(r"^# (?P<path>[\w./-]+\.py)\b")
PYTHON = frozenset({"python", "py"})
SHELL = frozenset({"sh", "bash", "shell", "console"})


class BadMarker(ValueError):
    """A `<!-- test: ... -->` comment that means nothing: a typo must not skip a block."""


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, with the test marker written before it."""

    page: Path
    line: int  # of the first line of code, 1-based
    language: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"

    @property
    def file(self) -> str | None:
        """The path a python block says it is (`# myservice/loans.py`), if any."""
        match = _FILE_HEADER.match(self.code)
        return match["path"] if match and self.language in PYTHON else None

    @property
    def needs(self) -> str | None:
        """The module a block marked `needs MODULE` imports, which the docs group installs."""
        if self.marker is not None and self.marker.startswith("needs "):
            return self.marker.split()[1]
        return None

    @property
    def runs(self) -> bool:
        """Python blocks run unless skipped; shell blocks only when marked `run`."""
        if self.marker is not None and self.marker.startswith("skip"):
            return False
        if self.language in PYTHON:
            return True
        return self.language in SHELL and self.marker == "run"


def blocks(page: Path) -> list[Block]:
    """Every fenced code block of `page`, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        language = fence["language"].lower()
        start = index + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        code = textwrap.dedent("\n".join(lines[start:end])) + "\n"
        marker = _marker_before(lines, index, page)
        found.append(Block(page, start + 1, language, code, marker))
        index = end + 1
    return found


def _marker_before(lines: list[str], fence_index: int, page: Path) -> str | None:
    previous = fence_index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    match = _MARKER.match(lines[previous]) if previous >= 0 else None
    if match is None:
        return None
    what = match["what"]
    if what in ("run", "write") or re.fullmatch(r"(skip\s+\S.*|needs\s+[\w.]+)", what):
        return what
    raise BadMarker(
        f"{page.name}:{previous + 1}: unknown marker {what!r}: write <!-- test: run -->, "
        "<!-- test: write -->, <!-- test: skip WHY --> or <!-- test: needs MODULE -->"
    )


def prerequisites(page: Path) -> list[Path]:
    """The pages `page` builds on (`<!-- test: uses OTHER.md -->`), theirs first."""
    found: list[Path] = []
    for line in page.read_text(encoding="utf-8").splitlines():
        match = _USES.match(line.strip())
        if match is None:
            continue
        other = (page.parent / match["page"]).resolve()
        if not other.is_file():
            raise BadMarker(f"{page.name}: {match['page']} (which it uses) does not exist")
        found += [*prerequisites(other), other]
    return list(dict.fromkeys(found))


def run_page(page: Path, folder: Path, *, until: int | None = None) -> int:
    """Run every block of `page` that runs, in order, in `folder`; return the exit code.

    `until` stops after the blocks that start before that line of the page.
    """
    import warnings

    warnings.simplefilter("error")
    # What every block imports, loaded once before forking: a page then costs one start-up.
    import kombu  # noqa: F401
    import pydantic  # noqa: F401
    import sqlalchemy.orm  # noqa: F401
    import transitions  # noqa: F401

    import outbox  # noqa: F401
    import relay  # noqa: F401
    import sagabox.app  # noqa: F401
    import sagas  # noqa: F401

    os.chdir(folder)
    for other in prerequisites(page):
        if _run_blocks(other, folder) != 0:
            print(f"FAILED: {page.name} uses {other.name}, which failed", flush=True)
            return 1
    return _run_blocks(page, folder, until=until)


def _run_blocks(page: Path, folder: Path, *, until: int | None = None) -> int:
    for block in blocks(page):
        if until is not None and block.line >= until:
            break
        if not block.runs:
            continue
        if block.needs is not None and importlib.util.find_spec(block.needs) is None:
            reason = f"{block.where} needs {block.needs}: pip install --group docs"
            if os.environ.get("CI", "").lower() == "true":
                print(f"FAILED: {reason} (in CI every block must run)", flush=True)
                return 1
            print(f"--- SKIPPED {reason}", flush=True)
            continue
        print(f"--- {block.where} ({block.language})", flush=True)
        code = _run_python(block, folder) if block.language in PYTHON else _run_shell(block, folder)
        if code != 0:
            print(f"FAILED: the block at {block.where} exited {code}", flush=True)
            return 1
    return 0


def _run_python(block: Block, folder: Path) -> int:
    if block.file is not None:
        target = folder / block.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code, encoding="utf-8")
    elif block.marker == "write":
        print(f"FAILED: {block.where} is marked write but names no file (# path.py)", flush=True)
        return 1
    if block.marker == "write":
        return 0
    # Padding puts the code on its own line numbers: a traceback points into the page.
    source = "\n" * (block.line - 1) + block.code
    pid = os.fork()
    if pid == 0:  # the block's own process
        status = 0
        try:
            sys.path[0] = str(folder)
            sys.argv = [block.file or block.where]
            program = compile(source, str(block.page), "exec", dont_inherit=True)
            namespace = {"__name__": "__main__", "__file__": str(folder / (block.file or "-"))}
            exec(program, namespace)  # noqa: S102 - the project's own documentation
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status)


def _run_shell(block: Block, folder: Path) -> int:
    env = dict(os.environ)
    # The page's commands (`sagabox`, `pytest`) are those installed beside this Python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],  # noqa: S607 - bash from PATH
        cwd=folder,
        env=env,
        check=False,
        timeout=300,
    )
    return done.returncode


def main(argv: list[str]) -> int:
    """`PAGE FOLDER [UNTIL_LINE]`: run one page's blocks in FOLDER."""
    until = int(argv[2]) if len(argv) > 2 else None
    return run_page(Path(argv[0]).resolve(), Path(argv[1]).resolve(), until=until)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
