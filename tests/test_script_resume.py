"""Both scripts: a killed run resumes exactly, a fork starts at its score, an audit changes nothing."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, ScriptUnderTest

pytestmark = pytest.mark.slow  # runs the scripts

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")
pytest.importorskip("tyro")
pytest.importorskip("tensorboard")

SCRIPTS = {
    "ppo": ROOT / "single_file_baselines" / "ppo_continuous_action.py",
    "trpo": ROOT / "single_file_baselines" / "trpo_continuous_action.py",
    # the benchmarks' variants: the paper's metric, reused candidate episodes, the selection audit
    "ppo-research": ROOT / "single_file_baselines" / "ppo_continuous_action_research.py",
    "trpo-research": ROOT / "single_file_baselines" / "trpo_continuous_action_research.py",
    "ppo-discrete": ROOT / "single_file_baselines" / "ppo.py",
    "sac": ROOT / "single_file_baselines" / "sac_continuous_action.py",
}
COMMON = [
    "--env-id", "Hopper-v5", "--max-episode-steps", "50", "--num-steps", "64", "--explore-every", "2",
    "--esa-steps", "4", "--eval-episodes", "1", "--heldout-episodes", "2", "--eval-every", "1", "--quiet",
]  # fmt: skip
TINY = {
    "ppo": [*COMMON, "--num-minibatches", "2", "--update-epochs", "2"],
    "trpo": [*COMMON, "--n-critic-updates", "2"],
    "ppo-research": [*COMMON, "--num-minibatches", "2", "--update-epochs", "2"],
    "trpo-research": [*COMMON, "--n-critic-updates", "2"],
    "ppo-discrete": [*COMMON[2:], "--env-id", "CartPole-v1", "--num-envs", "2", "--update-epochs", "2"],
    "sac": [
        *COMMON[:4],
        "--learning-starts",
        "64",
        "--batch-size",
        "32",
        "--explore-every",
        "16",
        *COMMON[8:14],
        "--eval-every",
        "64",
        "--quiet",
    ],
}
# results that do not depend on wall-clock time
DETERMINISTIC_TAGS = [
    "charts/episodic_return",
    "losses/value_loss",
    "eval/episodic_return",
    "charts/total_env_steps",
    "explorler/best_score",
]


@pytest.fixture(params=["ppo", "trpo"])
def algo(request):
    return request.param


def under_test(algo, tmp_path_factory):
    return ScriptUnderTest(SCRIPTS[algo], TINY[algo], tmp_path_factory)


def script_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH")] if p)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_a_killed_run_resumes_exactly(algo, tmp_path_factory):
    assert_resumes_exactly(algo, tmp_path_factory)


def test_a_killed_run_resumes_exactly_with_search_episodes_waiting_to_train(tmp_path_factory):
    # checkpoints come after the search: its episodes train the next iteration, after the resume
    assert_resumes_exactly(
        "ppo-research", tmp_path_factory, "--reuse-candidate-rollouts", "all", "--explore-every", "1"
    )


@pytest.mark.parametrize(
    "algo, extra",
    [
        ("ppo-discrete", []),
        # a search of 3 policies fits the budget: its env steps are counted across the resume
        ("sac", ["--score-with", "env", "--search", "gaussian", "--gaussian-candidates", "2"]),
        ("sac", ["--score-with", "critic"]),
    ],
)
def test_the_discrete_and_sac_scripts_resume_exactly(algo, extra, tmp_path_factory):
    total, tags = 1920, DETERMINISTIC_TAGS
    if algo == "sac":  # one gradient step per env step: a smaller budget; SAC's losses
        total, tags = 256, [tag.replace("value_loss", "qf_loss") for tag in tags] + ["losses/actor_loss"]
    assert_resumes_exactly(algo, tmp_path_factory, *extra, total=total, tags=tags)


def assert_resumes_exactly(algo, tmp_path_factory, *extra, total=1920, tags=DETERMINISTIC_TAGS):
    script = under_test(algo, tmp_path_factory)
    args = ["--total-timesteps", total, "--save-model", "--checkpoint-path", "run.pt", *extra]
    whole = script.train("whole", *args)

    cwd = tmp_path_factory.mktemp("killed")
    command = [sys.executable, str(SCRIPTS[algo]), *TINY[algo], *map(str, args)]
    proc = subprocess.Popen(
        command, cwd=cwd, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not (cwd / "run.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()  # as a machine that goes away would: no handler runs
    proc.wait()
    stopped_at = torch.load(cwd / "run.pt", weights_only=True)["iteration"]
    assert stopped_at < torch.load(whole.cwd / "run.pt", weights_only=True)["iteration"], "not stopped midway"

    resumed = script.train_in(cwd, *args, "--resume", "run.pt")
    assert len(list((cwd / "runs").iterdir())) == 1  # the same TensorBoard run, continued
    for tag in tags:
        assert resumed.scalars[tag] == whole.scalars[tag], tag


def test_a_fork_starts_at_its_checkpoints_score_and_counts_from_zero(algo, tmp_path_factory):
    script = under_test(f"{algo}-research", tmp_path_factory)  # the paper's metric: a research flag
    trained = script.train("trained", "--total-timesteps", 640, "--save-model", "--checkpoint-path", "run.pt")
    checkpoint = torch.load(trained.cwd / "run.pt", weights_only=True)
    fork = script.train(
        "fork", "--no-explorler", "--total-timesteps", 256, "--paper-metric-every", 1,
        "--init-from", trained.cwd / "run.pt",
    )  # fmt: skip
    first_step, first_score = fork.scalars["eval/episodic_return"][0]
    assert first_step == 0 and first_score == pytest.approx(checkpoint["eval_return"], rel=1e-6)
    assert fork.steps("losses/value_loss") == [64, 128, 192, 256]  # its own budget, from the fork
    assert fork.steps("paper/episodic_return") == [0, 64, 128, 192, 256]
    with pytest.raises(AssertionError, match="was trained on Hopper-v5"):
        script.train("wrong-env", "--env-id", "Walker2d-v5", "--init-from", trained.cwd / "run.pt")


def test_the_selection_audit_records_every_search_and_changes_nothing(tmp_path_factory):
    script = under_test("ppo-research", tmp_path_factory)
    plain = script.train("plain", "--total-timesteps", 1280)
    audited = script.train("audited", "--total-timesteps", 1280, "--selection-truth-episodes", 3)
    for tag in DETERMINISTIC_TAGS:
        assert audited.scalars[tag] == plain.scalars[tag], tag
    lines = (audited.run_dir / "selection_audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(plain.scalars["explorler/best_score"]) >= 2
    for record in records:
        rows = len(record["selection"])
        assert len(record["truth"]) == len(record["paper"]) == rows >= 3
        assert len(record["truth_returns"][0]) == 3 and len(record["paper_returns"][0]) == 3
        assert record["incumbent_row"] and record["total_timesteps"] == 1280


def test_fixed_candidate_starts_reuse_the_runs_seed_every_cycle():
    for path in SCRIPTS.values():
        spec = importlib.util.spec_from_file_location(f"{Path(path).stem}_seeds", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fixed = module.Args(seed=7, fixed_candidate_starts=True, eval_episodes=3)
        moving = module.Args(seed=7, eval_episodes=3)
        seeds = module.harness  # the scripts' seeds live in explorler_optim.rl.harness
        assert {seeds.candidate_seed(fixed, cycle) for cycle in range(5)} == {7}
        assert len({seeds.candidate_seed(moving, cycle) for cycle in range(5)}) == 5
        if not hasattr(module.Args(), "selection_truth_episodes"):
            continue  # a plain script: no selection audit
        truths = {seeds.truth_seed(module.Args(seed=7, selection_truth_episodes=20), c) for c in range(5)}
        assert min(truths) > max(seeds.heldout_seed(moving) + 10_000, 999_000_000)  # never a selection's
