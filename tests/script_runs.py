"""Running a single-file script in a subprocess and reading its TensorBoard file (shared by the
PPO and TRPO script tests)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(script, cwd, *args, timeout=180):
    """Run ``script`` with ``args`` in ``cwd`` (one thread); fail with its output if it fails."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH")] if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


class Run:
    """A finished run: its directory and the contents of its TensorBoard event file."""

    def __init__(self, cwd, proc):
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

    def values(self, tag):
        return [v for _, v in self.scalars[tag]]

    def steps(self, tag):
        return [s for s, _ in self.scalars[tag]]
