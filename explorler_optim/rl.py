"""Fast, fair scoring of candidate policies for ExploRLer (issue 5).

``PolicyEvaluator`` implements both evaluation protocols of ``ExploRLerOptimizer.explore()``:

* ``ev()`` scores the policy's parameters as they are loaded now;
* ``ev.evaluate_many(params, candidates)`` scores N candidate parameter sets at once.

Every call runs all (candidate, episode) pairs together: one gymnasium env per pair (envs are
built once and kept in a pool), one batched forward pass per step for every live candidate
(stacked weights, no copying into the module), and only live envs are stepped. With
``workers > 1`` the pairs are spread over persistent worker processes; with ``backend="ray"``
over Ray actors. Episode ``k`` of every candidate resets with seed ``seed + k`` (common random
numbers), so candidates are compared on the same starts.

With ``racing=True`` candidates are raced (successive halving): every candidate plays one
episode, the best ``1/racing_eta`` play another, and so on, until the survivors have played
``episodes`` episodes (or one survivor is left), within ``racing_budget`` (default half) of the
exhaustive cost. The score of a candidate eliminated early is its mean return over the episodes
it played, capped just below the best finalist's score, so the winner (the argmax) is always a
candidate that played the most episodes. See ``racing_schedule`` and ``last_episode_counts``.

Importing this module imports torch and numpy only; gymnasium is imported when envs are
stepped, Ray only when ``backend="ray"`` is used.
"""

from __future__ import annotations

import contextlib
import copy
import math
import multiprocessing as mp
import pickle
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ObsNormalizer", "PolicyEvaluator", "racing_schedule"]


# --------------------------------------------------------------------------------------------
# Observation normalisation
# --------------------------------------------------------------------------------------------


