"""The docstring examples run and the README's commands match .ci/run."""

import doctest
import re
from pathlib import Path

import pytest

import explorler_optim._lazy
import explorler_optim.audit
import explorler_optim.checkpoint
import explorler_optim.explorer
import explorler_optim.files
import explorler_optim.optimizer
import explorler_optim.params
import explorler_optim.rl.args
import explorler_optim.rl.batched
import explorler_optim.rl.normalize
import explorler_optim.rl.racing
import explorler_optim.rl.run_evaluators
import explorler_optim.rl.search_step
import explorler_optim.rl.trpo
import explorler_optim.search
import explorler_optim.subspace
import explorler_optim.wrappers
from tests.conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "module",
    [
        explorler_optim._lazy,
        explorler_optim.audit,
        explorler_optim.checkpoint,
        explorler_optim.explorer,
        explorler_optim.files,
        explorler_optim.optimizer,
        explorler_optim.params,
        explorler_optim.rl.args,
        explorler_optim.rl.batched,
        explorler_optim.rl.normalize,
        explorler_optim.rl.racing,
        explorler_optim.rl.run_evaluators,
        explorler_optim.rl.search_step,
        explorler_optim.rl.trpo,
        explorler_optim.search,
        explorler_optim.subspace,
        explorler_optim.wrappers,
    ],
)
def test_docstring_examples(module):
    import torch

    failures, tried = doctest.testmod(module, extraglobs={"torch": torch}, verbose=False)
    assert tried > 0 and failures == 0


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = [c for c in commands if "pytest" in c]
    assert test_command, "README has no test command"
    assert test_command[0].strip() in ci


def drop_in_example():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Drop-in use") :]
    return re.search(r"```python\n(.*?)\n```", section, flags=re.S).group(1)


def test_readme_drop_in_example_runs_with_the_three_helpers_it_names():
    import torch

    example = drop_in_example()
    for helper in ["collect_rollout(", "ppo_loss(", "evaluate("]:
        assert helper in example
    generator = torch.Generator().manual_seed(0)
    calls = {"evaluate": 0}

    def collect_rollout(agent):
        obs, actions, advantages = (
            torch.randn(64, 11, generator=generator),
            torch.randn(64, 3),
            torch.randn(64),
        )
        return [(obs[i : i + 32], actions[i : i + 32], advantages[i : i + 32]) for i in (0, 32)]

    def ppo_loss(agent, minibatch):
        obs, actions, advantages = minibatch
        dist = torch.distributions.Normal(agent.actor_mean(obs), agent.actor_logstd.exp())
        return -(dist.log_prob(actions).sum(1) * advantages).mean() + agent.critic(obs).pow(2).mean()

    def evaluate(agent):
        calls["evaluate"] += 1
        return -float(agent.actor_mean[0].weight.norm())

    # the snippet, pasted into a file with the three helpers and nothing else, runs to the end
    namespace = {"collect_rollout": collect_rollout, "ppo_loss": ppo_loss, "evaluate": evaluate}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: extra threads only wait for a busy CPU
    try:
        exec(compile(example, "README.md drop-in example", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    result = namespace["result"]
    assert calls["evaluate"] == 10 * (result.num_candidates + 1)  # 10 searches, incumbent included
    assert result.best_score <= 0


def test_only_the_last_max_anchors_are_searched():
    """What the drop-in guide says of anchors and schedule: with one anchor per epoch and
    max_anchors=10, a search every 2 iterations sees only the last iteration's 10 anchors."""
    import torch

    from explorler_optim import ExploRLerOptimizer

    policy = torch.nn.Linear(2, 1)
    optimizer = ExploRLerOptimizer(torch.optim.SGD(policy.parameters(), lr=0.1), max_anchors=10, seed=0)
    for _iteration in range(2):
        for _epoch in range(10):
            with torch.no_grad():
                policy.weight.add_(0.01)
            optimizer.record()
    first_kept = optimizer.anchors()[0, 0].item()
    assert optimizer.num_anchors == 10
    assert first_kept == pytest.approx(policy.weight[0, 0].item() - 0.09, abs=1e-6)
    result = optimizer.explore(lambda: -policy.weight.square().sum().item())
    assert result.num_anchors == 10


def bash_commands(path: Path) -> list[str]:
    """Every command line of the file's ```bash blocks (comments dropped)."""
    text = path.read_text()
    lines = [line.split("  #")[0].strip() for block in re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
             for line in block.splitlines()]  # fmt: skip
    return [line for line in lines if line]


def check_main_job(command):
    """The main job: the scripts extra, then the PPO script with its defaults (ExploRLer on Hopper-v5)."""
    import subprocess
    import sys

    install, run = command.split(" && python single_file_baselines/")
    assert install.endswith('pip install torch==2.13.0 -e ".[scripts]"')
    assert "scripts" in extras()
    script = ROOT / "single_file_baselines" / run
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=HANG_GUARD_S,
    ).stdout
    assert "Hopper-v5" in help_text and "--no-explorler" in help_text  # defaults: ExploRLer on Hopper
    # tests/test_ppo_script.py runs this script (tiny budgets); test_ci_runs_the_readme_test_command


def check_test_command(command):
    assert command in (ROOT / ".ci" / "run").read_text()


def check_docs_serve(command):
    import importlib.util

    assert command == 'pip install -e ".[docs]" && mkdocs serve'
    assert "docs" in extras()  # and the test extra installs it: tests/test_docs_site.py builds the site
    assert importlib.util.find_spec("mkdocs") is not None


def extras() -> list[str]:
    """The extras the installed package declares."""
    import importlib.metadata

    return importlib.metadata.metadata("explorler-optim").get_all("Provides-Extra") or []


CHECKED_COMMANDS = {
    "main job": check_main_job,
    "tests": check_test_command,
    "docs": check_docs_serve,
}


def kind_of(command: str) -> str | None:
    if command.endswith("python single_file_baselines/ppo_continuous_action.py"):
        return "main job"
    if command.endswith("python -m pytest -q"):
        return "tests"
    if command.endswith("mkdocs serve"):
        return "docs"
    return None


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_every_command_of_the_readme_and_the_quick_start_is_checked(page):
    commands = bash_commands(ROOT / page)
    assert commands, f"{page} shows no command"
    for command in commands:
        kind = kind_of(command)
        assert kind is not None, f"{page}: no test runs or checks `{command}`; add one to CHECKED_COMMANDS"
        CHECKED_COMMANDS[kind](command)


def test_readme_stays_a_landing_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
