"""The rollout engine: plays (candidate, episode) pairs on a pool of envs in one batched loop.

The same engine runs in the main process, in worker processes and in Ray actors. A
``RolloutJob`` says which pairs to play; every step, one batched forward pass (``BatchedPolicy``)
computes the actions of every live pair, and only live envs are stepped.

Actions are the policy's outputs (deterministic), or, when the job carries each candidate's
log-standard-deviation, samples of the Gaussian around them. A job can also keep every episode's
transitions (``Episode``), so that the env steps spent scoring candidates can train the policy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from explorler_optim.rl.batched import BatchedPolicy
from explorler_optim.rl.normalize import ObsNormalizer

__all__ = ["Episode", "RolloutEngine", "RolloutJob", "RolloutResult", "peel_trivial_wrappers"]

_TRIVIAL_WRAPPERS = ("TimeLimit", "OrderEnforcing", "PassiveEnvChecker")


@dataclass
class RolloutJob:
    """Pairs to play: pair ``j`` runs candidate ``candidate_of_pair[j]`` for one episode that
    resets with ``seed + episode_of_pair[j]``."""

    candidate_of_pair: np.ndarray  # (pairs,) int: a row of `stacked`
    episode_of_pair: np.ndarray  # (pairs,) int
    stacked: dict[str, np.ndarray]  # parameter name -> (candidates, *shape) float32
    fixed: dict[str, np.ndarray] | None  # current values of the other parameters and buffers
    normalizer: dict[str, Any] | None  # ObsNormalizer.state_dict(), or None for raw observations
    seed: int
    max_steps: int | None  # extra cap on episode length, on top of the env's TimeLimit
    call_id: int = 0  # set by the process pool to match replies to calls
    # (candidates, action size) float32: sample actions from N(policy output, exp(log_std)) with a
    # noise stream seeded by the episode (the same for every candidate); None: deterministic actions
    log_std: np.ndarray | None = None
    keep_transitions: bool = False  # return every pair's Episode


@dataclass
class Episode:
    """One played episode, step by step, as the policy saw and did it.

    Attributes:
        observations: ``(T, *obs_shape)`` float32, normalised as the policy saw them.
        actions: ``(T, action_size)`` float32, the policy's actions before the env's clipping
            (the sampled ones when the policy is stochastic).
        log_probs: ``(T,)`` float32 log-probabilities of ``actions`` under the policy that played
            them (the behaviour policy), or ``None`` for deterministic actions.
        rewards: ``(T,)`` float64 raw rewards, as the env returned them.
        terminated: the episode ended in a terminal state.
        truncated: it was cut by a time limit (the env's or ``max_episode_steps``).
        candidate: the row of the candidate that played it (the evaluator's numbering).
        episode: its index: it reset with ``seed + episode``.
    """

    observations: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray | None
    rewards: np.ndarray
    terminated: bool
    truncated: bool
    candidate: int = 0
    episode: int = 0

    def __len__(self) -> int:
        return len(self.rewards)


@dataclass
class RolloutResult:
    """Per-pair undiscounted returns and episode lengths, and the CPU time the job took."""

    returns: np.ndarray  # (pairs,) float64
    lengths: np.ndarray  # (pairs,) int64
    cpu_seconds: float = 0.0
    episodes: list[Episode] | None = None  # per pair, when the job keeps transitions
    # (pairs,) float64: the episode's last info["is_success"] as 1.0 / 0.0, NaN where it had none
    successes: np.ndarray | None = None


def peel_trivial_wrappers(env: Any) -> tuple[Any, int | None]:
    """Strip the outer TimeLimit/OrderEnforcing/PassiveEnvChecker wrappers that gym.make adds.

    Returns (inner env, time limit or None). The time limit is re-applied by step counting, so
    episodes are identical; skipping the wrappers saves their per-step Python overhead.
    """
    limit = None
    e = env
    while type(e).__name__ in _TRIVIAL_WRAPPERS and type(e).__module__.startswith("gymnasium"):
        if type(e).__name__ == "TimeLimit":
            m = getattr(e, "_max_episode_steps", None)
            if m is not None:
                limit = int(m) if limit is None else min(limit, int(m))
        e = e.env
    return e, limit


class RolloutEngine:
    """Holds a pool of envs and a policy; runs a ``RolloutJob``'s pairs in one batched loop."""

    def __init__(
        self,
        policy: nn.Module,
        make_env: Callable[[], Any],
        fast: bool | None = None,
        peel: bool = True,
    ):
        self.policy = policy
        self.make_env = make_env
        self.batched = BatchedPolicy(policy, fast=fast)
        self.peel = peel
        self.pool: list[tuple[Any, int | None]] = []  # (env, its time limit or None)
        self._action_space: Any = None

    def close(self) -> None:
        for env, _ in self.pool:
            with contextlib.suppress(Exception):  # closing is best effort
                env.close()
        self.pool = []

    def run(self, job: RolloutJob) -> RolloutResult:
        """Play every pair of ``job`` to the end of its episode."""
        cpu_start = time.process_time()
        candidate_of_pair = np.asarray(job.candidate_of_pair, dtype=np.int64)
        episode_of_pair = np.asarray(job.episode_of_pair, dtype=np.int64)
        num_pairs = len(candidate_of_pair)
        returns = np.zeros(num_pairs, dtype=np.float64)
        lengths = np.zeros(num_pairs, dtype=np.int64)
        successes = np.full(num_pairs, np.nan)
        if num_pairs == 0:
            return RolloutResult(returns, lengths, episodes=[] if job.keep_transitions else None)
        # run the forward pass where the policy lives (CPU in workers; CUDA is fine locally)
        device = next(iter(self.policy.parameters()), torch.empty(0)).device
        stacked = {k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in job.stacked.items()}
        if job.fixed:
            self._load_fixed(job.fixed)
        normalizer = ObsNormalizer.from_state_dict(job.normalizer) if job.normalizer is not None else None

        envs = [self._env(j) for j in range(num_pairs)]
        limits = np.array([_step_limit(limit, job.max_steps) for _, limit in envs], dtype=np.int64)
        obs = _reset_all([env for env, _ in envs], int(job.seed) + episode_of_pair)
        live = limits != 0  # a limit of 0 steps means an empty episode
        sampler = (
            _GaussianSampler(job, candidate_of_pair, episode_of_pair) if job.log_std is not None else None
        )
        if sampler is not None:
            self._check_box_actions()
        recorder = _Recorder(num_pairs) if job.keep_transitions else None
        terminal = np.zeros(num_pairs, dtype=bool)

        with torch.inference_mode():
            batch = _LiveCandidates(stacked, candidate_of_pair, obs.shape[1:], device)
            while live.any():
                live_pairs = np.flatnonzero(live)
                x = obs[live_pairs]
                x = normalizer(x) if normalizer is not None else x.astype(np.float32)
                outputs = batch.forward(self.batched, live_pairs, x)
                log_probs = None
                if sampler is not None:
                    outputs, log_probs = sampler.sample(live_pairs, outputs)
                actions = self._to_env_actions(outputs)
                for i, j in enumerate(live_pairs):
                    next_obs, reward, terminated, truncated, info = envs[j][0].step(actions[i])
                    returns[j] += float(reward)
                    lengths[j] += 1
                    if recorder is not None:
                        recorder.add(
                            int(j), x[i], outputs[i], None if log_probs is None else log_probs[i], reward
                        )
                    if terminated or truncated or lengths[j] == limits[j]:
                        live[j] = False
                        terminal[j] = bool(terminated)
                        if "is_success" in info:  # gymnasium-robotics' convention
                            successes[j] = float(bool(info["is_success"]))
                    else:
                        obs[j] = next_obs
        episodes = None
        if recorder is not None:
            episodes = recorder.episodes(terminal, candidate_of_pair, episode_of_pair)
        return RolloutResult(returns, lengths, time.process_time() - cpu_start, episodes, successes)

    def _check_box_actions(self) -> None:
        from gymnasium import spaces  # local: gymnasium is only needed when envs exist

        if not isinstance(self._action_space, spaces.Box):
            raise ValueError(
                "stochastic scoring (PolicyEvaluator(log_std=...)) samples Gaussian actions: it needs a "
                f"continuous (Box) action space, got {self._action_space}"
            )

    def _env(self, j: int) -> tuple[Any, int | None]:
        while len(self.pool) <= j:
            env = self.make_env()
            if self._action_space is None:
                self._action_space = env.action_space
            self.pool.append(peel_trivial_wrappers(env) if self.peel else (env, None))
        return self.pool[j]

    def _load_fixed(self, fixed: dict[str, np.ndarray]) -> None:
        """Copy the current values of unexplored parameters and buffers into the policy."""
        with torch.no_grad():
            named: dict[str, torch.Tensor] = dict(self.policy.named_parameters())
            named.update(dict(self.policy.named_buffers()))
            for k, v in fixed.items():
                named[k].copy_(torch.as_tensor(v, device=named[k].device))

    def _to_env_actions(self, out: np.ndarray) -> np.ndarray:
        space = self._action_space
        from gymnasium import spaces  # local: gymnasium is only needed when envs exist

        if isinstance(space, spaces.Box):
            out = out.reshape(out.shape[:-1] + space.shape) if space.shape else out
            return np.clip(out, space.low, space.high).astype(space.dtype, copy=False)
        if isinstance(space, spaces.Discrete):
            if out.shape[-1] == space.n:
                return out.argmax(-1) + space.start
            return np.clip(np.rint(out[..., 0]), space.start, space.start + space.n - 1).astype(np.int64)
        return out


class _GaussianSampler:
    """Gaussian actions around the policy's outputs, and their log-probabilities.

    Pair ``j`` draws its noise from a generator seeded by its episode index only, so episode ``k``
    of every candidate sees the same noise sequence (common random numbers, like the start states).
    """

    def __init__(self, job: RolloutJob, candidate_of_pair: np.ndarray, episode_of_pair: np.ndarray):
        assert job.log_std is not None
        self.log_std = torch.as_tensor(np.asarray(job.log_std, dtype=np.float32))
        self.candidate_of_pair = candidate_of_pair
        self.generators = [
            np.random.default_rng([int(job.seed) + int(k), _NOISE_STREAM]) for k in episode_of_pair
        ]

    def sample(self, live_pairs: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = torch.as_tensor(means, dtype=torch.float32).reshape(len(live_pairs), -1)
        std = self.log_std[torch.as_tensor(self.candidate_of_pair[live_pairs])].reshape(mean.shape).exp()
        noise = np.stack(
            [self.generators[j].standard_normal(mean.shape[1], dtype=np.float32) for j in live_pairs]
        )
        actions = mean + std * torch.from_numpy(noise)
        log_probs = torch.distributions.Normal(mean, std, validate_args=False).log_prob(actions).sum(-1)
        return actions.numpy(), log_probs.numpy()


_NOISE_STREAM = 0x5EED  # keeps the action noise apart from any generator seeded with the same integer


class _Recorder:
    """Collects each pair's transitions as the episode is played."""

    def __init__(self, num_pairs: int):
        self.steps: list[list[tuple[Any, ...]]] = [[] for _ in range(num_pairs)]

    def add(self, pair: int, obs: np.ndarray, action: np.ndarray, log_prob: Any, reward: Any) -> None:
        self.steps[pair].append(
            (obs.copy(), np.array(action, dtype=np.float32).reshape(-1), log_prob, reward)
        )

    def episodes(
        self, terminal: np.ndarray, candidate_of_pair: np.ndarray, episode_of_pair: np.ndarray
    ) -> list[Episode]:
        out = []
        for j, steps in enumerate(self.steps):
            observations, actions, log_probs, rewards = (
                zip(*steps, strict=True) if steps else ((), (), (), ())
            )
            stochastic = bool(steps) and steps[0][2] is not None
            out.append(
                Episode(
                    observations=np.asarray(observations, dtype=np.float32),
                    actions=np.asarray(actions, dtype=np.float32),
                    log_probs=np.asarray(log_probs, dtype=np.float32) if stochastic else None,
                    rewards=np.asarray(rewards, dtype=np.float64),
                    terminated=bool(terminal[j]),
                    truncated=bool(steps) and not terminal[j],
                    candidate=int(candidate_of_pair[j]),
                    episode=int(episode_of_pair[j]),
                )
            )
        return out


def _step_limit(time_limit: int | None, max_steps: int | None) -> int:
    """The episode's step cap: the smaller of the env's TimeLimit and ``max_steps``; -1 if none."""
    caps = [x for x in (time_limit, max_steps) if x is not None]
    return min(caps) if caps else -1


def _reset_all(envs: list[Any], seeds: np.ndarray) -> np.ndarray:
    """Reset env ``j`` with ``seeds[j]``; returns the stacked first observations."""
    return np.stack([np.asarray(env.reset(seed=int(seed))[0]) for env, seed in zip(envs, seeds, strict=True)])


class _LiveCandidates:
    """Weights and observation buffer of the candidates that still have a live pair.

    Candidate ``c``'s pairs occupy slots ``0..m_c-1`` of row ``c`` of an ``(n, slots, *obs)``
    buffer. When a candidate's last episode ends, its weights are dropped from the forward pass.
    """

    def __init__(
        self,
        stacked: dict[str, torch.Tensor],
        candidate_of_pair: np.ndarray,
        obs_shape: tuple[int, ...],
        device: torch.device,
    ):
        self.all_weights = stacked
        self.candidate_of_pair = candidate_of_pair
        self.num_candidates = int(candidate_of_pair.max()) + 1
        self.slot_of_pair = np.zeros(len(candidate_of_pair), dtype=np.int64)
        pairs_per_candidate = np.zeros(self.num_candidates, dtype=np.int64)
        for j, c in enumerate(candidate_of_pair):
            self.slot_of_pair[j] = pairs_per_candidate[c]
            pairs_per_candidate[c] += 1
        self.num_slots = int(pairs_per_candidate.max())
        self.obs_shape = obs_shape
        self.device = device
        self.weights = stacked
        self.row_of_candidate: np.ndarray | None = None  # None: row c is candidate c
        self.obs_buffer = self._empty_buffer(self.num_candidates)
        self._live_key: bytes | None = None

    def forward(self, batched: BatchedPolicy, live_pairs: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Actions of the live pairs, given their (normalised, float32) observations."""
        self._drop_finished_candidates(live_pairs)
        candidates = self.candidate_of_pair[live_pairs]
        rows = candidates if self.row_of_candidate is None else self.row_of_candidate[candidates]
        row_index = torch.as_tensor(rows, device=self.device)
        slot_index = torch.as_tensor(self.slot_of_pair[live_pairs], device=self.device)
        self.obs_buffer[row_index, slot_index] = torch.from_numpy(obs).to(self.device)
        return batched(self.weights, self.obs_buffer)[row_index, slot_index].cpu().numpy()

    def _drop_finished_candidates(self, live_pairs: np.ndarray) -> None:
        live_candidates = np.unique(self.candidate_of_pair[live_pairs])
        key = live_candidates.tobytes()
        if key == self._live_key:
            return
        self._live_key = key
        if len(live_candidates) == self.num_candidates:
            self.weights, self.row_of_candidate = self.all_weights, None
            return
        index = torch.as_tensor(live_candidates, device=self.device)
        self.weights = {k: v.index_select(0, index) for k, v in self.all_weights.items()}
        self.row_of_candidate = np.full(self.num_candidates, -1, dtype=np.int64)
        self.row_of_candidate[live_candidates] = np.arange(len(live_candidates))
        self.obs_buffer = self._empty_buffer(len(live_candidates))

    def _empty_buffer(self, rows: int) -> torch.Tensor:
        shape = (rows, self.num_slots, *self.obs_shape)
        return torch.zeros(shape, dtype=torch.float32, device=self.device)
