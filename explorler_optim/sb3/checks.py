"""What ``ExploRLerCallback`` checks and decides when ``learn()`` starts, before any env step.

The algorithm and its policy, the observation space, the evaluation env (it is built once: a
mistyped id or spaces that differ from the training env's fail here, not at the first search), the
longest episode a candidate can play (the budget rule's bound), the schedule ``explore_every="auto"``
resolves to, and how many policies a search scores.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .actor import check_policy

__all__ = [
    "EvalEnv",
    "Schedule",
    "anchor_mode",
    "check_algorithm",
    "check_arguments",
    "check_observation_space",
    "eval_env_for",
    "positive_int",
    "resolve_schedule",
    "warn_at_learn_start",
    "warn_about_anchors",
    "warn_at_user",
    "warn_if_learn_searches_nothing",
    "warn_if_steps_were_reset",
]

# explore_every="auto": training env steps between searches, the scripts' defaults (20 PPO iterations
# of 2,048 steps; the paper's 10 TRPO iterations of 2,048), whatever the rollout length
AUTO_STEPS_PER_SEARCH = {"epoch": 20 * 2048, "iteration": 10 * 2048}


def check_algorithm(model: Any) -> None:
    """Raise if ``model`` is not an algorithm the callback supports, saying which ones are.

    Supported: on-policy algorithms whose policy is a plain ``ActorCriticPolicy`` with Box or
    Discrete actions (SB3 PPO and A2C, sb3-contrib TRPO).

    Args:
        model: the SB3 algorithm ``learn()`` runs.

    Raises:
        TypeError: an off-policy algorithm, a recurrent one, ``MaskablePPO`` (candidates are scored
            without action masks), or a policy with nothing to search.

    Example:
        >>> from stable_baselines3 import SAC
        >>> check_algorithm(SAC("MlpPolicy", "Pendulum-v1", device="cpu"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: ExploRLerCallback supports on-policy algorithms ...; SAC is off-policy
    """
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    name = type(model).__name__
    supported = (
        "ExploRLerCallback supports on-policy algorithms with an ActorCriticPolicy "
        "(PPO, A2C, sb3-contrib TRPO)"
    )
    if not isinstance(model, OnPolicyAlgorithm):
        raise TypeError(f"{supported}; {name} is off-policy")
    policy_name = type(model.policy).__name__
    if "Maskable" in policy_name or "Maskable" in name:
        raise TypeError(
            f"{supported}; {name} uses action masks, which the candidate evaluator does not apply "
            "(candidates would be scored on actions the training env forbids)"
        )
    if hasattr(model.policy, "lstm_actor"):
        raise TypeError(f"{supported}; {name} is recurrent and candidates are scored by a stateless actor")
    try:
        check_policy(model.policy)
    except TypeError as error:
        raise TypeError(f"{supported}; {error}") from None
    from .actor import sb3_actor_params

    if not any(p.requires_grad for p in sb3_actor_params(model.policy)):
        raise TypeError(
            f"{supported}; {policy_name} has no trainable actor parameters to search (the actor's "
            "layers are frozen or empty): unfreeze them or leave the callback out"
        )


def check_observation_space(space: Any) -> None:
    """Raise unless ``space`` is a Box (the candidate evaluator feeds one array per step).

    Args:
        space: the training env's observation space.

    Raises:
        TypeError: a Dict, Tuple, Discrete or other observation space, with what to do instead.

    Example:
        >>> from gymnasium import spaces
        >>> check_observation_space(spaces.Dict({"a": spaces.Box(-1, 1, (2,))}))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: ExploRLerCallback scores candidates on Box observations; this env's are Dict: ...
    """
    from gymnasium import spaces

    if not isinstance(space, spaces.Box):
        raise TypeError(
            f"ExploRLerCallback scores candidates on Box observations; this env's are "
            f"{type(space).__name__}: wrap the training and evaluation envs in "
            "gymnasium.wrappers.FlattenObservation"
        )


def warn_at_user(message: str) -> None:
    """``warnings.warn`` at the first frame outside explorler_optim, SB3, sb3-contrib and rl-zoo3."""
    internal = []
    for name in ("explorler_optim", "stable_baselines3", "sb3_contrib", "rl_zoo3"):
        module = sys.modules.get(name)
        if module is not None and module.__file__:
            internal.append(os.path.dirname(os.path.abspath(module.__file__)) + os.sep)
    level, frame = 1, sys._getframe(0)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(tuple(internal)):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


@dataclass(frozen=True)
class EvalEnv:
    """The evaluation env's factory and the longest episode it plays (``None``: no time limit)."""

    factory: Callable[[], Any]
    episode_cap: int | None


def _recreatable_spec(spec: Any) -> Any:
    """``spec`` without the wrappers gymnasium cannot recreate (SB3's ``Monitor`` and the like)."""
    kept: list[Any] = []
    user_dropped: list[str] = []
    for wrapper in spec.additional_wrappers:
        if wrapper.entry_point.startswith(("stable_baselines3.", "sb3_contrib.")):
            continue  # SB3's Monitor: training statistics, nothing the evaluation needs
        if wrapper.kwargs is None:  # not a RecordConstructorArgs wrapper: gymnasium cannot rebuild it
            user_dropped.append(wrapper.name)
        else:
            kept.append(wrapper)
    if user_dropped:
        warn_at_user(
            f"ExploRLerCallback: the evaluation env is rebuilt from the training env's spec without "
            f"{', '.join(user_dropped)} (gymnasium cannot recreate it); if scoring needs it, pass "
            "eval_env=<a zero-argument factory>"
        )
    return dataclasses.replace(spec, additional_wrappers=tuple(kept))


def _default_factory(model: Any) -> Callable[[], Any]:
    import gymnasium as gym

    env = model.get_env()
    spec = None if env is None else env.get_attr("spec", [0])[0]
    if spec is None:
        raise ValueError(
            "ExploRLerCallback: the training env has no gymnasium spec to rebuild an evaluation env "
            "from; pass eval_env='EnvId-v0' or a zero-argument factory of a raw env"
        )
    return functools.partial(gym.make, _recreatable_spec(spec))


def eval_env_for(model: Any, eval_env: Any, eval_env_kwargs: dict[str, Any]) -> EvalEnv:
    """Build the evaluation env once and check it against ``model``'s training env.

    Args:
        model: the SB3 algorithm.
        eval_env: an env id, a zero-argument factory, or ``None`` (the training env's spec without
            SB3's ``Monitor`` and the wrappers gymnasium cannot recreate).
        eval_env_kwargs: ``gym.make`` keyword arguments when ``eval_env`` is an id.

    Returns:
        The factory the candidate evaluator uses, and the env's ``max_episode_steps``.

    Raises:
        ValueError: the env cannot be made (a mistyped id: the cause is attached), or its observation
            or action space differs from the training env's.

    Example:
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu")
        >>> eval_env_for(model, None, {}).episode_cap
        200
    """
    import gymnasium as gym

    if eval_env is None:
        factory = _default_factory(model)
        where = "the evaluation env rebuilt from the training env's spec"
    elif isinstance(eval_env, str):
        factory = functools.partial(gym.make, eval_env, **eval_env_kwargs)
        where = f"eval_env={eval_env!r}"
    else:
        factory, where = eval_env, "the eval_env factory's env"
    try:
        env = factory()
    except Exception as error:
        raise ValueError(
            f"ExploRLerCallback: {where} could not be made ({type(error).__name__}: {error}); check "
            "the id (gymnasium.pprint_registry() lists them) or pass a zero-argument factory"
        ) from error
    try:
        for kind in ("observation_space", "action_space"):
            theirs, ours = getattr(env, kind), getattr(model, kind)
            if theirs != ours:
                raise ValueError(
                    f"ExploRLerCallback: {where} has {kind} {theirs} but the training env has {ours}; "
                    "pass eval_env= an env of the same task (raw: VecNormalize's statistics are applied)"
                )
        spec = getattr(env, "spec", None)
        cap = getattr(spec, "max_episode_steps", None)
    finally:
        env.close()
    return EvalEnv(factory, int(cap) if cap else None)


@dataclass(frozen=True)
class Schedule:
    """Iterations per search, and (iteration anchors) iterations per anchor."""

    explore_every: int
    anchor_stride: int


def resolve_schedule(explore_every: int | str, max_anchors: int, mode: str, rollout: int) -> Schedule:
    """The search schedule; ``"auto"`` keeps the training env steps between searches fixed.

    ``"auto"``: a search every ``AUTO_STEPS_PER_SEARCH[mode]`` training env steps (epoch anchors,
    PPO: 40,960, 20 iterations of 2,048; iteration anchors, TRPO and A2C: 20,480, 10 iterations of
    2,048, or 4,096 of A2C's 5 steps). With iteration anchors it also spaces them so that a cycle
    records at most ``max_anchors``: A2C's anchors span its cycle instead of its last 50 steps.

    Args:
        explore_every: iterations per search, or ``"auto"``.
        max_anchors: anchors a search uses.
        mode: ``"epoch"`` or ``"iteration"`` anchors.
        rollout: training env steps per iteration (``n_steps * n_envs``).

    Returns:
        ``Schedule(explore_every, anchor_stride)``.

    Example:
        >>> resolve_schedule("auto", 10, "iteration", 5)
        Schedule(explore_every=4096, anchor_stride=410)
        >>> resolve_schedule("auto", 10, "epoch", 2048)
        Schedule(explore_every=20, anchor_stride=1)
    """
    if explore_every != "auto":
        return Schedule(int(explore_every), 1)
    every = max(1, round(AUTO_STEPS_PER_SEARCH[mode] / rollout))
    stride = max(1, math.ceil(every / max_anchors)) if mode == "iteration" else 1
    return Schedule(every, stride)


def rollout_steps(model: Any) -> int:
    """Training env steps per iteration: ``n_steps * n_envs``."""
    return int(model.n_steps) * int(model.n_envs)


def plain_end(start: int, total: int, rollout: int) -> int:
    """Where plain SB3 ends ``learn()``: whole rollouts from ``start`` until ``total`` is reached.

    Example:
        >>> plain_end(0, 10_000, 2048)
        10240
    """
    return start + math.ceil(max(total - start, 0) / rollout) * rollout


def warn_if_learn_searches_nothing(
    *,
    start: int,
    total: int,
    rollout: int,
    iterations: int,
    every: int,
    pending: bool,
    explore_at_end: bool,
    algorithm: str = "the algorithm",
) -> bool:
    """Warn (and return ``True``) when no search can run in this ``learn()`` call, saying what to change.

    A search runs at the rollout start after every ``every``-th iteration (after the last one of the
    call only with ``explore_at_end``), or at once if one is already due (``pending``). Budget and
    anchor rules can still skip a search that is due; they are said where they apply.

    Args:
        start: ``model.num_timesteps`` when ``learn()`` starts.
        total: where plain SB3 stops (``learn``'s ``total_timesteps``, counted from 0).
        rollout: training env steps per iteration.
        iterations: iterations the callback has seen before this call.
        every: iterations per search (the resolved schedule).
        pending: a search is already due.
        explore_at_end: the search due after the call's last iteration runs at its end.
        algorithm: the algorithm's name, for the message.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_learn_searches_nothing(start=0, total=4096, rollout=2048, iterations=0,
        ...         every=50, pending=False, explore_at_end=True, algorithm="PPO")
        True
        >>> print(caught[0].message)  # doctest: +ELLIPSIS
        ExploRLerCallback: this learn() runs 2 iteration(s) of 2,048 steps ... learn(102,400) ...
    """
    if pending:
        return False
    runs = math.ceil(max(total - start, 0) / rollout)
    first_due = every - iterations % every  # iterations into this call until a search is due
    last_searchable = runs if explore_at_end else runs - 1  # a search runs at the NEXT rollout start
    if first_due <= last_searchable:
        return False
    needed = first_due + (0 if explore_at_end else 1)
    # any `last_searchable` consecutive iterations hold a multiple of every N <= last_searchable
    fewer = f", or pass explore_every={last_searchable}" if last_searchable >= 1 else ""
    fewer += " or less" if last_searchable > 1 else ""
    warn_at_user(
        f"ExploRLerCallback: this learn() runs {runs} iteration(s) of {rollout:,} steps and the next "
        f"search is due after {first_due} (explore_every={every} iterations), so none runs: this call "
        f"is plain {algorithm}. For a search, call learn({needed * rollout:,}) or more{fewer}"
    )
    return True


def warn_if_steps_were_reset(num_timesteps: int, iterations: int, num_anchors: int, searches: int) -> bool:
    """Warn (and return ``True``) when ``learn()`` restarted the step counter of a run the callback
    carries state for (SB3's default ``reset_num_timesteps=True`` on a second call or a loaded model).

    Args:
        num_timesteps: ``model.num_timesteps`` when ``learn()`` starts.
        iterations: iterations the callback has seen before.
        num_anchors: anchors it holds.
        searches: searches it has run.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_steps_were_reset(0, iterations=4, num_anchors=8, searches=1)
        True
        >>> print(caught[0].message)  # doctest: +ELLIPSIS
        ExploRLerCallback: learn() restarted model.num_timesteps at 0 ...reset_num_timesteps=False)...
    """
    if num_timesteps != 0 or not (iterations or num_anchors or searches):
        return False
    warn_at_user(
        f"ExploRLerCallback: learn() restarted model.num_timesteps at 0 (reset_num_timesteps=True, "
        f"SB3's default) but the callback carries {iterations} iteration(s), {num_anchors} anchor(s) "
        f"and {searches} search(es) from before, which continue while the step count and the budget "
        "start over: to continue the run pass learn(..., reset_num_timesteps=False); to start a new "
        "one pass a new ExploRLerCallback()"
    )
    return True


def warn_at_learn_start(callback: Any, model: Any, rollout: int) -> None:
    """The ``ExploRLerCallback`` warnings of a ``learn()`` call that would otherwise be silent:
    :func:`warn_if_steps_were_reset`, then :func:`warn_if_learn_searches_nothing`.

    Args:
        callback: the ``ExploRLerCallback`` (its schedule resolved for this call).
        model: the SB3 algorithm.
        rollout: training env steps per iteration.
    """
    anchors = 0 if callback.explorer is None else callback.explorer.num_anchors
    warn_if_steps_were_reset(int(model.num_timesteps), callback.iterations, anchors, callback.searches)
    warn_if_learn_searches_nothing(
        start=int(model.num_timesteps),
        total=int(callback.locals.get("total_timesteps", 0)),
        rollout=rollout,
        iterations=callback.iterations,
        every=callback.schedule.explore_every,
        pending=callback._pending,
        explore_at_end=callback.explore_at_end,
        algorithm=type(model).__name__,
    )


def positive_int(name: str, value: Any, auto: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive int (or ``"auto"`` where ``auto``).

    Example:
        >>> positive_int("max_anchors", 0)
        Traceback (most recent call last):
        ...
        ValueError: ExploRLerCallback: max_anchors must be a positive integer, got 0
    """
    if auto and value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        also = " or 'auto'" if auto else ""
        raise ValueError(f"ExploRLerCallback: {name} must be a positive integer{also}, got {value!r}")


def check_arguments(
    eval_env: Any, eval_env_kwargs: Any, explore_every: Any, anchor_every: Any, on_invalid: Any
) -> None:
    """The callback's constructor arguments that need no model: a clear error for a wrong one."""
    if eval_env is not None and not isinstance(eval_env, str) and not callable(eval_env):
        raise TypeError(
            f"eval_env must be an env id (e.g. 'Hopper-v5'), a zero-argument env factory or None, "
            f"got {type(eval_env).__name__}"
        )
    if eval_env_kwargs and not isinstance(eval_env, str):
        raise ValueError("eval_env_kwargs applies to an env id; put the arguments in your factory")
    positive_int("explore_every", explore_every, auto=True)
    if anchor_every not in ("auto", "epoch", "iteration"):
        raise ValueError(f"anchor_every must be 'auto', 'epoch' or 'iteration', got {anchor_every!r}")
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")


def anchor_mode(anchor_every: str, model: Any) -> str:
    """``anchor_every`` resolved: ``"auto"`` is an anchor per epoch for algorithms with epochs
    (PPO: ``n_epochs`` and ``batch_size``), else one per iteration (A2C, TRPO)."""
    if anchor_every != "auto":
        return anchor_every
    epochs = hasattr(model, "n_epochs") and hasattr(model, "batch_size")
    return "epoch" if epochs else "iteration"


def warn_about_anchors(schedule: Schedule, mode: str, model: Any, max_anchors: int) -> None:
    """Warn when a cycle records more anchors than are searched, or fewer than a search needs."""
    every, stride = schedule.explore_every, schedule.anchor_stride
    if mode == "epoch":
        per_cycle, searched_span = every * model.n_epochs, model.n_epochs
        unit = f"n_epochs={model.n_epochs} per iteration"
    else:
        per_cycle = searched_span = every // stride + int(every % stride != 0)
        unit = "one per iteration" if stride == 1 else f"one per {stride} iterations"
    if searched_span > max_anchors:
        warn_at_user(
            f"ExploRLerCallback: a cycle of explore_every={every} iterations records {per_cycle} "
            f"anchors ({unit}) but max_anchors={max_anchors}: only the last {max_anchors} "
            f"are searched (raise max_anchors to {searched_span}"
            + (" or lower explore_every)" if mode == "iteration" else ")")
        )
    elif per_cycle < 2:
        warn_at_user(
            f"ExploRLerCallback: a cycle of explore_every={every} iteration(s) records {per_cycle} "
            "anchor; a search needs 2, so each runs once 2 anchors have accumulated (raise explore_every)"
        )
