"""The plain scripts (the files a user copies) and their research variants (the benchmarks' files).

A research variant is its plain script plus options that change or measure the training loop (the
paper's metric, reused candidate episodes, scoring on the next batch, the selection audit, TRPO's
truncation bootstrap). With none of them set the two must give the same run, bit for bit: the
benchmarks' results then speak for the file a user copies. And a plain script must not accept a
research flag it would ignore.
"""

import subprocess
import sys

import pytest

from tests.conftest import HANG_GUARD_S, ROOT, ScriptUnderTest

pytestmark = pytest.mark.slow  # runs the scripts

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")
pytest.importorskip("tyro")
pytest.importorskip("tensorboard")

BASELINES = ROOT / "single_file_baselines"
COMMON = [
    "--env-id", "Hopper-v5", "--max-episode-steps", "50", "--num-steps", "64", "--explore-every", "2",
    "--esa-steps", "4", "--eval-episodes", "1", "--heldout-episodes", "2", "--eval-every", "3", "--quiet",
    "--total-timesteps", "1536", "--seed", "3",
]  # fmt: skip
TINY = {
    # 63 / 4 does not divide: the plain script's minibatches must be the research variant's
    "ppo_continuous_action": [*COMMON, "--num-minibatches", "4", "--update-epochs", "2", "--num-steps", "63"],
    "trpo_continuous_action": [*COMMON, "--n-critic-updates", "2", "--critic-minibatch-size", "20"],
}
RESEARCH_FLAGS = {
    "ppo_continuous_action": [
        "--paper-metric-every",
        "--reuse-candidate-rollouts",
        "--selection-truth-episodes",
    ],
    "trpo_continuous_action": [
        "--paper-metric-every",
        "--bootstrap-truncation",
        "--selection-truth-episodes",
    ],
}


def measures_time(tag):  # wall-clock time differs between any two runs
    return tag == "charts/SPS" or "seconds" in tag


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_plain_script_and_its_research_variant_give_the_same_run(name, tmp_path_factory):
    # with ExploRLer: the wrapped optimizer, anchors, searches, commits and the plain PPO/TRPO update
    plain = ScriptUnderTest(BASELINES / f"{name}.py", TINY[name], tmp_path_factory).train("plain")
    variant = ScriptUnderTest(BASELINES / f"{name}_research.py", TINY[name], tmp_path_factory).train(
        "research"
    )
    assert set(plain.scalars) == set(variant.scalars)
    assert len(plain.values("explorler/best_score")) >= 2  # searches ran and were compared
    assert 1 in plain.values("explorler/committed")  # and one moved the policy
    for tag in sorted(tag for tag in plain.scalars if not measures_time(tag)):
        assert plain.scalars[tag] == variant.scalars[tag], tag


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_plain_script_refuses_the_research_flags(name, tmp_path):
    for flag in RESEARCH_FLAGS[name]:
        proc = subprocess.run(
            [sys.executable, str(BASELINES / f"{name}.py"), flag, "1"],
            cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False,
        )  # fmt: skip
        assert proc.returncode != 0 and "Unrecognized" in proc.stderr + proc.stdout, flag
    helped = subprocess.run(
        [sys.executable, str(BASELINES / f"{name}_research.py"), "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S, check=True,
    ).stdout  # fmt: skip
    for flag in RESEARCH_FLAGS[name]:
        assert flag in helped, flag


def test_trpos_truncation_bootstrap_changes_the_run(tmp_path_factory):
    # Hopper capped at 50 steps: the untrained hopper sometimes survives to the cap (a truncation)
    name = "trpo_continuous_action"
    research = ScriptUnderTest(BASELINES / f"{name}_research.py", TINY[name], tmp_path_factory)
    short = ["--no-explorler", "--total-timesteps", "640"]
    plain = research.train("plain", *short)
    bootstrapped = research.train("bootstrapped", *short, "--bootstrap-truncation")
    assert plain.scalars["losses/value_loss"] != bootstrapped.scalars["losses/value_loss"]
