"""Schedulers from outside the package: Python entry points in the `testbed.schedulers` group
(found once, on the first lookup) and modules named by `--plugin` or a campaign's `plugins:`.

An entry point may name a module (importing it calls `testbed.schedulers.register`) or a
scheduler function (registered under the entry point's name, its docstring's first line as
the summary, its `kind` attribute or "streams" as the workload kind it plans)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from testbed.errors import InputError

GROUP = "testbed.schedulers"
_found = False


def load_entry_points(register) -> None:
    """Load every installed plug-in once; a broken one is an error naming it, not a crash."""
    global _found
    if _found:
        return
    _found = True
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a third party's import error: say whose
            raise InputError(f"scheduler plug-in {ep.name!r} ({ep.value}, entry point group "
                             f"{GROUP}) failed to load: {type(e).__name__}: {e}; fix or "
                             "uninstall that package") from None
        if callable(obj):
            summary = (obj.__doc__ or ep.value).strip().splitlines()[0]
            register(ep.name, obj, summary, kind=getattr(obj, "kind", "streams"))


def load_module(spec: str, base: Path | None = None) -> None:
    """Import a plug-in module by dotted name, or a .py file (relative to `base`, e.g. the
    campaign file's directory). Importing it registers its schedulers."""
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec) if base is None or Path(spec).is_absolute() else base / spec
        if not path.is_file():
            raise InputError(f"plug-in {spec!r}: no such file {path}; give a module name "
                             "importable from PYTHONPATH or the path of a .py file")
        name = f"testbed_plugin_{path.stem}"
        if name in sys.modules:
            return
        loader = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        try:
            loader.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise InputError(f"plug-in {path}: {type(e).__name__}: {e}") from None
        return
    try:
        importlib.import_module(spec)
    except ImportError as e:
        raise InputError(f"plug-in {spec!r}: {e}; install its package or add its directory "
                         "to PYTHONPATH (or give the path of a .py file)") from None
