"""Lazy package attributes (PEP 562): a package's public names import their module when first used.

So ``import explorler_optim`` (and ``explorler_optim.rl``) costs nothing until a name is used,
and a torch-free module such as ``explorler_optim.rl.args`` imports without torch.
"""

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for ``exports`` (public name -> its submodule).

    Args:
        package: the package's ``__name__``.
        exports: each public name and the submodule (relative to ``package``) that defines it.

    Returns:
        ``(__getattr__, __dir__)``: a name in ``exports`` imports its submodule and is cached in
        the package's namespace; a submodule's name imports the submodule; any other name raises
        ``AttributeError``.

    Example:
        >>> getattr_, dir_ = lazy_exports("json", {"JSONDecoder": "decoder"})
        >>> getattr_("JSONDecoder").__name__, "JSONDecoder" in dir_()
        ('JSONDecoder', True)
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is not None:
            value = getattr(importlib.import_module(f".{module}", package), name)
        elif name in set(exports.values()):
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        vars(importlib.import_module(package))[name] = value  # the next lookup is a plain one
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *exports})

    return __getattr__, __dir__
