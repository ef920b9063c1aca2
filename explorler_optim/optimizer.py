"""``ExploRLerOptimizer``: a torch optimizer plus an :class:`~explorler_optim.Explorer`."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from .explorer import BatchEvaluator, Evaluate, Explorer, ExploreResult
from .params import searchable, searched_params
from .search import SearchOperator
from .selection import SelectionRule

__all__ = ["BatchEvaluator", "ExploRLerOptimizer", "ExploreResult"]

# inner optimizer -> the wrapper that holds it; a second wrapper around the same inner optimizer
# would keep a second set of anchors and step the parameters twice per training step
_WRAPPERS: weakref.WeakKeyDictionary[Optimizer, weakref.ref] = weakref.WeakKeyDictionary()


def _forwarded(holder: str, name: str, doc: str, writable: bool = True) -> property:
    """A property read from (and, if ``writable``, written to) ``self.<holder>.<name>``, live.

    The wrapper's one way of forwarding state: to the inner optimizer (``holder="optimizer"``) or
    to the explorer (``holder="explorer"``).
    """

    def get(self):
        return getattr(getattr(self, holder), name)

    def set(self, value):
        setattr(getattr(self, holder), name, value)

    return property(get, set if writable else None, doc=doc)


def _forward_to_explorer(name: str, writable: bool = True, doc: str | None = None) -> property:
    """A setting or reading that lives in the explorer."""
    doc = doc or f"The explorer's ``{name}`` (see :class:`Explorer`)."
    return _forwarded("explorer", name, doc, writable)


def _forward_to_inner(name: str) -> property:
    """Part of ``torch.optim.Optimizer``'s instance state, which lives in the inner optimizer."""
    return _forwarded("optimizer", name, f"The inner optimizer's ``{name}``, live.")


