"""``PolicyEvaluator``: scores a policy, or N candidate parameter sets of it, by rollouts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from explorler_optim.rl.normalize import ObsNormalizer
from explorler_optim.rl.pools import ProcessPool, RayPool, WorkerPool
from explorler_optim.rl.racing import race
from explorler_optim.rl.rollout import Episode, RolloutEngine, RolloutJob

__all__ = ["PolicyEvaluator"]


class PolicyEvaluator:
    """Score policies (or N candidate parameter sets of one policy) by rollouts.

    Actions are the policy's deterministic outputs, or, with ``log_std``, Gaussian samples around
    them; with ``keep_transitions`` every episode's transitions are kept (``last_transitions``), so
    that the env steps spent on scoring can also train the policy.

    Args:
        policy: ``nn.Module`` mapping a batch of normalised observations to deterministic actions
            (e.g. ``agent.actor_mean``). Actions are clipped to the env's action space (Box);
            for ``Discrete`` spaces an output of size ``n`` is argmax-ed.
        make_env: zero-arg callable building ONE plain gymnasium env (raw rewards, no obs
            normalisation). Must be picklable for ``workers > 1`` (module-level function or
            ``functools.partial``; cloudpickle is used if installed).
        episodes: episodes per candidate; score = mean undiscounted return.
        obs_normalizer: frozen ``ObsNormalizer`` (or None: raw observations). Settable attribute.
        seed: episode ``k`` of every candidate resets with ``seed + k``. Settable attribute.
        workers: number of worker processes (``backend="local"``) or Ray actors (``"ray"``).
            ``workers=1`` with the local backend runs in this process.
        max_episode_steps: extra cap on episode length (the env's own TimeLimit still applies).
        racing: race candidates by successive halving in ``evaluate_many`` (see
            ``racing_schedule``); eliminated candidates are scored by the mean over the episodes
            they played, capped just below the best finalist (so the argmax is a finalist).
            ``__call__`` (one candidate) never races.
        racing_eta: keep ``1/racing_eta`` of the candidates per rung.
        racing_budget: target fraction of the exhaustive cost: the episode schedule stays
            within it, and survivors are cut (down to 2) when their projected env steps would
            exceed it (estimated from rung 0's episode lengths; a soft bound on env steps).
        backend: ``"local"`` or ``"ray"``.
        ray_address: address of an existing Ray cluster (``ray.init(address=...)``); ignored if
            Ray is already initialised.
        ray_init_kwargs: extra ``ray.init`` arguments.
        fast_path: None = use the ``baddbmm`` path for Sequential(Linear/activation) policies and
            ``torch.func.functional_call`` + ``vmap`` otherwise; False forces vmap.
        start_method: multiprocessing start method for workers ("spawn" or "forkserver").
        log_std: the log-standard-deviation of a Gaussian policy around ``policy``'s outputs (e.g.
            ``agent.actor_logstd``, broadcast to the action size). Given, actions are sampled and
            scores are returns of the stochastic policy; a candidate in ``evaluate_many`` uses its
            own value when ``log_std`` is among the ``params`` (matched by identity). Episode ``k``
            of every candidate draws the same noise sequence, as it resets with the same seed.
        keep_transitions: keep every episode of the last call as an ``Episode`` (observations as
            the policy saw them, actions, their log-probabilities under the candidate that played
            them when ``log_std`` is given, raw rewards, terminated / truncated).

    After each call: ``last_env_steps`` (env steps used), ``last_episodes``,
    ``last_episode_counts`` (episodes per candidate), ``last_returns`` ((N, episodes) float64
    returns, NaN for episodes a raced-out candidate did not play), ``last_success_rates`` ((N,)
    float64 fractions of each candidate's episodes whose last ``info["is_success"]`` was true, the
    convention of gymnasium-robotics; ``None`` when no episode's info had the key), ``last_seconds``;
    and the
    running totals ``total_env_steps``, ``total_episodes``, ``total_seconds``. With workers,
    ``last_worker_cpu_seconds`` holds each worker's CPU time for its last batch of episodes.
    With ``keep_transitions``, ``last_transitions`` lists the last call's episodes (each knows
    its ``candidate`` row and ``episode`` index); ``episodes_of(row)`` selects one candidate's.
    """

    def __init__(
        self,
        policy: nn.Module,
        make_env: Callable[[], Any],
        *,
        episodes: int = 3,
        obs_normalizer: ObsNormalizer | None = None,
        seed: int = 0,
        workers: int = 1,
        max_episode_steps: int | None = None,
        racing: bool = False,
        racing_eta: float = 3.0,
        racing_budget: float = 0.5,
        backend: str = "local",
        ray_address: str | None = None,
        ray_init_kwargs: dict[str, Any] | None = None,
        fast_path: bool | None = None,
        start_method: str = "spawn",
        log_std: torch.Tensor | None = None,
        keep_transitions: bool = False,
    ):
        _check_arguments(policy, make_env, episodes, workers, backend, racing_eta, obs_normalizer)
        if log_std is not None and not isinstance(log_std, torch.Tensor):
            raise TypeError("PolicyEvaluator: log_std must be a tensor (e.g. agent.actor_logstd)")
        self.policy = policy
        self.make_env = make_env
        self.episodes = int(episodes)
        self.obs_normalizer = obs_normalizer
        self.seed = int(seed)
        self.workers = int(workers)
        self.max_episode_steps = max_episode_steps
        self.racing = bool(racing)
        self.racing_eta = float(racing_eta)
        self.racing_budget = float(racing_budget)
        self.backend = backend
        self.ray_address = ray_address
        self.ray_init_kwargs = ray_init_kwargs
        self.fast_path = fast_path
        self.start_method = start_method
        self.log_std = log_std
        self.keep_transitions = bool(keep_transitions)
        # what the last call used, and running totals over every call
        self.last_env_steps = 0
        self.total_env_steps = 0
        self.last_episodes = 0
        self.total_episodes = 0
        self.last_seconds = 0.0
        self.total_seconds = 0.0
        self.last_episode_counts: torch.Tensor | None = None
        self.last_returns: torch.Tensor | None = None
        self.last_success_rates: torch.Tensor | None = None
        self._successes: list[tuple[np.ndarray, np.ndarray | None]] = []  # (candidate_of_pair, successes)
        self.last_worker_cpu_seconds: list[float] = []  # CPU time of each worker's last job
        self.last_transitions: list[Episode] = []  # with keep_transitions: the last call's episodes
        self._played: list[Episode] = []  # episodes of the call in progress
        self._local: RolloutEngine | None = None
        self._pool: WorkerPool | None = None

    # ---------------------------------------------------------------- public protocol
    def prepare(
        self, obs_normalizer: ObsNormalizer | None, seed: int | None = None, batch: Any = None
    ) -> None:
        """Point the evaluator at the next search (``CandidateEvaluator.prepare``).

        Args:
            obs_normalizer: the training env's observation statistics now (``None``: raw).
            seed: the first reset seed of the next call's episodes; ``None`` keeps ``seed``.
            batch: ignored (the candidates play episodes).
        """
        self.obs_normalizer = obs_normalizer
        if seed is not None:
            self.seed = int(seed)

    def __call__(self) -> float:
        """Mean return of the policy's current parameters over ``episodes`` episodes."""
        started = time.perf_counter()
        self._played, self._successes = [], []
        returns, lengths = self._play(
            {},  # every parameter is "fixed" at its current value
            np.zeros(self.episodes, dtype=np.int64),
            np.arange(self.episodes, dtype=np.int64),
        )
        self._record(lengths, started, torch.tensor([self.episodes]), returns.reshape(1, -1))
        return float(returns.mean())

    def evaluate_many(
        self, params: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Score N candidates; ``candidates[i]`` has shape ``(N, *params[i].shape)``.

        ``params`` are matched to the policy's parameters by identity; explored parameters the
        policy does not use are ignored; policy parameters not in ``params`` keep their current
        values. Returns a float64 tensor of N mean returns.
        """
        started = time.perf_counter()
        self._played, self._successes = [], []
        stacked, n = self._stack(params, candidates)
        if n == 0:
            empty = np.zeros((0, self.episodes))
            self._record(np.zeros(0, dtype=np.int64), started, torch.zeros(0, dtype=torch.long), empty)
            return torch.zeros(0, dtype=torch.float64)
        if self.racing:
            outcome = race(
                lambda candidate_of_pair, episode_of_pair: self._play(
                    stacked, candidate_of_pair, episode_of_pair
                ),
                n,
                self.episodes,
                self.racing_eta,
                self.racing_budget,
            )
            scores, counts = outcome.scores, outcome.episode_counts
            lengths, table = outcome.lengths, outcome.returns
        else:
            candidate_of_pair = np.repeat(np.arange(n), self.episodes)
            episode_of_pair = np.tile(np.arange(self.episodes), n)
            returns, lengths = self._play(stacked, candidate_of_pair, episode_of_pair)
            table = returns.reshape(n, self.episodes)
            scores = table.mean(1)
            counts = np.full(n, self.episodes)
        self._record(lengths, started, torch.as_tensor(counts), table)
        return torch.as_tensor(scores, dtype=torch.float64)

    def close(self) -> None:
        """Stop worker processes / Ray actors and close the envs."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        if self._local is not None:
            self._local.close()
            self._local = None

    def __enter__(self) -> PolicyEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def episodes_of(self, row: int) -> list[Episode]:
        """The episodes candidate ``row`` of the last call played (``keep_transitions``), in order."""
        return [episode for episode in self.last_transitions if episode.candidate == row]

    # ---------------------------------------------------------------- internals

    def _record(self, lengths: np.ndarray, started: float, counts: torch.Tensor, table: np.ndarray) -> None:
        """Update the ``last_*`` statistics and the running ``total_*``."""
        steps = int(np.asarray(lengths).sum())
        self.last_env_steps = steps
        self.total_env_steps += steps
        self.last_episodes = len(lengths)
        self.total_episodes += self.last_episodes
        self.last_episode_counts = counts
        self.last_returns = torch.as_tensor(table, dtype=torch.float64)
        self.last_success_rates = self._success_rates(np.asarray(counts))
        self.last_seconds = time.perf_counter() - started
        self.total_seconds += self.last_seconds
        self.last_transitions, self._played = self._played, []

    def _success_rates(self, counts: np.ndarray) -> torch.Tensor | None:
        """Each candidate's fraction of successful episodes in the call just played (and forget them)."""
        played, self._successes = self._successes, []
        wins = np.zeros(len(counts))
        reported = False
        for candidate_of_pair, successes in played:
            if successes is None:
                continue
            known = ~np.isnan(successes)
            reported |= bool(known.any())
            np.add.at(wins, candidate_of_pair[known], successes[known])
        if not reported:
            return None
        return torch.as_tensor(wins / np.maximum(counts, 1), dtype=torch.float64)

    def _stack(
        self, params: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor]
    ) -> tuple[dict[str, np.ndarray], int]:
        """The candidates as ``{policy parameter name: (N, *shape) float32 array}``, and N."""
        params = list(params)
        candidates = list(candidates)
        if len(params) != len(candidates):
            raise ValueError(
                f"evaluate_many: {len(params)} params but {len(candidates)} "
                "candidate tensors; pass one (N, *param.shape) tensor per param"
            )
        name_of = {id(p): name for name, p in self.policy.named_parameters()}
        stacked: dict[str, np.ndarray] = {}
        n = None
        for param, candidate in zip(params, candidates, strict=True):
            candidate = torch.as_tensor(candidate)
            if n is None:
                n = int(candidate.shape[0]) if candidate.dim() > 0 else None
            _check_candidate_shape(param, candidate, n)
            if self.log_std is not None and param is self.log_std:
                stacked[_LOG_STD] = candidate.detach().to("cpu", torch.float32).contiguous().numpy()
                continue
            name = name_of.get(id(param))
            if name is None:
                continue  # explored but unused by the policy (e.g. actor_logstd): ignored
            stacked[name] = candidate.detach().to("cpu", torch.float32).contiguous().numpy()
        if not set(stacked) - {_LOG_STD} and params:
            raise ValueError(
                "evaluate_many: none of the given params is a parameter of the evaluator's "
                "policy (matched by identity); build PolicyEvaluator with the module that owns "
                "them (e.g. agent.actor_mean) or pass explore_params=list(policy.parameters())"
            )
        return stacked, (n or 0)

    def _current_values(self, exclude: set[str]) -> dict[str, np.ndarray]:
        """Copies of the parameters not in ``exclude`` and of every buffer (sent to workers)."""
        out = {}
        for name, p in self.policy.named_parameters():
            if name not in exclude:
                out[name] = p.detach().to("cpu", torch.float32).numpy().copy()
        for name, b in self.policy.named_buffers():
            out[name] = b.detach().cpu().numpy().copy()
        return out

    def _local_engine(self) -> RolloutEngine:
        if self._local is None:
            self._local = RolloutEngine(self.policy, self.make_env, fast=self.fast_path)
        return self._local

    def _worker_pool(self) -> WorkerPool:
        if self._pool is None:
            if self.backend == "ray":
                self._pool = RayPool(
                    self.workers,
                    self.policy,
                    self.make_env,
                    self.fast_path,
                    True,
                    self.ray_address,
                    self.ray_init_kwargs,
                )
            else:
                self._pool = ProcessPool(
                    self.workers,
                    self.policy,
                    self.make_env,
                    self.fast_path,
                    True,
                    self.start_method,
                )
        return self._pool

    def _job(
        self,
        stacked: dict[str, np.ndarray],
        candidate_of_pair: np.ndarray,
        episode_of_pair: np.ndarray,
        fixed: dict[str, np.ndarray] | None,
    ) -> RolloutJob:
        """A job for the pairs given, carrying only the candidates they use (renumbered from 0)."""
        used, local_candidate = np.unique(candidate_of_pair, return_inverse=True)
        weights = {k: v[used] for k, v in stacked.items() if k != _LOG_STD}
        log_std = None
        if self.log_std is not None:
            if _LOG_STD in stacked:
                log_std = stacked[_LOG_STD][used].reshape(len(used), -1)
            else:  # not explored: every candidate uses its current value
                current = self.log_std.detach().to("cpu", torch.float32).reshape(1, -1).numpy()
                log_std = np.repeat(current, len(used), axis=0)
        return RolloutJob(
            candidate_of_pair=local_candidate,
            episode_of_pair=episode_of_pair,
            stacked=weights,
            fixed=fixed,
            normalizer=self.obs_normalizer.state_dict() if self.obs_normalizer is not None else None,
            seed=self.seed,
            max_steps=self.max_episode_steps,
            log_std=log_std,
            keep_transitions=self.keep_transitions,
        )

    def _play(
        self, stacked: dict[str, np.ndarray], candidate_of_pair: np.ndarray, episode_of_pair: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Play the (candidate_of_pair[j], episode_of_pair[j]) pairs; per-pair returns and lengths."""
        if not stacked:
            # score the current parameters: stack them as a single candidate
            stacked = {
                name: p.detach().to("cpu", torch.float32).numpy()[None].copy()
                for name, p in self.policy.named_parameters()
            }
        if self.backend != "ray" and self.workers <= 1:
            result = self._local_engine().run(self._job(stacked, candidate_of_pair, episode_of_pair, None))
            self._keep(result.episodes, candidate_of_pair)
            self._successes.append((np.asarray(candidate_of_pair), result.successes))
            return result.returns, result.lengths
        return self._play_on_workers(stacked, candidate_of_pair, episode_of_pair)

    def _keep(self, episodes: list[Episode] | None, candidate_of_pair: np.ndarray) -> None:
        """Keep a job's episodes, numbered by the caller's candidate rows (jobs renumber them)."""
        for episode, candidate in zip(episodes or (), candidate_of_pair, strict=False):
            episode.candidate = int(candidate)
            self._played.append(episode)

    def _play_on_workers(
        self, stacked: dict[str, np.ndarray], candidate_of_pair: np.ndarray, episode_of_pair: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        fixed = self._current_values(set(stacked) - {_LOG_STD})
        num_pairs = len(candidate_of_pair)
        num_workers = min(self.workers, num_pairs)
        # round-robin over (candidate, episode) pairs: neighbouring candidates (often similar,
        # e.g. snapshots of one ESA agent) and episodes of one seed land on different workers
        shares = [np.arange(w, num_pairs, num_workers) for w in range(num_workers)]
        jobs = [self._job(stacked, candidate_of_pair[s], episode_of_pair[s], fixed) for s in shares]
        results = self._worker_pool().map(jobs)
        returns = np.zeros(num_pairs, dtype=np.float64)
        lengths = np.zeros(num_pairs, dtype=np.int64)
        by_pair: list[Episode | None] = [None] * num_pairs
        for share, result in zip(shares, results, strict=True):
            returns[share] = result.returns
            lengths[share] = result.lengths
            self._successes.append((np.asarray(candidate_of_pair[share]), result.successes))
            for j, episode in zip(share, result.episodes or (), strict=False):
                by_pair[j] = episode
        if self.keep_transitions:
            self._keep([e for e in by_pair if e is not None], candidate_of_pair)
        self.last_worker_cpu_seconds = [float(r.cpu_seconds) for r in results]
        return returns, lengths


_LOG_STD = "<log_std>"  # the candidates' log_std travel with the stacked weights under this key


def _check_arguments(
    policy: Any,
    make_env: Any,
    episodes: int,
    workers: int,
    backend: str,
    racing_eta: float,
    obs_normalizer: Any,
) -> None:
    if not isinstance(policy, nn.Module):
        raise TypeError("PolicyEvaluator: policy must be an nn.Module (e.g. agent.actor_mean)")
    if not callable(make_env):
        raise TypeError("PolicyEvaluator: make_env must be a zero-arg callable building an env")
    if episodes < 1:
        raise ValueError("PolicyEvaluator: episodes must be >= 1")
    if workers < 1:
        raise ValueError("PolicyEvaluator: workers must be >= 1")
    if backend not in ("local", "ray"):
        raise ValueError("PolicyEvaluator: backend must be 'local' or 'ray'")
    if racing_eta <= 1:
        raise ValueError("PolicyEvaluator: racing_eta must be > 1")
    if obs_normalizer is not None and not isinstance(obs_normalizer, ObsNormalizer):
        raise TypeError("obs_normalizer must be an ObsNormalizer (ObsNormalizer.from_env(env))")


def _check_candidate_shape(param: torch.Tensor, candidate: torch.Tensor, n: int | None) -> None:
    if candidate.dim() != param.dim() + 1 or tuple(candidate.shape[1:]) != tuple(param.shape):
        raise ValueError(
            f"evaluate_many: candidate tensor of shape {tuple(candidate.shape)} "
            f"does not match param of shape {tuple(param.shape)}; expected "
            f"(N, {', '.join(map(str, param.shape))})"
        )
    if int(candidate.shape[0]) != n:
        raise ValueError(
            "evaluate_many: all candidate tensors must have the same N "
            f"(got {n} and {int(candidate.shape[0])})"
        )
