"""App files: the modules a Python file defines, loaded apart from the running code, and applied.

`headwater serve APP.py` loads an app file once; `headwater update APP.py --url URL` (through the
server's `POST /api/update`) and `headwater serve --reload` load a new version of it while the old
one serves. `apply_app` loads the new source as a fresh Python module, checks every module it
defines against what is deployed (`update(..., dry_run=True)`), and only then updates (or deploys)
them. Code that does not load, or any change the stored data cannot follow, leaves the running
code and its Python module exactly as they were.
"""

from __future__ import annotations

import sys
import traceback
import types
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Any

from headwater.cluster.mirrors import in_dependency_order
from headwater.engine.definitions import Module
from headwater.engine.runtime import Catalog, ModuleRuntime
from headwater.errors import DefinitionError

__all__ = ["APP_SOURCE_BYTES_MAX", "APP_TASKS_DEFAULT", "app_module_name", "apply_app", "find_modules", "load_source"]

APP_SOURCE_BYTES_MAX = 1024 * 1024  # an app file sent to a server for an update: 1 MiB
APP_TASKS_DEFAULT = 4  # tasks of a module `headwater serve` or an app update deploys, unless told otherwise
_TRACEBACK_LINES_MAX = 12  # of a failed load, in the error


def app_module_name(filename: str) -> str:
    """The Python module name an app file's code runs under: the same for every version of it, so a
    hop argument pickled by reference (`headwater_app_bank.Transfer`) resolves to the new code."""
    stem = PurePath(filename).stem or "app"
    return "headwater_app_" + "".join(c if c.isalnum() else "_" for c in stem)


def find_modules(namespace: dict[str, Any], where: str) -> list[Module]:
    found: list[Module] = []
    for value in namespace.values():
        if isinstance(value, Module) and all(value is not m for m in found):
            found.append(value)
    if not found:
        raise DefinitionError(f"{where} defines no headwater.Module at its top level; define one "
                              "(app = hw.Module('app')) or import yours there")
    return in_dependency_order(found)


def load_source(source: bytes | str, filename: str) -> tuple[list[Module], Callable[[], None]]:
    """Run an app file's source as a fresh Python module, and return the headwater modules it
    defines with a function that puts back the Python module it replaced (call it if the new
    code is not applied). Raises DefinitionError, changing nothing, if the code does not load."""
    size = len(source)
    if size > APP_SOURCE_BYTES_MAX:
        raise DefinitionError(f"the app file {filename!r} is {size:,} bytes, more than {APP_SOURCE_BYTES_MAX:,}; "
                              "move code into modules the app file imports")
    name = app_module_name(filename)
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        raise DefinitionError(f"the app file {filename!r} does not compile: {e}") from None
    previous = sys.modules.get(name)

    def restore() -> None:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)

    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module  # dataclasses and msgspec look the classes' module up while it runs
    try:
        exec(code, module.__dict__)
        return find_modules(module.__dict__, f"the app file {filename!r}"), restore
    except BaseException as e:
        restore()
        if isinstance(e, DefinitionError):
            raise
        if not isinstance(e, Exception):
            raise
        lines = traceback.format_exception(e)
        raise DefinitionError(f"the app file {filename!r} does not load: {type(e).__name__}: {e}\n"
                              + "".join(lines[-_TRACEBACK_LINES_MAX:])) from None


def apply_app(cluster: Any, source: bytes | str, *, filename: str = "app.py", delete: Sequence[str] = (),
              dry_run: bool = False, tasks: int = 1) -> list[dict[str, Any]]:
    """Update every deployed module `source` defines, and deploy (with `tasks`) the ones not deployed.

    All are checked before any is applied. `delete` entries are `"module/name"` (or `"name"`
    when the file defines one module), as `update(..., delete=...)` takes them per module. With
    `dry_run` nothing is applied. Returns, per module, what was (or would be) done:
    `{"module", "action": "updated" | "deployed", "version"}`."""
    modules, restore = load_source(source, filename)
    try:
        deletes = _deletes_per_module(delete, modules)
        deployed = {str(m) for m in cluster.modules()}
        report: list[dict[str, Any]] = []
        for module in modules:
            if module.name in deployed:
                info = cluster.update(module, delete=deletes.get(module.name, ()), dry_run=True)
                report.append({"module": module.name, "action": "updated", "version": info.version})
            else:
                missing = set(module.dependencies()) - deployed - {m.name for m in modules}
                if missing:
                    raise DefinitionError(f"module {module.name!r} mirrors module(s) {', '.join(sorted(missing))}, "
                                          "which are neither deployed nor in the app file; deploy them first")
                if deletes.get(module.name):
                    raise DefinitionError(f"delete={deletes[module.name]!r}: module {module.name!r} is not "
                                          "deployed, so there is nothing to delete")
                catalog = Catalog(module.name, tasks)
                catalog.assign(module)
                ModuleRuntime(module, catalog)  # its definition errors, before anything changes
                report.append({"module": module.name, "action": "deployed", "version": 1})
        if dry_run:
            restore()
            return report
        for module, row in zip(modules, report, strict=True):
            if row["action"] == "updated":
                row["version"] = cluster.update(module, delete=deletes.get(module.name, ())).version
            else:
                cluster.deploy(module, tasks=tasks)
        return report
    except BaseException:
        restore()
        raise


def _deletes_per_module(delete: Sequence[str], modules: list[Module]) -> dict[str, list[str]]:
    if isinstance(delete, str):
        raise DefinitionError(f"delete={delete!r} must be a list of names, e.g. ['bank/old_counts']")
    names = [m.name for m in modules]
    per_module: dict[str, list[str]] = {}
    for entry in delete:
        module, slash, name = str(entry).rpartition("/")
        if not slash:
            if len(modules) != 1:
                raise DefinitionError(f"delete={entry!r}: the app file defines modules {', '.join(names)}; "
                                      f"say whose, as 'module/{entry}'")
            module = modules[0].name
        if module not in names:
            raise DefinitionError(f"delete={entry!r}: the app file defines no module {module!r}; "
                                  f"it defines {', '.join(names)}")
        per_module.setdefault(module, []).append(name)
    return per_module
