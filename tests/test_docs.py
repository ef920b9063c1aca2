"""The docstring examples run and the README's commands match .ci/run."""

import doctest
import re
from pathlib import Path

import pytest

import explorler_optim.audit
import explorler_optim.checkpoint
import explorler_optim.explorer
import explorler_optim.optimizer
import explorler_optim.rl.batched
import explorler_optim.rl.normalize
import explorler_optim.rl.racing
import explorler_optim.rl.run_evaluators
import explorler_optim.rl.search_step
import explorler_optim.search
import explorler_optim.subspace

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "module",
    [
        explorler_optim.audit,
        explorler_optim.checkpoint,
        explorler_optim.explorer,
        explorler_optim.optimizer,
        explorler_optim.rl.batched,
        explorler_optim.rl.normalize,
        explorler_optim.rl.racing,
        explorler_optim.rl.run_evaluators,
        explorler_optim.rl.search_step,
        explorler_optim.search,
        explorler_optim.subspace,
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


def test_readme_explains_anchors_and_search_schedule():
    readme = (ROOT / "README.md").read_text()
    assert "higher scores are better" in readme
    assert "only the last iteration's" in readme
