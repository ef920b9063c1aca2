"""The docstring examples run and the README's commands match .ci/run."""

import doctest
import re
from pathlib import Path

import pytest

import explorler_optim._lazy
import explorler_optim.audit
import explorler_optim.checkpoint
import explorler_optim.evolution
import explorler_optim.explorer
import explorler_optim.extras
import explorler_optim.files
import explorler_optim.optimizer
import explorler_optim.params
import explorler_optim.rl.args
import explorler_optim.rl.batched
import explorler_optim.rl.critic
import explorler_optim.rl.normalize
import explorler_optim.rl.racing
import explorler_optim.rl.replay
import explorler_optim.rl.run_evaluators
import explorler_optim.rl.search_step
import explorler_optim.rl.trpo
import explorler_optim.search
import explorler_optim.selection
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
        explorler_optim.evolution,
        explorler_optim.explorer,
        explorler_optim.extras,
        explorler_optim.files,
        explorler_optim.optimizer,
        explorler_optim.params,
        explorler_optim.rl.args,
        explorler_optim.rl.batched,
        explorler_optim.rl.critic,
        explorler_optim.rl.normalize,
        explorler_optim.rl.racing,
        explorler_optim.rl.replay,
        explorler_optim.rl.run_evaluators,
        explorler_optim.rl.search_step,
        explorler_optim.rl.trpo,
        explorler_optim.search,
        explorler_optim.selection,
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


# ------------------------------------------------------------------ the docs extra is enough


def requirement_closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install, transitively, read from installed metadata.

    Nothing is installed: every distribution named must be installed already (the test extra has
    the docs extra), else the closure could not be known and the test fails saying so.
    """
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib_load()["project"]
    seen: set[str] = set()
    todo = [(Requirement(r), frozenset()) for r in requirements]
    while todo:
        requirement, _ = todo.pop()
        name = canonicalize_name(requirement.name)
        if name == "explorler-optim":  # this package: its dependencies and the extras named
            todo += [(Requirement(r), frozenset()) for r in project["dependencies"]]
            for extra in requirement.extras:
                todo += [(Requirement(r), frozenset()) for r in project["optional-dependencies"][extra]]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} is not installed: the closure of the docs extra cannot be read")
        for line in requires:
            dependency = Requirement(line)
            wanted = [""] + sorted(requirement.extras)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((dependency, frozenset()))
    return seen


def tomllib_load() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def imported_at_module_level(module_name: str, seen: set[str]) -> set[str]:
    """Top-level names of the third-party modules importing ``module_name`` imports (not the ones
    imported inside functions), following this package's own modules."""
    import ast
    import importlib.util

    if module_name in seen:
        return set()
    seen.add(module_name)
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None, module_name
    tree = ast.parse(Path(spec.origin).read_text())
    package = module_name if spec.submodule_search_locations else module_name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue  # runs only when called
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)])
                continue
            for name in names:
                if name.startswith("explorler_optim"):
                    if importlib.util.find_spec(name.rpartition(".")[0] or name) and _is_module(name):
                        found.update(imported_at_module_level(name, seen))
                elif name and name.split(".")[0] not in sys.stdlib_module_names:
                    found.add(name.split(".")[0])

    import sys

    visit(tree.body)
    return found


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def docs_build_imports() -> set[str]:
    """The third-party modules importing the documented modules loads (the docs hook imports them)."""
    from tests.test_docs_site import reference_modules

    seen: set[str] = set()
    return set().union(*(imported_at_module_level(name, seen) for name in reference_modules()))


def test_the_docs_extra_installs_what_the_docs_build_imports():
    """`pip install -e ".[docs]"` alone must build the site: the hook imports every documented
    module (explorler_optim.sb3 imports stable_baselines3 at once), and mkdocstrings formats
    signatures only with ruff or black installed."""
    import importlib.metadata

    from packaging.utils import canonicalize_name

    closure = requirement_closure(["explorler-optim[docs]"])  # what `pip install -e ".[docs]"` installs
    providers = importlib.metadata.packages_distributions()
    imports = docs_build_imports()
    assert {"torch", "stable_baselines3"} <= imports  # what the walk must find, or it walks nothing
    missing = {
        module: providers.get(module)
        for module in imports
        if not {canonicalize_name(d) for d in providers.get(module, [])} & closure
    }
    assert not missing, f"the docs extra does not install what the docs build imports: {missing}"
    assert {"ruff", "black"} & closure, "mkdocstrings formats signatures with ruff or black: add one"


def test_the_docs_hook_fails_loudly_when_a_documented_module_cannot_be_imported(monkeypatch):
    """A skipped module would leave its cross-references unresolved and the strict build would fail
    far from the cause; the hook says which module and how to install what it needs."""
    import importlib
    import importlib.util

    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("sphinx_roles", ROOT / "docs" / "hooks" / "sphinx_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    real = importlib.import_module

    def without_sb3(name, *args):
        if name == "explorler_optim.sb3":
            raise ImportError("No module named 'stable_baselines3'")
        return real(name, *args)

    monkeypatch.setattr(module.importlib, "import_module", without_sb3)
    with pytest.raises(ImportError, match=r"explorler_optim\.sb3.*\.\[docs\]"):
        module._public_names()


@pytest.mark.slow
def test_the_minimal_example_runs_and_is_the_readmes_loop(tmp_path):
    """examples/minimal_ppo.py, which the README and the drop-in guide point to, runs as pasted (2
    iterations here) and is the README's drop-in loop with the three helpers written out."""
    import subprocess
    import sys

    pytest.importorskip("gymnasium")
    example = ROOT / "examples" / "minimal_ppo.py"
    proc = subprocess.run(
        [sys.executable, str(example), "--iterations", "2", "--explore-every", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("committed:") == 2 and "after 2,048 env steps" in proc.stdout
    code = example.read_text()
    for line in drop_in_example().splitlines():
        statement = line.split("#")[0].strip()
        if statement.startswith(
            ("for ", "if ", "result = ", "optimizer = ", "explore_params=", "max_anchors=")
        ):
            assert statement in code, f"the README's `{statement}` is not in the example"
    assert "examples/minimal_ppo.py" in (ROOT / "README.md").read_text()


def test_install_hints_in_messages_come_from_one_place():
    """Error messages say how to install an extra through `extras.install_hint`, which fits a clone
    (`pip install -e ".[sb3]"`) and an index install (`pip install "explorler-optim[sb3]"`)."""
    import ast

    from explorler_optim.extras import install_hint

    written_out = []
    for path in sorted((ROOT / "explorler_optim").rglob("*.py")):
        if path.name == "extras.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if re.search(r"pip install[^`]*(explorler-optim|\.\[)", node.value):
                    written_out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not written_out, "use explorler_optim.extras.install_hint:\n" + "\n".join(written_out)
    assert install_hint("sb3") == f'`pip install -e ".[sb3]"` (in {ROOT})'  # the tests run from a clone
    assert install_hint("sb3", clone=None) == '`pip install "explorler-optim[sb3]"`'
