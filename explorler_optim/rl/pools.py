"""Persistent pools of rollout engines: worker processes (``ProcessPool``) or Ray actors (``RayPool``).

Each worker builds one ``RolloutEngine`` at start and keeps its envs between calls; ``map`` sends
job ``i`` to worker ``i`` and returns the results in order. Ray is imported only by ``RayPool``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import multiprocessing as mp
import pickle
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

import torch
from torch import nn

from explorler_optim.extras import install_hint
from explorler_optim.rl.rollout import RolloutEngine, RolloutJob, RolloutResult

__all__ = ["ProcessPool", "RayPool", "WorkerPool"]

# what a worker process sends back: (status, payload, call id); status is "ready", "ok" or "error"
Reply = tuple[str, Any, int | None]


class WorkerPool(Protocol):
    def map(self, jobs: list[RolloutJob]) -> list[RolloutResult]: ...

    def close(self) -> None: ...


def cpu_copy(policy: nn.Module) -> nn.Module:
    """Workers run on CPU: ship a CPU copy of a policy that lives on another device."""
    if all(t.device.type == "cpu" for t in (*policy.parameters(), *policy.buffers())):
        return policy
    return copy.deepcopy(policy).cpu()


def _dumps(obj: Any, what: str) -> bytes:
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


def _worker_main(conn: Connection, payload: bytes, num_threads: int) -> None:
    """A worker process: build the engine, then run jobs until told to stop (``None``)."""
    # Ctrl-C reaches the whole process group: the parent handles it and closes the pool, so a
    # worker must neither die mid-job nor print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(num_threads)
    try:
        policy, make_env, fast, peel = pickle.loads(payload)
        engine = RolloutEngine(policy, make_env, fast=fast, peel=peel)
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
            conn.send(("ok", engine.run(job), job.call_id))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", traceback.format_exc() or repr(exc), job.call_id))
    engine.close()
    conn.close()


class ProcessPool:
    """``n`` persistent worker processes, each with its own ``RolloutEngine``, one thread each."""

    def __init__(
        self,
        n: int,
        policy: nn.Module,
        make_env: Callable[[], Any],
        fast: bool | None,
        peel: bool,
        start_method: str = "spawn",
    ):
        self._call_id = 0
        context: Any = mp.get_context(start_method)
        payload = _dumps((cpu_copy(policy), make_env, fast, peel), "the policy / make_env")
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        for _ in range(n):
            parent, child = context.Pipe()
            proc = context.Process(target=_worker_main, args=(child, payload, 1), daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        for i in range(n):
            status, message, _ = self._recv(i)
            if status != "ready":
                self.close()
                raise RuntimeError(f"PolicyEvaluator worker {i} failed to start: {message}")

    def map(self, jobs: list[RolloutJob]) -> list[RolloutResult]:
        self._call_id += 1
        for i, job in enumerate(jobs):
            self.conns[i].send(dataclasses.replace(job, call_id=self._call_id))
        results, errors = [], []
        for i in range(len(jobs)):  # read every reply, so no stale answer is left in a pipe
            status, result = self._reply_to_this_call(i)
            if status != "ok":
                errors.append(f"PolicyEvaluator worker {i} failed:\n{result}")
            results.append(result)
        if errors:
            raise RuntimeError("\n".join(errors))
        return results

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.close()
        self.procs, self.conns = [], []

    def _reply_to_this_call(self, i: int) -> tuple[str, Any]:
        while True:  # skip replies to an earlier, interrupted call
            status, result, call_id = self._recv(i)
            if call_id == self._call_id:
                return status, result

    def _recv(self, i: int, timeout: float | None = None) -> Reply:
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


class RayPool:
    """``n`` Ray actors (one CPU each), each with its own ``RolloutEngine``."""

    def __init__(
        self,
        n: int,
        policy: nn.Module,
        make_env: Callable[[], Any],
        fast: bool | None,
        peel: bool,
        address: str | None,
        init_kwargs: dict[str, Any] | None,
    ):
        try:
            import ray
        except ImportError as exc:
            raise ImportError(f"PolicyEvaluator(backend='ray') needs Ray: {install_hint('ray')}") from exc
        self.ray = ray
        if not ray.is_initialized():
            kwargs = dict(init_kwargs or {})
            if address is not None:
                kwargs["address"] = address
            kwargs.setdefault("include_dashboard", False)
            kwargs.setdefault("log_to_driver", False)
            ray.init(**kwargs)
        actor_cls: Any = ray.remote(num_cpus=1)(RayWorker)
        policy = cpu_copy(policy)
        self.actors = [actor_cls.remote(policy, make_env, fast, peel) for _ in range(n)]

    def map(self, jobs: list[RolloutJob]) -> list[RolloutResult]:
        refs = [actor.run.remote(job) for actor, job in zip(self.actors, jobs, strict=False)]
        return self.ray.get(refs)

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        self.actors = []


class RayWorker:
    """The Ray actor: one thread, one ``RolloutEngine``."""

    def __init__(self, policy: nn.Module, make_env: Callable[[], Any], fast: bool | None, peel: bool):
        torch.set_num_threads(1)
        self.engine = RolloutEngine(policy, make_env, fast=fast, peel=peel)

    def run(self, job: RolloutJob) -> RolloutResult:
        return self.engine.run(job)
