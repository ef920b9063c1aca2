"""Shared fixtures: running a single-file script in a subprocess and reading its TensorBoard file.

A test module that runs a script defines ``SCRIPT`` (its path) and ``TINY`` (arguments for a
seconds-long run) and asks for the ``script`` fixture:

* ``script.train(name, *args)``: a tiny run (``TINY`` + ``args``) in a fresh directory -> ``Run``;
* ``script.train_in(cwd, *args)``: the same in ``cwd``;
* ``script.run(cwd, *args)``: the script with ``args`` only -> ``subprocess.CompletedProcess``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Subprocess timeouts only guard against hangs. A 2-core machine shared with a benchmark runs a
# tiny run several times slower than an idle one (a smoke sweep measured 728 raw Hopper steps/s
# against 5,900), so no test may use a timeout as a speed limit.
HANG_GUARD_S = 900

ROOT = Path(__file__).resolve().parent.parent

# what every script logs when ExploRLer searches
EXPLORLER_TAGS = [
    "explorler/best_score",
    "explorler/incumbent_score",
    "explorler/gain",
    "explorler/committed",
    "explorler/num_candidates",
    "explorler/distance",
    "explorler/eval_env_steps",
    "explorler/seconds",
]


class Run:
    """A finished run: its directory and the contents of its TensorBoard event file."""

    def __init__(self, cwd: Path, proc: subprocess.CompletedProcess):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        self.cwd = Path(cwd)
        self.proc = proc
        run_dirs = sorted((self.cwd / "runs").iterdir())
        assert len(run_dirs) == 1, run_dirs
        self.run_dir = run_dirs[0]
        acc = EventAccumulator(str(self.run_dir), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        self.tags = acc.Tags()
        self.scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in self.tags["scalars"]}

    def values(self, tag: str) -> list[float]:
        return [v for _, v in self.scalars[tag]]

    def steps(self, tag: str) -> list[int]:
        return [s for s, _ in self.scalars[tag]]


class ScriptUnderTest:
    """One single-file script, its tiny arguments and a place for its runs."""

    def __init__(self, path: Path, tiny: list[str], tmp_path_factory: pytest.TempPathFactory):
        self.path = path
        self.tiny = tiny
        self.tmp_path_factory = tmp_path_factory

    def run(self, cwd: Path, *args: Any, timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess:
        """Run the script with ``args`` in ``cwd`` (one thread); fail with its output if it fails."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH")] if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("MKL_NUM_THREADS", "1")
        proc = subprocess.run(
            [sys.executable, str(self.path), *map(str, args)],
            check=False,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, f"script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return proc

    def train_in(self, cwd: Path, *args: Any) -> Run:
        return Run(cwd, self.run(cwd, *self.tiny, *args))

    def train(self, name: str, *args: Any) -> Run:
        return self.train_in(self.tmp_path_factory.mktemp(name), *args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``-n 2 --dist loadgroup``, the default in pyproject.toml): a module's
    tests stay on one worker, so its module-scoped script runs are made once; and every test that
    starts Ray (``@pytest.mark.ray``) shares one worker, one at a time (a local Ray instance may find
    another one on the same machine and join it)."""
    for item in items:
        group = "ray" if item.get_closest_marker("ray") else item.module.__name__  # type: ignore[attr-defined]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="module")
def script(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ScriptUnderTest:
    """The test module's ``SCRIPT`` with its ``TINY`` arguments."""
    return ScriptUnderTest(request.module.SCRIPT, request.module.TINY, tmp_path_factory)


@pytest.fixture
def explorler_tags() -> list[str]:
    """The TensorBoard tags every script logs when ExploRLer searches."""
    return list(EXPLORLER_TAGS)
