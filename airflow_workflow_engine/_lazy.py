"""Lazy package attributes (PEP 562): a package names what it exports and the module each
lives in; the module is imported on first access, so importing the package (in a DAG file,
say) pays only for what is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: MutableMapping[str, Any],
    exports: Mapping[str, str],
    *,
    relative: bool = False,
    public: Sequence[str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package.

    ``namespace`` is the package's ``globals()``; ``exports`` maps each name to its module
    (with ``relative=True``, a submodule path such as ``"definitions.stage"``). A value is
    cached in the package once loaded, so later lookups skip ``__getattr__``. A name that is
    also a direct submodule of the package (``"commands": "commands"``) gives that module's
    attribute of the same name, or the module itself when it has none; it is not cached, as
    the import system sets that package attribute to the submodule. ``dir()`` lists
    ``public`` when given, else everything the package has or exports.
    """
    package = str(namespace["__name__"])

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        path = f"{package}.{module}" if relative else module
        target = importlib.import_module(path)
        if path == f"{package}.{name}":
            return getattr(target, name, target)
        value = getattr(target, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(public) if public is not None else sorted({*namespace, *exports})

    return __getattr__, __dir__
