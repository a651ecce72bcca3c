"""Checks that `outbox`, `sagas` and `relay` are the packages installed with sagabox.

sagabox ships them as top-level packages beside `sagabox` itself. A service's own top-level
package of the same name, or an unrelated distribution of that name, would shadow one of them
silently and fail later with a puzzling `cannot import name`; this makes the clash one error.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: The top-level packages that come in sagabox's distribution, beside `sagabox`.
SIBLINGS = ("outbox", "sagas", "relay")


class ShadowedPackage(ImportError):
    """A package sagabox needs is found somewhere else than beside sagabox."""


def _location(name: str) -> Path | None:
    """The folder `import name` would load, without importing it (None if not found)."""
    try:
        spec = importlib.util.find_spec(name)
    except ValueError:  # already imported, without a spec (e.g. made up by a test)
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
        origin = Path(spec.origin)
        return origin.parent if origin.name == "__init__.py" else origin
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else None


def check_siblings(root: Path) -> None:
    """Raise `ShadowedPackage` unless each of `SIBLINGS` is the folder of that name in `root`."""
    for name in SIBLINGS:
        expected = root / name
        found = _location(name)
        if found is not None and found.resolve() == expected.resolve():
            continue
        where = "is not importable" if found is None else f"is imported from {found}"
        raise ShadowedPackage(
            f"sagabox needs its own {name!r} package, at {expected}, but {name!r} {where}. "
            f"Another package named {name!r} shadows it: rename your service's top-level "
            f"{name!r} package (e.g. myservice/{name}/), or uninstall the distribution that "
            f"installed it (`pip show -f` tells which), or reinstall sagabox."
        )
