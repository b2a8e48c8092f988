"""Import the Singer SDK's modules without its package __init__, until a name of it is asked.

`import singer_sdk` runs the package's __init__, which imports the whole SDK, the target
side too (`singer_sdk.target_base`, and joblib and numpy under it): about half of the
tap's import time and some 20 MB of each tap process's memory, for code a tap never runs.
When twenty clinics' taps start at once on one machine, that is what they wait for.

The tap imports what it uses by module (`singer_sdk.tap_base`, `singer_sdk.streams.rest`).
`defer_package_init` puts the `singer_sdk` package in place without running its __init__,
so those imports load only the modules they need. The first time anything asks the package
itself for a name that is not one of its modules (`from singer_sdk import Target`, the
SDK's test helpers, `singer_sdk.SQLTap`), the real __init__ runs, once, in the same module
object: from then on the package is exactly what it would have been. singer-sdk is pinned
(pyproject.toml); tests/test_lean_start.py checks both sides.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

PACKAGE = "singer_sdk"


def defer_package_init(package: str = PACKAGE) -> None:
    """Register `package` with its __init__ not yet run (nothing, once it is imported)."""
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed, or not a package: the normal import says what is wrong
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    lock = threading.Lock()

    def complete(name: str) -> Any:
        # A module of the package (`from singer_sdk import typing`): let the import system
        # load it, as it does for any package; dunders (`__path__`, ...) are as set.
        if name.startswith("__") and name != "__all__":
            raise AttributeError(name)
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            raise AttributeError(name)
        with lock:
            if module.__dict__.get("__getattr__") is complete:
                del module.__dict__["__getattr__"]
                loader.exec_module(module)  # the real __init__ (its own __getattr__ too)
        return getattr(module, name)

    complete.defers_init = True  # type: ignore[attr-defined]
    module.__dict__["__getattr__"] = complete
    sys.modules[package] = module


def completed(module: ModuleType) -> bool:
    """Whether a package registered by defer_package_init has run its __init__ since."""
    return not getattr(module.__dict__.get("__getattr__"), "defers_init", False)
