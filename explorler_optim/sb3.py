"""ExploRLer for Stable-Baselines3 on-policy algorithms: one callback, no optimizer swap.

:class:`ExploRLerCallback` records anchors while SB3 trains (an anchor per PPO epoch, one per
TRPO/A2C iteration), runs the Empty-Space Search every ``explore_every`` iterations right after that
iteration's ``train()``, scores the candidates on separate environments with the training
``VecNormalize`` statistics frozen, and moves the policy to the best one. ``policy.optimizer`` is not
replaced, so ``model.save`` / ``PPO.load`` work unchanged.

Needs ``pip install "explorler-optim[sb3]"`` (stable-baselines3, and sb3-contrib for TRPO). Importing
``explorler_optim`` itself never imports SB3.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

try:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.preprocessing import preprocess_obs
    from stable_baselines3.common.torch_layers import FlattenExtractor
except ImportError as error:  # pragma: no cover - exercised only without SB3
    raise ImportError(
        'explorler_optim.sb3 needs stable-baselines3: `pip install "explorler-optim[sb3]"` '
        "(or `pip install stable-baselines3 sb3-contrib`)"
    ) from error

from .explorer import Explorer, ExploreResult
from .rl import ObsNormalizer, PolicyEvaluator
from .search import CheckpointAverage, EmptySpaceSearch, GaussianSearch, RandomWalkSearch, SearchOperator

__all__ = ["ExploRLerCallback", "SB3Actor", "sb3_actor", "sb3_actor_params"]

_STATE_VERSION = 1
_SEARCHES: dict[str, type[SearchOperator]] = {
    "esa": EmptySpaceSearch,
    "random-walk": RandomWalkSearch,
    "checkpoint-average": CheckpointAverage,
    "gaussian": GaussianSearch,
}


# --------------------------------------------------------------------------------------------
# The deterministic actor of an SB3 policy
# --------------------------------------------------------------------------------------------


def _check_policy(policy: Any) -> ActorCriticPolicy:
    if not isinstance(policy, ActorCriticPolicy):
        raise TypeError(
            f"expected an SB3 ActorCriticPolicy (model.policy of PPO, A2C or TRPO), got "
            f"{type(policy).__name__}; off-policy and recurrent policies are not supported"
        )
    if hasattr(policy, "lstm_actor"):
        raise TypeError(
            f"{type(policy).__name__} is recurrent; candidates are scored by a stateless actor, "
            "so recurrent policies are not supported"
        )
    from gymnasium import spaces

    if not isinstance(policy.action_space, (spaces.Box, spaces.Discrete)):
        raise TypeError(
            f"action space {policy.action_space} is not supported; ExploRLer's evaluator scores "
            "Box and Discrete actions"
        )
    return policy


def _shared_extractor_params(policy: ActorCriticPolicy) -> list[nn.Parameter]:
    if getattr(policy, "share_features_extractor", True):
        return list(policy.features_extractor.parameters())
    return []


class SB3Actor(nn.Module):
    """The deterministic actor of an SB3 ``ActorCriticPolicy``, sharing its Parameters.

    ``obs -> preprocess -> pi_features_extractor -> mlp_extractor.policy_net -> action_net`` and, for a
    squashed (gSDE) policy, ``tanh`` then rescaling to the action bounds: what
    ``policy.predict(obs, deterministic=True)`` computes before it clips Box actions to the action
    space (``PolicyEvaluator`` clips the same way; Discrete logits are argmax-ed there).

    Use :func:`sb3_actor`, which returns a plain ``nn.Sequential`` (the evaluator's fast path) where
    that is exact.
    """

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        _check_policy(policy)
        self.features_extractor = policy.pi_features_extractor
        self.policy_net = policy.mlp_extractor.policy_net
        self.action_net = policy.action_net
        self._observation_space = policy.observation_space
        self._normalize_images = policy.normalize_images
        self.squash = bool(policy.squash_output)
        if self.squash:
            box = cast(Any, policy.action_space)  # squash_output implies a Box action space
            self._low = torch.as_tensor(box.low, dtype=torch.float32)
            self._high = torch.as_tensor(box.high, dtype=torch.float32)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = preprocess_obs(obs, self._observation_space, normalize_images=self._normalize_images)
        mean = self.action_net(self.policy_net(self.features_extractor(x)))
        if not self.squash:
            return mean
        low, high = self._low.to(mean.device), self._high.to(mean.device)
        return low + 0.5 * (torch.tanh(mean) + 1.0) * (high - low)


def sb3_actor(policy: ActorCriticPolicy) -> nn.Module:
    """The deterministic actor of an SB3 ``ActorCriticPolicy`` as an ``nn.Module`` sharing its Parameters.

    For a flat Box observation space with SB3's default ``FlattenExtractor`` and no squashing (the
    ``MlpPolicy`` default) this is ``nn.Sequential(*policy_net, action_net)``, which
    :class:`~explorler_optim.rl.PolicyEvaluator` runs with batched matrix products; otherwise an
    :class:`SB3Actor`. Its output is the action mean (or Discrete logits); clipped to the Box bounds it
    equals ``policy.predict(obs, deterministic=True)``.

    Args:
        policy: ``model.policy`` of PPO, A2C or sb3-contrib TRPO.

    Example:
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu")
        >>> actor = sb3_actor(model.policy)
        >>> actor(torch.zeros(1, 3)).shape
        torch.Size([1, 1])
    """
    _check_policy(policy)
    from gymnasium import spaces

    space = policy.observation_space
    flat = (
        type(policy.pi_features_extractor) is FlattenExtractor
        and isinstance(space, spaces.Box)
        and len(space.shape) == 1
        and not policy.squash_output
    )
    if flat:
        return nn.Sequential(*policy.mlp_extractor.policy_net, policy.action_net)
    return SB3Actor(policy)


def sb3_actor_params(policy: ActorCriticPolicy) -> list[nn.Parameter]:
    """The Parameters ExploRLer searches in an SB3 policy: the actor's and ``log_std``, never the critic's.

    That is the policy's own features extractor (when not shared with the critic), the policy branch
    of ``mlp_extractor``, ``action_net`` and ``log_std`` (Gaussian and gSDE policies). A features
    extractor shared with the critic is left out (moving it would move the value function too); the
    actor still uses it at its current value.
    """
    _check_policy(policy)
    params: list[nn.Parameter] = []
    if not getattr(policy, "share_features_extractor", True):
        params += list(policy.pi_features_extractor.parameters())
    params += list(policy.mlp_extractor.policy_net.parameters())
    params += list(policy.action_net.parameters())
    log_std = getattr(policy, "log_std", None)
    if isinstance(log_std, nn.Parameter):
        params.append(log_std)
    return params


# --------------------------------------------------------------------------------------------
# The callback
# --------------------------------------------------------------------------------------------


def _make_search(search: str | SearchOperator | None, kwargs: dict[str, Any] | None) -> SearchOperator:
    if isinstance(search, SearchOperator):
        if kwargs:
            raise ValueError(
                "search_kwargs applies to a search given by name; configure the instance instead"
            )
        return search
    if search is None:
        options = {"snapshot_every": 60, **(kwargs or {})}  # the scripts' tuned default: 10 candidates
        return EmptySpaceSearch(**options)
    if search not in _SEARCHES:
        raise ValueError(f"search must be one of {sorted(_SEARCHES)} or a SearchOperator, got {search!r}")
    options = dict(kwargs or {})
    if search == "esa":
        options.setdefault("snapshot_every", 60)
    return _SEARCHES[search](**options)


class ExploRLerCallback(BaseCallback):
    """ExploRLer for SB3 on-policy algorithms (PPO, A2C, sb3-contrib TRPO) as a ``learn()`` callback.

    How it maps onto SB3's loop (``collect_rollouts`` then ``train`` per iteration):

    * **Anchors.** PPO-like algorithms (with ``n_epochs`` and ``batch_size``): an anchor at the end of
      every epoch, counted as ``ceil(n_steps * n_envs / batch_size)`` steps of ``policy.optimizer``
      (seen through its public step post-hook); TRPO, A2C and others: one per iteration. At the end of
      every iteration an anchor is also recorded if the actor moved since the last one (a PPO epoch
      cut short by ``target_kl``). An iteration ends at the next rollout start or at the end of
      ``learn()``.
    * **Searches.** After every ``explore_every``-th iteration, at the next rollout start, so the next
      rollout already uses the committed policy. The search due after the last iteration of
      ``learn()`` runs at its end (``explore_at_end=True``) or at the start of the next ``learn()``.
      Anchors, the iteration counter and step counters carry across ``learn()`` calls and
      :meth:`save` / :meth:`load`; a cycle with fewer than 2 anchors is extended, never dropped.
    * **Scoring.** :class:`~explorler_optim.rl.PolicyEvaluator` runs the deterministic actor
      (:func:`sb3_actor`) on separate, raw environments, with the model's ``VecNormalize``
      observation statistics frozen at search time (its ``clip_obs`` honoured). Searched: the actor and
      ``log_std`` (:func:`sb3_actor_params`), never the critic. ``policy.optimizer``'s state of those
      parameters is cleared after a commit (``reset_state``).
    * **Accounting.** With ``count_eval_steps`` the candidates' env steps are added to
      ``model.num_timesteps``: ``learn(total_timesteps)`` stops at equal total env steps and the
      learning-rate schedule's progress counts them (as the single-file scripts do). When a search
      uses the rest of the budget, the next rollout is stopped at its first step (``n_envs`` steps
      that are never trained on). As in plain SB3 when ``total_timesteps`` is not a multiple of the
      rollout size, the last iteration may end past the budget, so its ``progress_remaining`` can dip
      below 0 by up to ``n_steps * n_envs / total_timesteps``: use schedules that clamp at 0 (SB3's
      ``get_linear_fn``). ``count_eval_steps=False`` is the paper's accounting.
    * **Logging.** ``explorler/*`` in SB3's logger (TensorBoard when configured): ``best_score``,
      ``incumbent_score``, ``gain``, ``committed``, ``num_candidates``, ``distance``, ``num_anchors``,
      ``eval_env_steps`` (all candidate steps so far), ``seconds``, ``search_seconds``, ``searches``.

    Every argument is a plain value, so rl-zoo3 hyper-parameter files can build it.

    Args:
        eval_env: env id (``"Hopper-v5"``) or zero-argument factory of ONE raw gymnasium env (no
            normalisation wrappers) for scoring candidates. ``None``: ``gym.make`` of the training
            env's spec.
        eval_env_kwargs: keyword arguments of ``gym.make`` when ``eval_env`` is an id.
        explore_every: iterations per search (1: the paper's PPO schedule, 10: its TRPO schedule).
        eval_episodes: deterministic episodes per candidate (the paper: 3).
        max_anchors: anchors searched: the last ones of the cycle (a warning at training start says
            when a cycle records more).
        anchor_every: ``"auto"``, ``"epoch"`` (PPO) or ``"iteration"`` (TRPO, A2C).
        search: ``None`` (``EmptySpaceSearch(snapshot_every=60)``: 10 candidates), a name (``"esa"``,
            ``"random-walk"``, ``"checkpoint-average"``, ``"gaussian"``) or a ``SearchOperator``.
        search_kwargs: arguments of the named search (e.g. ``{"snapshot_every": 20}``).
        include_incumbent: score the current policy too and commit only if a candidate beats it.
        reset_state: clear ``policy.optimizer``'s state (Adam moments) of the actor after a commit.
        count_eval_steps: count candidate env steps in ``model.num_timesteps`` (see above).
        explore_at_end: run the search due after the last iteration of ``learn()`` at its end.
        on_invalid: ``"skip"`` scores a non-finite return as ``-inf``; ``"raise"`` raises.
        seed: seed of the search's random source and of the candidates' episode seeds
            (``None``: the model's seed, else 0).
        eval_workers: worker processes of the evaluator (1: in this process).
        save_path: if given, the callback's state is written there (atomically) at every rollout start
            and at the end of ``learn()``; it then matches any ``model.save`` / ``CheckpointCallback``
            checkpoint taken during the rollout that follows.
        verbose: 1 prints one line per search.

    Example:
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0)
        >>> callback = ExploRLerCallback("Pendulum-v1", explore_every=2, count_eval_steps=False)
        >>> _ = model.learn(256, callback=callback)
        >>> callback.iterations, callback.searches, callback.explorer.num_anchors
        (4, 2, 0)
        >>> model.save("ppo_pendulum"); callback.save("ppo_pendulum.explorler.pt")
    """

    def __init__(
        self,
        eval_env: str | Callable[[], Any] | None = None,
        *,
        eval_env_kwargs: dict[str, Any] | None = None,
        explore_every: int = 20,
        eval_episodes: int = 1,
        max_anchors: int = 10,
        anchor_every: str = "auto",
        search: str | SearchOperator | None = None,
        search_kwargs: dict[str, Any] | None = None,
        include_incumbent: bool = True,
        reset_state: bool = True,
        count_eval_steps: bool = True,
        explore_at_end: bool = True,
        on_invalid: str = "skip",
        seed: int | None = None,
        eval_workers: int = 1,
        save_path: str | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose=verbose)
        if eval_env is not None and not isinstance(eval_env, str) and not callable(eval_env):
            raise TypeError(
                f"eval_env must be an env id (e.g. 'Hopper-v5'), a zero-argument env factory or None, "
                f"got {type(eval_env).__name__}"
            )
        if eval_env_kwargs and not isinstance(eval_env, str):
            raise ValueError("eval_env_kwargs applies to an env id; put the arguments in your factory")
        for name, value in (("explore_every", explore_every), ("eval_episodes", eval_episodes)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if anchor_every not in ("auto", "epoch", "iteration"):
            raise ValueError(f"anchor_every must be 'auto', 'epoch' or 'iteration', got {anchor_every!r}")
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        self.eval_env = eval_env
        self.eval_env_kwargs = dict(eval_env_kwargs or {})
        self.explore_every = int(explore_every)
        self.eval_episodes = int(eval_episodes)
        self.max_anchors = int(max_anchors)
        self.anchor_every = anchor_every
        self.search = _make_search(search, search_kwargs)
        self.include_incumbent = bool(include_incumbent)
        self.reset_state = bool(reset_state)
        self.count_eval_steps = bool(count_eval_steps)
        self.explore_at_end = bool(explore_at_end)
        self.on_invalid = on_invalid
        self.seed = seed
        self.eval_workers = int(eval_workers)
        self.save_path = save_path

        self.explorer: Explorer | None = None
        self.evaluator: PolicyEvaluator | None = None
        self.last_result: ExploreResult | None = None
        self.iterations = 0  # trained iterations seen, across learn() calls
        self.searches = 0
        self.eval_env_steps = 0  # candidate env steps, all searches
        self.counted_eval_steps = 0  # of those, added to model.num_timesteps
        self._pending = False  # a search is due
        self._in_iteration = False  # a rollout was collected; train() runs until the next hook
        self._optimizer_steps = 0
        self._steps_per_epoch: int | None = None
        self._last_anchor: torch.Tensor | None = None
        self._hook: RemovableHandle | None = None
        self._stop = False
        self._total_timesteps = 0
        self._warned = False
        self._loaded_state: dict[str, Any] | None = None

    # ---------------------------------------------------------------- setup
    def _init_callback(self) -> None:
        policy = _check_policy(self.model.policy)
        params = sb3_actor_params(policy)
        old = self.explorer
        same = old is not None and len(params) == len(old.params)
        same = same and old is not None and all(p is q for p, q in zip(params, old.params))
        if not same:
            # a new model (or a reloaded one): searched parameters are this policy's
            seed = self.seed if self.seed is not None else self.model.seed
            self.explorer = Explorer(
                params,
                max_anchors=self.max_anchors,
                search=self.search,
                include_incumbent=self.include_incumbent,
                reset_state=self.reset_state,
                seed=0 if seed is None else int(seed),
                on_invalid=self.on_invalid,
                optimizer=policy.optimizer,
            )
            if old is not None and [tuple(p.shape) for p in old.params] == [tuple(p.shape) for p in params]:
                self.explorer.load_state_dict(old.state_dict())  # e.g. PPO.load(...) then learn again
            else:
                self._last_anchor = None
            if self.evaluator is not None:
                self.evaluator.close()
                self.evaluator = None
        assert self.explorer is not None
        self.explorer.optimizer = policy.optimizer
        if self._loaded_state is not None:
            state, self._loaded_state = self._loaded_state, None
            self.load_state_dict(state)

    def _anchor_mode(self) -> str:
        if self.anchor_every != "auto":
            return self.anchor_every
        epochs = hasattr(self.model, "n_epochs") and hasattr(self.model, "batch_size")
        return "epoch" if epochs else "iteration"

    def _on_training_start(self) -> None:
        self._total_timesteps = int(self.locals.get("total_timesteps", 0))
        self._stop = False
        self._in_iteration = False
        mode = self._anchor_mode()
        self._steps_per_epoch = None
        if mode == "epoch":
            if not hasattr(self.model, "batch_size") or not hasattr(self.model, "n_epochs"):
                raise ValueError(
                    f"anchor_every='epoch' needs an algorithm with epochs (n_epochs, batch_size); "
                    f"{type(self.model).__name__} has none: use anchor_every='iteration'"
                )
            model = cast(Any, self.model)  # PPO-like: checked above
            self._steps_per_epoch = math.ceil(model.n_steps * model.n_envs / model.batch_size)
        if self._hook is not None:  # left by a learn() that raised; the optimizer may be a new one
            self._hook.remove()
            self._hook = None
        if self._steps_per_epoch is not None:
            self._hook = self.model.policy.optimizer.register_step_post_hook(self._after_optimizer_step)
        per_cycle = self.explore_every * (cast(Any, self.model).n_epochs if mode == "epoch" else 1)
        if not self._warned:
            self._warned = True
            if per_cycle > self.max_anchors:
                unit = "n_epochs per iteration" if mode == "epoch" else "one per iteration"
                message = (
                    f"ExploRLerCallback: a cycle of explore_every={self.explore_every} iterations records "
                    f"{per_cycle} anchors ({unit}) "
                    f"but max_anchors={self.max_anchors}: only the last {self.max_anchors} are searched "
                    f"(raise max_anchors to search them all)"
                )
                warnings.warn(message, stacklevel=2)
                self.logger.log(message)
            elif per_cycle < 2:
                message = (
                    f"ExploRLerCallback: a cycle of explore_every={self.explore_every} iteration(s) records "
                    f"{per_cycle} anchor; a search needs 2, so each runs once 2 anchors have accumulated "
                    "(raise explore_every)"
                )
                warnings.warn(message, stacklevel=2)
                self.logger.log(message)

    # ---------------------------------------------------------------- anchors
    def _actor_flat(self) -> torch.Tensor:
        assert self.explorer is not None, "the callback is not attached to a model yet"
        return torch.cat([p.detach().reshape(-1) for p in self.explorer.params]).clone()

    def _record(self) -> None:
        assert self.explorer is not None, "the callback is not attached to a model yet"
        self.explorer.record()
        self._last_anchor = self._actor_flat()

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        if not self._in_iteration or self._steps_per_epoch is None:
            return
        self._optimizer_steps += 1
        if self._optimizer_steps % self._steps_per_epoch == 0:
            self._record()

    def _end_iteration(self) -> None:
        """The iteration whose rollout was collected has been trained: close it."""
        if not self._in_iteration:
            return
        self._in_iteration = False
        moved = self._last_anchor is None or not torch.equal(self._actor_flat(), self._last_anchor)
        if moved:
            self._record()
        self.iterations += 1
        if self.iterations % self.explore_every == 0:
            self._pending = True

    # ---------------------------------------------------------------- SB3 hooks
    def _on_rollout_start(self) -> None:
        self._end_iteration()
        if self._pending:
            self._explore()
            if self.count_eval_steps and self.model.num_timesteps >= self._total_timesteps:
                self._stop = True  # the search used up the budget: stop this rollout at once
        if self.save_path is not None:
            self.save(self.save_path)

    def _on_step(self) -> bool:
        return not self._stop

    def _on_rollout_end(self) -> None:
        self._in_iteration = True  # train() follows
        self._optimizer_steps = 0

    def _on_training_end(self) -> None:
        self._end_iteration()
        searched_now = self._pending and self.explore_at_end
        if searched_now:
            self._explore()
        if searched_now or self._stop:  # values SB3's own dump_logs will not write in this learn()
            self.logger.dump(self.model.num_timesteps)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.save_path is not None:
            self.save(self.save_path)

    # ---------------------------------------------------------------- search
    def _make_env_factory(self) -> Callable[[], Any]:
        import gymnasium as gym

        if callable(self.eval_env) and not isinstance(self.eval_env, str):
            return self.eval_env
        if isinstance(self.eval_env, str):
            return functools.partial(gym.make, self.eval_env, **self.eval_env_kwargs)
        env = self.model.get_env()
        spec = None if env is None else env.get_attr("spec", [0])[0]
        if spec is None:
            raise ValueError(
                "ExploRLerCallback: the training env has no gymnasium spec to rebuild an evaluation "
                "env from; pass eval_env='EnvId-v0' or a zero-argument factory of a raw env"
            )
        return functools.partial(gym.make, spec)

    def _obs_normalizer(self) -> ObsNormalizer | None:
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is None or not vec_normalize.norm_obs:
            return None
        return ObsNormalizer.from_env(vec_normalize)  # frozen copy; clip_obs honoured

    def candidate_seed(self) -> int:
        """Reset seed of episode 0 of every candidate of the next search (the scripts' sequence)."""
        seed = self.seed if self.seed is not None else (self.model.seed if self.model is not None else 0)
        return ((seed or 0) * 1_000_003 + self.searches * self.eval_episodes) % 999_000_000

    def _explore(self) -> None:
        assert self.explorer is not None, "the callback is not attached to a model yet"
        if not self.explorer.can_explore:
            self._pending = False  # the cycle goes on until it has 2 anchors
            return
        if self.evaluator is None:
            self.evaluator = PolicyEvaluator(
                sb3_actor(_check_policy(self.model.policy)),
                self._make_env_factory(),
                episodes=self.eval_episodes,
                workers=self.eval_workers,
            )
        self.evaluator.obs_normalizer = self._obs_normalizer()
        self.evaluator.seed = self.candidate_seed()
        before = self.evaluator.total_env_steps
        training = self.model.policy.training
        self.model.policy.set_training_mode(False)
        try:
            result = self.explorer.explore(self.evaluator)
        finally:
            self.model.policy.set_training_mode(training)
            used = int(self.evaluator.total_env_steps - before)
            self.eval_env_steps += used
            if self.count_eval_steps:
                self.counted_eval_steps += used
                self.model.num_timesteps += used
        self._pending = False
        self._last_anchor = None
        self.searches += 1
        self.last_result = result
        record = self.logger.record
        record("explorler/best_score", result.best_score)
        if result.incumbent_score is not None:
            record("explorler/incumbent_score", result.incumbent_score)
            record("explorler/gain", result.gain)
        record("explorler/committed", float(result.committed))
        record("explorler/num_candidates", result.num_candidates)
        record("explorler/num_anchors", result.num_anchors)
        record("explorler/distance", result.distance)
        record("explorler/eval_env_steps", self.eval_env_steps)
        record("explorler/seconds", result.seconds)
        record("explorler/search_seconds", result.search_seconds)
        record("explorler/searches", self.searches)
        if self.verbose >= 1:
            gain = "" if result.gain is None else f", gain {result.gain:+.1f}"
            print(
                f"ExploRLer search {self.searches} after iteration {self.iterations}: best "
                f"{result.best_score:.1f}{gain}, committed={result.committed}, {used} env steps"
            )

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Anchors, counters and the search's RNG state: tensors and plain values only.

        ``torch.load(weights_only=True)`` reads it. Save it beside the model (:meth:`save`); the model's
        own parameters and optimizer state are ``model.save``'s.
        """
        if self.explorer is None:
            if self._loaded_state is not None:
                return dict(self._loaded_state)
            raise RuntimeError(
                "ExploRLerCallback.state_dict(): no model yet; call it after model.learn(..., callback=...)"
            )
        return {
            "version": _STATE_VERSION,
            "explorer": self.explorer.state_dict(),
            "iterations": self.iterations,
            "searches": self.searches,
            "eval_env_steps": self.eval_env_steps,
            "counted_eval_steps": self.counted_eval_steps,
            "pending": self._pending,
            "last_anchor": None if self._last_anchor is None else self._last_anchor.detach().cpu().clone(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; before the first ``learn()`` it is applied when the model is known."""
        if state_dict.get("version") != _STATE_VERSION or "explorer" not in state_dict:
            raise ValueError(
                "not an ExploRLerCallback state dict (expected 'version' and 'explorer' keys); pass what "
                "ExploRLerCallback.state_dict() returned or load the file with ExploRLerCallback.load()"
            )
        if self.explorer is None:
            self._loaded_state = dict(state_dict)
            return
        self.explorer.load_state_dict(state_dict["explorer"])
        self.iterations = int(state_dict["iterations"])
        self.searches = int(state_dict["searches"])
        self.eval_env_steps = int(state_dict["eval_env_steps"])
        self.counted_eval_steps = int(state_dict["counted_eval_steps"])
        self._pending = bool(state_dict["pending"])
        last = state_dict["last_anchor"]
        device = self.explorer.params[0].device
        self._last_anchor = None if last is None else last.to(device)

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (a temporary file, then ``os.replace``)."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=directory, prefix=".explorler-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(self.state_dict(), file)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def load(self, path: str | os.PathLike) -> None:
        """Read a file written by :meth:`save` (``weights_only=True``) into this callback."""
        self.load_state_dict(torch.load(os.fspath(path), map_location="cpu", weights_only=True))

    def close(self) -> None:
        """Close the evaluation envs (and worker processes)."""
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None

    def __repr__(self) -> str:
        env = self.eval_env if isinstance(self.eval_env, str) or self.eval_env is None else "<factory>"
        return (
            f"{type(self).__name__}(eval_env={env!r}, explore_every={self.explore_every}, "
            f"eval_episodes={self.eval_episodes}, max_anchors={self.max_anchors}, "
            f"anchor_every={self.anchor_every!r}, search={self.search!r}, "
            f"include_incumbent={self.include_incumbent}, count_eval_steps={self.count_eval_steps}, "
            f"iterations={self.iterations}, searches={self.searches}, eval_env_steps={self.eval_env_steps})"
        )
