"""Helpers shared by the benchmarks: provenance, atomic result files, scripts as modules, TensorBoard."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from explorler_optim import files

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions(names=("torch", "numpy", "gymnasium", "mujoco", "ray", "explorler-optim")) -> dict:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def load_script(path: Path):
    """A single-file script as a module: its functions and Args, not its main (behind ``__main__``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tensorboard_runs(root: Path):
    """A loaded ``EventAccumulator`` for each folder under ``root`` that holds TensorBoard event files.

    Folders in sorted order; every scalar event is kept (no sampling).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for directory in sorted({f.parent for f in Path(root).rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        accumulator.Reload()
        yield accumulator


def scalar_events(accumulator, tag: str) -> list:
    """The events (``step``, ``value``, ``wall_time``) of scalar ``tag``; empty when it was not logged."""
    try:
        return accumulator.Scalars(tag)
    except KeyError:
        return []


def pyplot():
    """``matplotlib.pyplot`` drawing to files (the Agg backend), or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def command_line() -> str:
    """How this process was started, as one would type it in the repository root.

    ``python -m benchmarks.sweep ...`` for a module, else the script's path relative to the
    repository (absolute when it lies elsewhere).
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        program = ["-m", spec.name.removesuffix(".__main__")]
    else:
        path = Path(sys.argv[0]).resolve()
        program = [str(path.relative_to(REPO)) if path.is_relative_to(REPO) else sys.argv[0]]
    return " ".join([Path(sys.executable).name, *program, *sys.argv[1:]])


def provenance() -> dict:
    """Command, commit, package versions, machine and date of this run."""
    return {
        "command": command_line(),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def machine_speed(env_id: str = "Hopper-v5", steps: int = 4000, seed: int = 0) -> dict | None:
    """Raw steps per second of ``env_id`` (no wrappers, fixed random actions) in this process.

    A yardstick for wall times: the same runs took up to 1.8x longer on this VM from one day to
    the next, so a sweep records how fast the machine stepped MuJoCo when it started. None when
    gymnasium or the env is not available.
    """
    try:
        import gymnasium as gym
        import numpy as np

        env = gym.make(env_id)
    except Exception:  # noqa: BLE001 - any missing piece (gymnasium, mujoco, the env) means no probe
        return None
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    actions = rng.uniform(low, high, size=(steps, *env.action_space.shape)).astype(env.action_space.dtype)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    seconds = time.perf_counter() - start
    env.close()
    return {"env_id": env_id, "steps": steps, "steps_per_second": round(steps / seconds, 1)}


# Run in the child between fork and the real program: PR_SET_PDEATHSIG (1) asks the kernel to kill it
# when the process that started it dies, then it checks that this has not already happened.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL); "
    "os.getppid() == int(sys.argv[1]) or os._exit(137); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def die_with_parent(command: list[str]) -> list[str]:
    """``command`` made to end when the process that starts it ends (Linux; elsewhere unchanged).

    A run whose sweep process or Ray worker is killed would otherwise go on alone, and a sweep
    started again (or Ray's retry of the task) would run a second copy into the same folder.
    """
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so no file is half-written."""
    files.atomic_write(path, lambda file: file.write(text.encode()))


def write_results(directory: Path, data: dict, markdown: str) -> None:
    """Store ``results.json`` (data + provenance) and ``results.md`` (markdown + provenance)."""
    meta = provenance()
    atomic_write(Path(directory) / "results.json", json.dumps({**data, "provenance": meta}, indent=2) + "\n")
    lines = [
        markdown.rstrip(),
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit: {meta['git_commit']}; packages: "
        + ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
        + "  ",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; date: {meta['date']}",
        "",
    ]
    atomic_write(Path(directory) / "results.md", "\n".join(lines))
