"""How to install an optional part of the package (an extra), said the same way everywhere.

The error messages and the docs take their install command from :func:`install_hint`, so that it
fits where the user stands: in a clone of the repository (an editable install, or none yet), the
editable form ``pip install -e ".[sb3]"`` run in the clone; from a package index, the package name
``pip install "explorler-optim[sb3]"``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGE", "install_hint"]

PACKAGE = "explorler-optim"  # the distribution name, once published
_CLONE = Path(__file__).resolve().parent.parent  # a clone's root holds pyproject.toml


def install_hint(extra: str, *, clone: Path | None = _CLONE) -> str:
    """The command that installs ``extra``, for the install the package runs from.

    Args:
        extra: the extra's name in ``pyproject.toml`` (``"sb3"``, ``"viz"``, ``"scripts"``, ...).
        clone: the directory the package was imported from; a clone (it holds ``pyproject.toml``)
            gets the editable form, anything else the package name.

    Example:
        >>> install_hint("sb3", clone=Path("/nowhere"))
        '`pip install "explorler-optim[sb3]"`'
        >>> install_hint("viz")  # from this clone  # doctest: +ELLIPSIS
        '`pip install -e ".[viz]"` (in ...)'
    """
    if clone is not None and (clone / "pyproject.toml").is_file():
        return f'`pip install -e ".[{extra}]"` (in {clone})'
    return f'`pip install "{PACKAGE}[{extra}]"`'
