"""Which examples `sagabox demo` plays, and the package they are imported from.

Kept apart from `sagabox.demo` so the command line can list the choices without importing the
demo's simulated clock (freezegun, the `demo` extra).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = ("loan_request", "checkout", "payment", "order")

#: The pip line that brings in what the demo needs beyond the base install.
DEMO_EXTRA = "pip install 'sagabox[demo]'"

_CHECKOUT = Path(__file__).resolve().parent.parent


def examples_package() -> str:
    """`examples` in a source checkout (where the tests import them by that name too), else
    `sagabox.examples`, the same folder as the wheel ships it."""
    source = _CHECKOUT / "examples"
    if (_CHECKOUT / "pyproject.toml").is_file() and (source / "__init__.py").is_file():
        if str(_CHECKOUT) not in sys.path:
            sys.path.insert(0, str(_CHECKOUT))
        return "examples"
    return "sagabox.examples"


def load_scenario(name: str) -> ModuleType:
    """Import the `scenario` module of example `name`."""
    if name not in EXAMPLES:
        raise ValueError(f"no example named {name!r}; choose one of: {', '.join(EXAMPLES)}")
    return importlib.import_module(f"{examples_package()}.{name}.scenario")
