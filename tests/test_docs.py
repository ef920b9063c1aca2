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
