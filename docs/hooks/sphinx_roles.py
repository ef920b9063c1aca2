"""Griffe extension: the docstrings' Sphinx roles become cross-references on the docs site.

It also reads an ``Example:`` section as griffe's ``Examples:``, so its doctests render as code.

The docstrings use ``:class:`Explorer```, ``:meth:`record``` and the like (they read well in
``help()`` and in the source). Here each role becomes an autorefs link to the page that documents
its target, so that ``mkdocs build --strict`` fails on a reference that does not resolve; a target
this extension cannot place (another library's name) is shown as code.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import griffe

from explorler_optim.extras import install_hint

EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)  # griffe's Google parser knows "Examples:"
ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc):`~?([^`]+)`")
# the modules the API reference renders, each under its own path
DOCUMENTED = (
    "explorler_optim",
    "explorler_optim.search",
    "explorler_optim.rl",
    "explorler_optim.sb3",
    "explorler_optim.audit",
    "explorler_optim.checkpoint",
    "explorler_optim.subspace",
    "explorler_optim.viz",
)


CORE = ("ExploRLerOptimizer", "Explorer", "ExploreResult", "BatchEvaluator")


def _public_names() -> dict[str, str]:
    """Short name -> the path the reference renders it under (the first module that exports it)."""
    # the package's own page renders only these; its other exports are rendered in their modules
    names = {name: f"explorler_optim.{name}" for name in CORE}
    for module_name in DOCUMENTED[1:]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:  # a skipped module would leave its cross-references unresolved
            raise ImportError(
                f"the docs build imports {module_name} and it failed ({error}); install the docs "
                f"extra, which has what the documented modules import: {install_hint('docs')}"
            ) from error
        for name in getattr(module, "__all__", ()):
            names.setdefault(name, f"{module_name}.{name}")
    return names


class SphinxRoles(griffe.Extension):
    def __init__(self) -> None:
        super().__init__()
        self.names = _public_names()

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        owner = obj if obj.is_class else None
        if owner is None and obj.parent is not None and obj.parent.is_class:
            owner = obj.parent  # a method's or attribute's own class
        value = EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
        obj.docstring.value = ROLE.sub(lambda match: self._link(match.group(1), owner), value)

    def _link(self, target: str, owner: griffe.Object | None) -> str:
        target = target.removesuffix("()")
        shown = target.rsplit(".", 1)[-1] if target.startswith("explorler_optim.") else target
        head, _, rest = target.partition(".")
        if target.startswith("explorler_optim."):
            path = target
        elif head in self.names:
            path = self.names[head] + (f".{rest}" if rest else "")
        elif owner is not None and "." not in target:
            path = f"{owner.path}.{target}"
        else:
            return f"`{shown}`"
        return f"[`{shown}`][{path}]"