class ExploRLerOptimizer(Optimizer):
    r"""Wraps a torch optimizer and adds ExploRLer's anchor-explore-commit cycle.

    Training through the wrapper is exactly training with the wrapped optimizer: :meth:`step`,
    :meth:`zero_grad`, ``param_groups``, ``state`` and ``defaults`` are the inner optimizer's own,
    forwarded live, so LR schedulers, hooks and ``load_state_dict`` on either object are seen by
    both. The cycle itself is an :class:`Explorer` (``self.explorer``):

    * :meth:`record` snapshots ``explore_params`` as an *anchor* (e.g. at the end of each PPO epoch);
    * :meth:`explore` runs ``search`` on the anchors, scores the candidates with ``evaluate`` (and the
      current parameters, the *incumbent*, when ``include_incumbent``), loads the best into the
      parameters if it beats the incumbent, and starts a new cycle.

    :meth:`state_dict` is the inner optimizer's own dict plus one key, ``"explorler"`` (anchors,
    counters, RNG state), so a plain optimizer of the inner kind loads it, and the wrapper loads a
    plain optimizer's dict. The wrapper pickles and deep-copies like any torch optimizer.

    The wrapper composes rather than subclasses: ``isinstance(opt, torch.optim.Optimizer)`` holds,
    ``isinstance(opt, torch.optim.Adam)`` does not (test ``opt.optimizer``). Hooks registered on the
    wrapper receive the wrapper; global step hooks
    (``torch.optim.optimizer.register_optimizer_step_pre_hook``) run once per step and receive the
    inner optimizer, the object that steps.

    Args:
        optimizer: the torch optimizer to wrap (e.g. ``torch.optim.Adam``).
        explore_params: parameters searched by :meth:`explore` (default: all dense floating-point
            and complex parameters of ``optimizer``); each must belong to ``optimizer``. A complex
            parameter is searched through its real view (:func:`torch.view_as_real`), as torch's
            optimizers update it.
        record_every: record an anchor automatically after every ``record_every``-th :meth:`step`;
            ``None`` records only when :meth:`record` is called.
        max_anchors: anchors kept, as :class:`Explorer`'s.
        search: the candidate generator, as :class:`Explorer`'s.
        include_incumbent: score the current parameters too, as :class:`Explorer`'s.
        reset_state: after a commit, clear the inner optimizer's state of ``explore_params``.
        seed: the search's random source, as :class:`Explorer`'s.
        on_invalid: ``"raise"`` or ``"skip"``, as :class:`Explorer`'s.
        anchor_dtype: dtype of the stored anchors, as :class:`Explorer`'s.
        anchor_device: device of the stored anchors and the search, as :class:`Explorer`'s.
        selection: the rule that picks a candidate, as :class:`Explorer`'s (default: the highest
            score; see :func:`~explorler_optim.selection.make_selection`).

    Example:
        >>> policy = torch.nn.Linear(4, 2)
        >>> opt = ExploRLerOptimizer(torch.optim.Adam(policy.parameters(), lr=1e-2), seed=0)
        >>> def evaluate():  # higher is better; e.g. the mean return of a few episodes
        ...     return -policy.weight.square().sum().item()
        >>> for epoch in range(10):
        ...     loss = policy(torch.randn(32, 4)).square().mean()
        ...     opt.zero_grad(); loss.backward(); opt.step()
        ...     opt.record()
        >>> result = opt.explore(evaluate)
        >>> result.num_candidates
        10
    """

    def __init__(
        self,
        optimizer: Optimizer,
        explore_params: Iterable[torch.nn.Parameter] | None = None,
        *,
        max_anchors: int = 10,
        record_every: int | None = None,
        search: SearchOperator | None = None,
        include_incumbent: bool = True,
        reset_state: bool = True,
        seed: int | None = None,
        on_invalid: str = "raise",
        anchor_dtype: torch.dtype | None = None,
        anchor_device: torch.device | str | None = None,
        selection: SelectionRule | None = None,
    ) -> None:
        # torch.optim.Optimizer.__init__ is deliberately not called: param_groups, state and
        # defaults are the inner optimizer's, forwarded live by the properties below
        _check_inner(optimizer)
        owned = [p for group in optimizer.param_groups for p in group["params"]]
        if explore_params is None:
            explore_params = [p for p in owned if searchable(p)]
            if not explore_params:
                raise ValueError(
                    "the inner optimizer holds no dense floating-point or complex parameters, so "
                    "there is nothing to search; wrap an optimizer of such parameters"
                )
        params = searched_params(explore_params, "explore_params")
        owned_ids = {id(p) for p in owned}
        for index, p in enumerate(params):
            if id(p) not in owned_ids:
                raise ValueError(
                    f"explore_params[{index}] (shape {tuple(p.shape)}) is not optimised by the inner "
                    "optimizer; pass only parameters that are in its param_groups"
                )
        if record_every is not None and (int(record_every) != record_every or record_every < 1):
            raise ValueError(f"record_every must be a positive integer or None, got {record_every!r}")
        explorer = Explorer(
            params,
            max_anchors=max_anchors,
            search=search,
            include_incumbent=include_incumbent,
            reset_state=reset_state,
            seed=seed,
            on_invalid=on_invalid,
            anchor_dtype=anchor_dtype,
            anchor_device=anchor_device,
            optimizer=optimizer,
            selection=selection,
        )
        self.optimizer = optimizer
        self.explorer = explorer
        self.record_every = None if record_every is None else int(record_every)
        self._steps = 0
        _WRAPPERS[optimizer] = weakref.ref(self)

    # ----------------------------------------------------------------- forwarded optimizer API
    param_groups = _forward_to_inner("param_groups")
    state = _forward_to_inner("state")
    defaults = _forward_to_inner("defaults")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the inner optimizer (it is not searched unless already explored)."""
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The inner optimizer's ``zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], float] | None = None):
        """The inner optimizer's ``step``; records an anchor after every ``record_every``-th call."""
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self._steps += 1
        if self.record_every is not None and self._steps % self.record_every == 0:
            self.record()
        return loss

    # The rest of a torch optimizer's instance state (what `Optimizer.__init__` would have set) is
    # the inner optimizer's too: its hook dictionaries hold the hooks registered below.
    _optimizer_step_pre_hooks = _forward_to_inner("_optimizer_step_pre_hooks")
    _optimizer_step_post_hooks = _forward_to_inner("_optimizer_step_post_hooks")
    _optimizer_state_dict_pre_hooks = _forward_to_inner("_optimizer_state_dict_pre_hooks")
    _optimizer_state_dict_post_hooks = _forward_to_inner("_optimizer_state_dict_post_hooks")
    _optimizer_load_state_dict_pre_hooks = _forward_to_inner("_optimizer_load_state_dict_pre_hooks")
    _optimizer_load_state_dict_post_hooks = _forward_to_inner("_optimizer_load_state_dict_post_hooks")
    _warned_capturable_if_run_uncaptured = _forward_to_inner("_warned_capturable_if_run_uncaptured")
    _zero_grad_profile_name = _forward_to_inner("_zero_grad_profile_name")

    # Hooks are registered on the inner optimizer, which runs them; they receive this wrapper as
    # their `optimizer` argument, as they would on a plain optimizer.
    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        """Run ``hook(optimizer, args, kwargs)`` before every step (see ``torch.optim.Optimizer``)."""
        return self.optimizer.register_step_pre_hook(lambda _, args, kwargs: hook(self, args, kwargs))

    def register_step_post_hook(self, hook: Callable) -> RemovableHandle:
        """Run ``hook(optimizer, args, kwargs)`` after every step (see ``torch.optim.Optimizer``)."""
        return self.optimizer.register_step_post_hook(lambda _, args, kwargs: hook(self, args, kwargs))

    def register_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Run ``hook(optimizer)`` before the inner optimizer's ``state_dict``."""
        return self.optimizer.register_state_dict_pre_hook(lambda _: hook(self), prepend=prepend)

    def register_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Run ``hook(optimizer, state_dict)`` on the inner optimizer's part of :meth:`state_dict`."""
        return self.optimizer.register_state_dict_post_hook(lambda _, sd: hook(self, sd), prepend=prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Run ``hook(optimizer, state_dict)`` before the inner optimizer loads its part."""
        return self.optimizer.register_load_state_dict_pre_hook(lambda _, sd: hook(self, sd), prepend=prepend)

    def register_load_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Run ``hook(optimizer)`` after the inner optimizer loaded its part."""
        return self.optimizer.register_load_state_dict_post_hook(lambda _: hook(self), prepend=prepend)

    # ----------------------------------------------------------------- the explorer
    explore_params = _forward_to_explorer("params", writable=False)
    max_anchors = _forward_to_explorer("max_anchors")
    search = _forward_to_explorer("search")
    selection = _forward_to_explorer("selection")
    include_incumbent = _forward_to_explorer("include_incumbent")
    reset_state = _forward_to_explorer("reset_state")
    on_invalid = _forward_to_explorer("on_invalid")
    anchor_dtype = _forward_to_explorer("anchor_dtype")
    anchor_device = _forward_to_explorer("anchor_device")
    last_result = _forward_to_explorer("last_result", writable=False)
    num_anchors = _forward_to_explorer("num_anchors", writable=False)
    num_params = _forward_to_explorer(
        "num_params",
        writable=False,
        doc="Number of real values searched (``P``; a complex value counts as two).",
    )

    def record(self) -> None:
        """Snapshot ``explore_params`` as an anchor (oldest dropped beyond ``max_anchors``)."""
        self.explorer.record()

    def clear_anchors(self) -> None:
        """Drop all anchors and start a new cycle."""
        self.explorer.clear_anchors()

    def anchors(self) -> Tensor:
        """The anchors as a ``(num_anchors, P)`` tensor."""
        return self.explorer.anchors()

    def explore(self, evaluate: Evaluate) -> ExploreResult:
        """Search between the anchors, score candidates, commit the best; see :meth:`Explorer.explore`."""
        return self.explorer.explore(evaluate)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict plus the key ``"explorler"``: anchors, counters, RNG state.

        A plain optimizer of the inner kind loads it (the extra key is ignored), and
        ``torch.load(weights_only=True)`` reads it.
        """
        state_dict = self.optimizer.state_dict()
        return {**state_dict, "explorler": {**self.explorer.state_dict(), "steps": self._steps}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`, or from a plain optimizer's (the anchors are then kept).

        The dict of earlier releases, ``{"optimizer": ..., "explorler": ...}``, loads too.
        """
        if "explorler" in state_dict and "optimizer" in state_dict and "param_groups" not in state_dict:
            inner, explorer = state_dict["optimizer"], state_dict["explorler"]
        elif "state" in state_dict and "param_groups" in state_dict:
            inner = {key: value for key, value in state_dict.items() if key != "explorler"}
            explorer = state_dict.get("explorler")
        else:
            raise ValueError(
                "not an ExploRLerOptimizer or torch optimizer state dict: expected keys 'state' and "
                f"'param_groups' (and 'explorler'), got {sorted(state_dict)}"
            )
        if explorer is not None:
            self.explorer._check_state(explorer)  # fail before anything is loaded
            if "steps" not in explorer:
                raise ValueError(
                    "the state dict's 'explorler' entry lacks 'steps': pass what "
                    "ExploRLerOptimizer.state_dict() returned (an Explorer's own state dict loads "
                    "with optimizer.explorer.load_state_dict)"
                )
        self.optimizer.load_state_dict(inner)
        if explorer is not None:
            self.explorer.load_state_dict(explorer)
            self._steps = int(explorer["steps"])

    def __getstate__(self) -> dict[str, Any]:
        # an instance attribute `step` is a patch from someone else (an LR scheduler's counter);
        # a plain torch optimizer does not pickle it either
        return {key: value for key, value in self.__dict__.items() if key != "step"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _WRAPPERS[self.optimizer] = weakref.ref(self)

    def __repr__(self) -> str:
        inner = repr(self.optimizer).replace("\n", "\n    ")
        explorer = self.explorer
        return (
            f"{type(self).__name__}(\n"
            f"  optimizer={inner},\n"
            f"  search={explorer.search!r},\n"
            f"  selection={explorer.selection!r},\n"
            f"  explore_params={len(explorer.params)} tensors ({explorer.num_params:,} values), "
            f"max_anchors={explorer.max_anchors}, record_every={self.record_every}, "
            f"include_incumbent={explorer.include_incumbent}, reset_state={explorer.reset_state}, "
            f"on_invalid={explorer.on_invalid!r}, anchor_dtype={explorer.anchor_dtype}, "
            f"anchors={explorer.num_anchors}, cycles={explorer.cycles}\n)"
        )


def _check_inner(optimizer: Any) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}; "
            "build it first, e.g. ExploRLerOptimizer(torch.optim.Adam(model.parameters()))"
        )
    if isinstance(optimizer, ExploRLerOptimizer):
        raise TypeError("optimizer is already an ExploRLerOptimizer; wrap the inner optimizer once")
    holder = _WRAPPERS.get(optimizer)
    if holder is not None and holder() is not None:
        raise ValueError(
            f"this {type(optimizer).__name__} is already wrapped by another ExploRLerOptimizer; use that "
            "one (its .explorer holds the anchors), or wrap a fresh optimizer"
        )