class ObsNormalizer:
    """Frozen observation normalisation: ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)``.

    The statistics are copied at construction and never updated by evaluation; refresh them by
    building a new normaliser (``ObsNormalizer.from_env(env)``) and assigning it to
    ``PolicyEvaluator.obs_normalizer``. ``clip=None`` disables clipping.
    """

    def __init__(self, mean, var, clip: float | None = 10.0, epsilon: float = 1e-8):
        # keep the statistics' dtype (float32 for float32 observation spaces): the arithmetic
        # then matches gymnasium's NormalizeObservation bit for bit
        self.mean = _float_array(mean)
        self.var = _float_array(var)
        if self.mean.shape != self.var.shape:
            raise ValueError(f"ObsNormalizer: mean shape {self.mean.shape} != var shape {self.var.shape}")
        self.clip = None if clip is None else float(clip)
        self.epsilon = float(epsilon)
        self._std = np.sqrt(self.var + self.epsilon)

    @classmethod
    def from_env(cls, env, clip: float | None = 10.0, epsilon: float | None = None):
        """Copy the statistics of the first ``NormalizeObservation`` wrapper found in ``env``.

        ``env`` may be a wrapped gymnasium env (e.g. ``envs.envs[0]`` of a SyncVectorEnv) or a
        vector env wrapped by ``gymnasium.wrappers.vector.NormalizeObservation``. The wrapper's
        own epsilon is used unless ``epsilon`` is given.
        """
        wrapper = _find_normalize_wrapper(env)
        if wrapper is None:
            raise ValueError(
                "ObsNormalizer.from_env: no NormalizeObservation wrapper (an object with "
                "`obs_rms`) found in the wrapper chain of the env; pass the training env "
                "(e.g. envs.envs[0]) or build ObsNormalizer(mean, var) directly"
            )
        eps = float(getattr(wrapper, "epsilon", 1e-8)) if epsilon is None else float(epsilon)
        return cls(wrapper.obs_rms.mean, wrapper.obs_rms.var, clip=clip, epsilon=eps)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Normalise a (batch of) raw observation(s); returns float32."""
        x = np.float32((np.asarray(obs) - self.mean) / self._std)
        if self.clip is not None:
            x = np.clip(x, -self.clip, self.clip)
        return np.asarray(x, dtype=np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.copy(),
            "var": self.var.copy(),
            "clip": self.clip,
            "epsilon": self.epsilon,
        }

    @classmethod
    def from_state_dict(cls, sd: dict[str, Any]) -> ObsNormalizer:
        return cls(sd["mean"], sd["var"], clip=sd["clip"], epsilon=sd["epsilon"])

    def __repr__(self) -> str:
        return f"ObsNormalizer(shape={self.mean.shape}, clip={self.clip}, epsilon={self.epsilon})"


def _float_array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.array(x, copy=True)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x


def _find_normalize_wrapper(env):
    seen = 0
    e = env
    while e is not None and seen < 100:
        if hasattr(e, "obs_rms") and hasattr(e.obs_rms, "mean") and hasattr(e.obs_rms, "var"):
            return e
        e = getattr(e, "env", None)
        seen += 1
    return None


# --------------------------------------------------------------------------------------------
# Batched forward pass over stacked candidate weights
# --------------------------------------------------------------------------------------------

_ELEMENTWISE = (
    nn.Tanh,
    nn.ReLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.Identity,
    nn.Softsign,
    nn.Hardtanh,
    nn.Mish,
    nn.Softplus,
    nn.ReLU6,
    nn.SELU,
    nn.CELU,
    nn.Tanhshrink,
)


def _sequential_plan(policy: nn.Module):
    """Return [("linear", weight_name, bias_name|None) | ("act", module)] or None."""
    if not isinstance(policy, nn.Sequential):
        return None
    if any(True for _ in policy.buffers()):
        return None
    plan = []
    for name, mod in policy.named_children():
        if type(mod) is nn.Linear:
            plan.append(("linear", f"{name}.weight", f"{name}.bias" if mod.bias is not None else None))
        elif type(mod) in _ELEMENTWISE:
            plan.append(("act", mod))
        else:
            return None
    return plan


class _BatchedPolicy:
    """Evaluates a policy for n candidates at once: obs (n, S, d) -> actions (n, S, a).

    ``stacked`` maps parameter names to (n, *shape) float32 tensors; every other parameter and
    buffer of the module keeps its current value. ``nn.Sequential`` stacks of ``nn.Linear`` and
    elementwise activations use ``baddbmm``; anything else uses ``torch.func.functional_call``
    under ``torch.vmap``.
    """

    def __init__(self, policy: nn.Module, fast: bool | None = None):
        self.policy = policy
        plan = _sequential_plan(policy)
        self.plan = plan if (fast is None or fast) else None
        if fast and plan is None:
            raise ValueError("fast path requested but policy is not Sequential(Linear/activation)")

    def __call__(self, stacked: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        if self.plan is not None:
            return self._fast(stacked, obs)
        return self._vmap(stacked, obs)

    def _fast(self, stacked, obs):
        x = obs
        params = dict(self.policy.named_parameters())
        for step in self.plan:
            if step[0] == "act":
                x = step[1](x)
                continue
            _, wname, bname = step
            w = stacked.get(wname)
            b = stacked.get(bname) if bname is not None else None
            if w is not None:
                wt = w.transpose(1, 2)
                if b is None:
                    b = params[bname] if bname is not None else None
                if b is None:
                    x = torch.bmm(x, wt)
                elif b.dim() == 2:
                    x = torch.baddbmm(b.unsqueeze(1), x, wt)
                else:
                    x = torch.baddbmm(b.view(1, 1, -1), x, wt)
            else:
                x = torch.matmul(x, params[wname].t())
                if bname is not None:
                    bb = b if b is not None else params[bname]
                    x = x + (bb.unsqueeze(1) if bb.dim() == 2 else bb)
        return x

    def _vmap(self, stacked, obs):
        policy = self.policy

        def one(p, o):
            return torch.func.functional_call(policy, p, (o,), strict=False)

        return torch.vmap(one, in_dims=(0, 0))(stacked, obs)


# --------------------------------------------------------------------------------------------
# The rollout engine (runs in the main process, in worker processes and in Ray actors)
# --------------------------------------------------------------------------------------------

_TRIVIAL_WRAPPERS = ("TimeLimit", "OrderEnforcing", "PassiveEnvChecker")


def _peel(env):
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


class _Rollout:
    """Holds a pool of envs and a policy; runs (candidate, episode) pairs in one batched loop."""

    def __init__(
        self,
        policy: nn.Module,
        make_env: Callable[[], Any],
        fast: bool | None = None,
        peel: bool = True,
    ):
        self.policy = policy
        self.make_env = make_env
        self.batched = _BatchedPolicy(policy, fast=fast)
        self.peel = peel
        self.pool: list[tuple[Any, int | None]] = []
        self._space = None

    def _env(self, j: int):
        while len(self.pool) <= j:
            env = self.make_env()
            if self._space is None:
                self._space = env.action_space
            self.pool.append(_peel(env) if self.peel else (env, None))
        return self.pool[j]

    def close(self):
        for env, _ in self.pool:
            with contextlib.suppress(Exception):  # closing is best effort
                env.close()
        self.pool = []

    def _actions(self, out: np.ndarray) -> np.ndarray:
        space = self._space
        from gymnasium import spaces  # local: gymnasium is only needed when envs exist

        if isinstance(space, spaces.Box):
            out = out.reshape(out.shape[:-1] + space.shape) if space.shape else out
            return np.clip(out, space.low, space.high).astype(space.dtype, copy=False)
        if isinstance(space, spaces.Discrete):
            if out.shape[-1] == space.n:
                return out.argmax(-1) + space.start
            return np.clip(np.rint(out[..., 0]), space.start, space.start + space.n - 1).astype(np.int64)
        return out

    def run(self, job: dict[str, Any]) -> dict[str, np.ndarray]:
        """job: cand (P,) local candidate index per pair, ep (P,) episode index per pair,
        stacked {name: (n, ...) array}, fixed {name: array} (current values of the others),
        norm (ObsNormalizer state or None), seed, max_steps."""
        cpu0 = time.process_time()
        cand = np.asarray(job["cand"], dtype=np.int64)
        ep = np.asarray(job["ep"], dtype=np.int64)
        npairs = len(cand)
        returns = np.zeros(npairs, dtype=np.float64)
        lengths = np.zeros(npairs, dtype=np.int64)
        if npairs == 0:
            return {"returns": returns, "lengths": lengths}
        # run the forward pass where the policy lives (CPU in workers; CUDA is fine locally)
        dev = next(iter(self.policy.parameters()), torch.empty(0)).device
        stacked = {k: torch.as_tensor(v, dtype=torch.float32, device=dev) for k, v in job["stacked"].items()}
        fixed = job.get("fixed")
        if fixed:
            with torch.no_grad():
                named = dict(self.policy.named_parameters())
                named.update(dict(self.policy.named_buffers()))
                for k, v in fixed.items():
                    named[k].copy_(torch.as_tensor(v, device=named[k].device))
        norm = job.get("norm")
        normalizer = ObsNormalizer.from_state_dict(norm) if norm is not None else None
        seed = int(job["seed"])
        max_steps = job.get("max_steps")

        # slot layout: candidate c's pairs occupy slots 0..m_c-1 of row c
        ncand = int(cand.max()) + 1
        slot = np.zeros(npairs, dtype=np.int64)
        counts = np.zeros(ncand, dtype=np.int64)
        for j in range(npairs):
            slot[j] = counts[cand[j]]
            counts[cand[j]] += 1
        nslots = int(counts.max())

        envs = [self._env(j) for j in range(npairs)]
        limits = np.array(
            [
                min(x for x in (lim, max_steps) if x is not None)
                if (lim is not None or max_steps is not None)
                else -1
                for _, lim in envs
            ],
            dtype=np.int64,
        )
        obs0 = []
        for j in range(npairs):
            o, _ = envs[j][0].reset(seed=seed + int(ep[j]))
            obs0.append(np.asarray(o))
        obs_raw = np.stack(obs0)
        obs_shape = obs_raw.shape[1:]
        live = np.ones(npairs, dtype=bool)
        # a limit of 0 steps means an empty episode
        live &= limits != 0

        with torch.inference_mode():
            buf = torch.zeros((ncand, nslots) + obs_shape, dtype=torch.float32, device=dev)
            active_key = None
            sub = stacked
            rows = None
            while live.any():
                idx = np.flatnonzero(live)
                live_c = np.unique(cand[idx])
                key = live_c.tobytes()
                if key != active_key:  # the set of live candidates changed: re-slice weights
                    active_key = key
                    if len(live_c) == ncand:
                        sub, rows = stacked, None
                    else:
                        t = torch.as_tensor(live_c, device=dev)
                        sub = {k: v.index_select(0, t) for k, v in stacked.items()}
                        rows = np.full(ncand, -1, dtype=np.int64)
                        rows[live_c] = np.arange(len(live_c))
                        buf = torch.zeros((len(live_c), nslots) + obs_shape, dtype=torch.float32, device=dev)
                x = obs_raw[idx]
                x = normalizer(x) if normalizer is not None else x.astype(np.float32)
                r_idx = cand[idx] if rows is None else rows[cand[idx]]
                ri = torch.as_tensor(r_idx, device=dev)
                si = torch.as_tensor(slot[idx], device=dev)
                buf[ri, si] = torch.from_numpy(x).to(dev)
                out = self.batched(sub, buf)[ri, si].cpu().numpy()
                acts = self._actions(out)
                for i, j in enumerate(idx):
                    o, r, term, trunc, _ = envs[j][0].step(acts[i])
                    returns[j] += float(r)
                    lengths[j] += 1
                    if term or trunc or lengths[j] == limits[j]:
                        live[j] = False
                    else:
                        obs_raw[j] = o
        return {
            "returns": returns,
            "lengths": lengths,
            "cpu_seconds": time.process_time() - cpu0,
        }


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------


def _cpu_copy(policy: nn.Module) -> nn.Module:
    """Workers run on CPU: ship a CPU copy of a policy that lives on another device."""
    if all(t.device.type == "cpu" for t in (*policy.parameters(), *policy.buffers())):
        return policy
    return copy.deepcopy(policy).cpu()


def _dumps(obj, what: str) -> bytes:
    try:
        return pickle.dumps(obj)
    except Exception as exc:  # noqa: BLE001
        try:
            import cloudpickle
        except ImportError:
            raise TypeError(
                f"PolicyEvaluator(workers>1): cannot pickle {what} ({exc}); use a module-level "
                "function or functools.partial(gym.make, 'Env-v5') instead of a lambda/closure, "
                "or `pip install cloudpickle`"
            ) from exc
        return cloudpickle.dumps(obj)


def _worker_main(conn, payload: bytes, num_threads: int):
    # Ctrl-C reaches the whole process group: the parent handles it and closes the pool, so a
    # worker must neither die mid-job nor print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(num_threads)
    try:
        policy, make_env, fast, peel = pickle.loads(payload)
        engine = _Rollout(policy, make_env, fast=fast, peel=peel)
        conn.send(("ready", None, None))
    except BaseException as exc:  # noqa: BLE001
        conn.send(("error", repr(exc), None))
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        try:
            conn.send(("ok", engine.run(job), job.get("_id")))
        except BaseException as exc:  # noqa: BLE001
            import traceback

            conn.send(("error", traceback.format_exc() or repr(exc), job.get("_id")))
    engine.close()
    conn.close()


class _ProcessPool:
    def __init__(self, n: int, policy, make_env, fast, peel, start_method: str = "spawn"):
        self._next_id = 0
        ctx = mp.get_context(start_method)
        payload = _dumps((_cpu_copy(policy), make_env, fast, peel), "the policy / make_env")
        self.procs, self.conns = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, payload, 1), daemon=True)
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)
        for i in range(n):
            status, msg, _ = self._recv(i)
            if status != "ready":
                self.close()
                raise RuntimeError(f"PolicyEvaluator worker {i} failed to start: {msg}")

    def _recv(self, i: int, timeout: float | None = None):
        conn, proc = self.conns[i], self.procs[i]
        t0 = time.monotonic()
        while not conn.poll(0.05):
            if not proc.is_alive():
                raise RuntimeError(f"PolicyEvaluator worker {i} died (exit code {proc.exitcode})")
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise TimeoutError(f"PolicyEvaluator worker {i} did not answer in {timeout} s")
        try:
            return conn.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError(
                f"PolicyEvaluator worker {i} exited unexpectedly; with the 'spawn' start method "
                "the main script must create the evaluator under `if __name__ == '__main__':`"
            ) from exc

    def map(self, jobs: list[dict]) -> list[dict]:
        self._next_id += 1
        used = []
        for i, job in enumerate(jobs):
            self.conns[i].send(dict(job, _id=self._next_id))
            used.append(i)
        out, errors = [], []
        for i in used:  # read every reply, so no stale answer is left in a pipe
            while True:  # skip replies to an earlier, interrupted call
                status, res, jid = self._recv(i)
                if jid == self._next_id:
                    break
            if status != "ok":
                errors.append(f"PolicyEvaluator worker {i} failed:\n{res}")
            out.append(res)
        if errors:
            raise RuntimeError("\n".join(errors))
        return out

    def close(self):
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.close()
        self.procs, self.conns = [], []


class _RayPool:
    def __init__(self, n: int, policy, make_env, fast, peel, address: str | None, init_kwargs: dict | None):
        try:
            import ray
        except ImportError as exc:
            raise ImportError("PolicyEvaluator(backend='ray') needs Ray: `pip install ray`") from exc
        self.ray = ray
        if not ray.is_initialized():
            kw = dict(init_kwargs or {})
            if address is not None:
                kw["address"] = address
            kw.setdefault("include_dashboard", False)
            kw.setdefault("log_to_driver", False)
            ray.init(**kw)
        actor_cls = ray.remote(num_cpus=1)(_RayWorker)
        policy = _cpu_copy(policy)
        self.actors = [actor_cls.remote(policy, make_env, fast, peel) for _ in range(n)]

    def map(self, jobs: list[dict]) -> list[dict]:
        refs = [a.run.remote(job) for a, job in zip(self.actors, jobs, strict=False)]
        return self.ray.get(refs)

    def close(self):
        for a in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(a)
        self.actors = []


class _RayWorker:
    def __init__(self, policy, make_env, fast, peel):
        torch.set_num_threads(1)
        self.engine = _Rollout(policy, make_env, fast=fast, peel=peel)

    def run(self, job):
        return self.engine.run(job)


# --------------------------------------------------------------------------------------------
# Racing schedule
# --------------------------------------------------------------------------------------------


def racing_schedule(
    n: int, episodes: int, eta: float = 3.0, budget: float = 0.5, min_survivors: int = 1
) -> list[tuple[int, int]]:
    """Successive-halving schedule: list of (survivors, total episodes per survivor) per rung.

    Rung 0 gives every candidate one episode; rung k keeps the best ``ceil(n_{k-1} / eta)``
    (at least ``min_survivors``) and gives them one more episode; the last rung tops the
    survivors up to ``episodes``. Racing stops early once one candidate is left. If the
    schedule would spend more than ``budget * n * episodes`` episodes, ``eta`` is raised until
    it fits (or only one survivor is left after rung 0). With ``episodes <= 1`` or ``n <= 2`` the
    schedule is exhaustive: ``[(n, episodes)]``.
    """
    if episodes <= 1 or n <= 2:
        return [(n, episodes)]
    full = n * episodes
    e = float(eta)
    while True:
        sched = [(n, 1)]
        survivors = n
        while sched[-1][1] < episodes and survivors > 1:
            survivors = max(min_survivors, math.ceil(survivors / e), 1)
            survivors = min(survivors, sched[-1][0])
            sched.append((survivors, sched[-1][1] + 1))
        if sched[-1][1] < episodes and sched[-1][0] == 1:
            pass  # one candidate left: its score stands on the episodes it played
        elif sched[-1][1] < episodes:
            sched[-1] = (sched[-1][0], episodes)
        cost = _schedule_cost(sched)
        if cost <= budget * full or sched[1][0] <= 1 or e > n:
            return sched
        e += 0.5


def _schedule_cost(sched: list[tuple[int, int]]) -> int:
    cost, prev = 0, 0
    for surv, eps in sched:
        cost += surv * (eps - prev)
        prev = eps
    return cost


# --------------------------------------------------------------------------------------------
# The evaluator
# --------------------------------------------------------------------------------------------


class PolicyEvaluator:
    """Score policies (or N candidate parameter sets of one policy) by deterministic rollouts.

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
            Ray is already initialised. ``ray_init_kwargs``: extra ``ray.init`` arguments.
        fast_path: None = use the ``baddbmm`` path for Sequential(Linear/activation) policies and
            ``torch.func.functional_call`` + ``vmap`` otherwise; False forces vmap.
        start_method: multiprocessing start method for workers ("spawn" or "forkserver").

    After each call: ``last_env_steps`` (env steps used), ``last_episodes``,
    ``last_episode_counts`` (episodes per candidate), ``last_returns`` ((N, episodes) float64
    returns, NaN for episodes a raced-out candidate did not play), ``last_seconds``; and the
    running totals ``total_env_steps``, ``total_episodes``, ``total_seconds``. With workers,
    ``last_worker_cpu_seconds`` holds each worker's CPU time for its last batch of episodes.
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
        ray_init_kwargs: dict | None = None,
        fast_path: bool | None = None,
        start_method: str = "spawn",
    ):
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
        self.last_env_steps = 0
        self.total_env_steps = 0
        self.last_episodes = 0
        self.total_episodes = 0
        self.last_seconds = 0.0
        self.total_seconds = 0.0
        self.last_episode_counts: torch.Tensor | None = None
        self.last_returns: torch.Tensor | None = None
        self.last_worker_cpu_seconds: list[float] = []  # CPU time of each worker's last job
        self._local: _Rollout | None = None
        self._pool = None

    # ---------------------------------------------------------------- public protocol

    def __call__(self) -> float:
        """Mean return of the policy's current parameters over ``episodes`` episodes."""
        t0 = time.perf_counter()
        stacked = {}  # every parameter is "fixed" at its current value
        returns, lengths = self._run_pairs(
            stacked,
            1,
            np.zeros(self.episodes, dtype=np.int64),
            np.arange(self.episodes, dtype=np.int64),
        )
        self._account(lengths, t0, torch.tensor([self.episodes]), returns.reshape(1, -1))
        return float(returns.mean())

    def evaluate_many(
        self, params: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Score N candidates; ``candidates[i]`` has shape ``(N, *params[i].shape)``.

        ``params`` are matched to the policy's parameters by identity; explored parameters the
        policy does not use are ignored; policy parameters not in ``params`` keep their current
        values. Returns a float64 tensor of N mean returns.
        """
        t0 = time.perf_counter()
        stacked, n = self._stack(params, candidates)
        if n == 0:
            empty = np.zeros((0, self.episodes))
            self._account(np.zeros(0, dtype=np.int64), t0, torch.zeros(0, dtype=torch.long), empty)
            return torch.zeros(0, dtype=torch.float64)
        if self.racing:
            scores, counts, lengths, table = self._race(stacked, n)
        else:
            cand = np.repeat(np.arange(n), self.episodes)
            ep = np.tile(np.arange(self.episodes), n)
            returns, lengths = self._run_pairs(stacked, n, cand, ep)
            table = returns.reshape(n, self.episodes)
            scores = table.mean(1)
            counts = np.full(n, self.episodes)
        self._account(lengths, t0, torch.as_tensor(counts), table)
        return torch.as_tensor(scores, dtype=torch.float64)

    def close(self) -> None:
        """Stop worker processes / Ray actors and close the envs."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        if self._local is not None:
            self._local.close()
            self._local = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    # ---------------------------------------------------------------- internals

    def _account(self, lengths: np.ndarray, t0: float, counts: torch.Tensor, table: np.ndarray) -> None:
        steps = int(np.asarray(lengths).sum())
        self.last_env_steps = steps
        self.total_env_steps += steps
        self.last_episodes = len(lengths)
        self.total_episodes += self.last_episodes
        self.last_episode_counts = counts
        self.last_returns = torch.as_tensor(table, dtype=torch.float64)
        self.last_seconds = time.perf_counter() - t0
        self.total_seconds += self.last_seconds

    def _stack(self, params, candidates) -> tuple[dict[str, np.ndarray], int]:
        params = list(params)
        candidates = list(candidates)
        if len(params) != len(candidates):
            raise ValueError(
                f"evaluate_many: {len(params)} params but {len(candidates)} "
                "candidate tensors; pass one (N, *param.shape) tensor per param"
            )
        by_id = {id(p): name for name, p in self.policy.named_parameters()}
        stacked: dict[str, np.ndarray] = {}
        n = None
        for p, c in zip(params, candidates, strict=True):
            c = torch.as_tensor(c)
            if n is None:
                n = int(c.shape[0]) if c.dim() > 0 else None
            if c.dim() != p.dim() + 1 or tuple(c.shape[1:]) != tuple(p.shape):
                raise ValueError(
                    f"evaluate_many: candidate tensor of shape {tuple(c.shape)} "
                    f"does not match param of shape {tuple(p.shape)}; expected "
                    f"(N, {', '.join(map(str, p.shape))})"
                )
            if int(c.shape[0]) != n:
                raise ValueError(
                    "evaluate_many: all candidate tensors must have the same N "
                    f"(got {n} and {int(c.shape[0])})"
                )
            name = by_id.get(id(p))
            if name is None:
                continue  # explored but unused by the policy (e.g. actor_logstd): ignored
            stacked[name] = c.detach().to("cpu", torch.float32).contiguous().numpy()
        if not stacked and params:
            raise ValueError(
                "evaluate_many: none of the given params is a parameter of the evaluator's "
                "policy (matched by identity); build PolicyEvaluator with the module that owns "
                "them (e.g. agent.actor_mean) or pass explore_params=list(policy.parameters())"
            )
        return stacked, (n or 0)

    def _fixed(self, exclude: set[str]) -> dict[str, np.ndarray]:
        out = {}
        for name, p in self.policy.named_parameters():
            if name not in exclude:
                out[name] = p.detach().to("cpu", torch.float32).numpy().copy()
        for name, b in self.policy.named_buffers():
            out[name] = b.detach().cpu().numpy().copy()
        return out

    def _engine(self) -> _Rollout:
        if self._local is None:
            self._local = _Rollout(self.policy, self.make_env, fast=self.fast_path)
        return self._local

    def _remote(self):
        if self._pool is None:
            if self.backend == "ray":
                self._pool = _RayPool(
                    self.workers,
                    self.policy,
                    self.make_env,
                    self.fast_path,
                    True,
                    self.ray_address,
                    self.ray_init_kwargs,
                )
            else:
                self._pool = _ProcessPool(
                    self.workers,
                    self.policy,
                    self.make_env,
                    self.fast_path,
                    True,
                    self.start_method,
                )
        return self._pool

    def _run_pairs(
        self, stacked: dict[str, np.ndarray], n: int, cand: np.ndarray, ep: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run (cand[j], ep[j]) pairs; returns per-pair returns and lengths."""
        norm = self.obs_normalizer.state_dict() if self.obs_normalizer is not None else None
        remote = self.backend == "ray" or self.workers > 1
        if not stacked:
            # score the current parameters: stack them as a single candidate
            stacked = {
                name: p.detach().to("cpu", torch.float32).numpy()[None].copy()
                for name, p in self.policy.named_parameters()
            }
        if not remote:
            uniq, local = np.unique(cand, return_inverse=True)
            job = {
                "cand": local,
                "ep": ep,
                "stacked": {k: v[uniq] for k, v in stacked.items()},
                "fixed": None,
                "norm": norm,
                "seed": self.seed,
                "max_steps": self.max_episode_steps,
            }
            res = self._engine().run(job)
            return res["returns"], res["lengths"]
        fixed = self._fixed(set(stacked))
        npairs = len(cand)
        nw = min(self.workers, npairs)
        # round-robin over (candidate, episode) pairs: neighbouring candidates (often similar,
        # e.g. snapshots of one ESA agent) and episodes of one seed land on different workers
        shares = [np.arange(w, npairs, nw) for w in range(nw)]
        jobs = []
        for sel in shares:
            uniq, local = np.unique(cand[sel], return_inverse=True)
            jobs.append(
                {
                    "cand": local,
                    "ep": ep[sel],
                    "stacked": {k: v[uniq] for k, v in stacked.items()},
                    "fixed": fixed,
                    "norm": norm,
                    "seed": self.seed,
                    "max_steps": self.max_episode_steps,
                }
            )
        results = self._remote().map(jobs)
        returns = np.zeros(npairs, dtype=np.float64)
        lengths = np.zeros(npairs, dtype=np.int64)
        for sel, r in zip(shares, results, strict=True):
            returns[sel] = r["returns"]
            lengths[sel] = r["lengths"]
        self.last_worker_cpu_seconds = [float(r.get("cpu_seconds", 0.0)) for r in results]
        return returns, lengths

    def _race(self, stacked: dict[str, np.ndarray], n: int):
        """Successive halving. The static schedule bounds the episodes; in addition the number
        of survivors of each rung is cut so that the projected env steps (survivors' mean
        episode lengths so far) stay within ``racing_budget`` x the estimated exhaustive cost
        (``n * episodes`` x the mean episode length of rung 0), but never below 2: better
        policies often live longer, so survivors' episodes cost more than average ones."""
        sched = racing_schedule(n, self.episodes, self.racing_eta, self.racing_budget)
        sums = np.zeros(n, dtype=np.float64)
        counts = np.zeros(n, dtype=np.int64)
        steps = np.zeros(n, dtype=np.int64)
        table = np.full((n, self.episodes), np.nan)
        all_lengths = []
        alive = np.arange(n)
        prev = 0
        spent = 0
        full_estimate = None
        for k, (surv, eps) in enumerate(sched):
            if k > 0:
                means = sums[alive] / counts[alive]
                order = alive[np.argsort(-means, kind="stable")]  # ties: lower index first
                ep_len = steps / np.maximum(counts, 1)
                while surv > 2:  # keep a real final: at least 2 survivors
                    cost, cap, last = 0.0, surv, prev
                    for s2, e2 in sched[k:]:
                        cap = min(cap, s2)
                        cost += ep_len[order[:cap]].sum() * (e2 - last)
                        last = e2
                    if spent + cost <= self.racing_budget * full_estimate:
                        break
                    surv -= 1
                if surv == 1:
                    break  # one candidate left: more episodes would not change the pick
                alive = np.sort(order[:surv])
                sched = sched[:k] + [(min(s2, surv), e2) for s2, e2 in sched[k:]]
            cand = np.repeat(alive, eps - prev)
            ep = np.tile(np.arange(prev, eps), len(alive))
            returns, lengths = self._run_pairs(stacked, n, cand, ep)
            np.add.at(sums, cand, returns)
            np.add.at(counts, cand, 1)
            np.add.at(steps, cand, lengths)
            table[cand, ep] = returns
            all_lengths.append(lengths)
            spent += int(lengths.sum())
            if full_estimate is None:
                full_estimate = float(lengths.mean()) * n * self.episodes
            prev = eps
        scores = sums / np.maximum(counts, 1)
        # the winner must be a candidate that played the most episodes: an eliminated candidate
        # whose mean over fewer episodes beats the best finalist is capped just below it
        final = counts == counts.max()
        cap = np.nextafter(scores[final].max(), -np.inf)
        scores = np.where(final, scores, np.minimum(scores, cap))
        return scores, counts, np.concatenate(all_lengths), table
