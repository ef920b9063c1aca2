"""Box2D tasks (issue 30): BipedalWalker-v3 runs from the scripts' extra; without Box2D, a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
PPO = ROOT / "single_file_baselines" / "ppo_continuous_action.py"
TRPO = ROOT / "single_file_baselines" / "trpo_continuous_action.py"


def run_script(script: Path, cwd: Path, *args: str, pythonpath: tuple[Path, ...] = ()):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (*pythonpath, ROOT))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("script", [PPO, TRPO], ids=["ppo", "trpo"])
def test_a_missing_box2d_is_an_error_that_names_the_install_command(script, tmp_path):
    blocker = tmp_path / "blocked" / "Box2D"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named Box2D (hidden by this test)')\n")
    proc = run_script(script, tmp_path, "--env-id", "BipedalWalker-v3", pythonpath=(tmp_path / "blocked",))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "BipedalWalker-v3 needs a package that is not installed" in message
    assert 'pip install -e ".[scripts]"' in message  # from this clone (explorler_optim.extras)
    assert "Traceback" not in proc.stderr  # an answer, not a crash
    assert not (tmp_path / "runs").exists()  # nothing was built before the check


@pytest.mark.slow
def test_bipedal_walker_runs_with_explorler(tmp_path):
    # no skip: the test extra includes the scripts extra, which brings box2d and pygame
    proc = run_script(
        PPO, tmp_path, "--env-id", "BipedalWalker-v3", "--total-timesteps", "2048", "--num-envs", "2",
        "--num-steps", "256", "--num-minibatches", "2", "--update-epochs", "2", "--explore-every", "2",
        "--esa-steps", "4", "--eval-every", "2", "--heldout-episodes", "1", "--max-episode-steps", "100",
        "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "runs").iterdir())) == 1


@pytest.mark.parametrize("script", [PPO, TRPO], ids=["ppo", "trpo"])
def test_save_model_with_a_box2d_env_is_refused_at_start(script, tmp_path):
    # exact resume cannot save a b2World: the run says so before it trains, not at its first checkpoint
    proc = run_script(script, tmp_path, "--env-id", "BipedalWalker-v3", "--save-model", "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("--save-model: BipedalWalker.world is a b2World"), message
    assert "run it without --save-model" in message and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.pt"))
