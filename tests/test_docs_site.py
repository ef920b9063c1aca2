"""The documentation site builds with `mkdocs build --strict`: no broken link, missing page or
docstring cross-reference that does not resolve (issue 22)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
pytest.importorskip("mkdocstrings")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return out


def test_the_api_reference_lists_the_public_classes_with_their_arguments(site):
    expected = {
        "core": {
            "explorler_optim.ExploRLerOptimizer": ["explore_params", "max_anchors", "record_every"],
            "explorler_optim.Explorer": ["include_incumbent", "on_invalid"],
            "explorler_optim.ExploreResult": ["incumbent_score"],
        },
        "search": {"explorler_optim.search.EmptySpaceSearch": ["snapshot_every", "neighbors"]},
        "rl": {
            "explorler_optim.rl.PolicyEvaluator": ["episodes", "racing"],
            "explorler_optim.rl.SurrogateEvaluator": ["max_kl", "log_prob"],
        },
        "sb3": {"explorler_optim.sb3.ExploRLerCallback": ["eval_env", "explore_every"]},
    }
    for page, classes in expected.items():
        html = (site / "reference" / page / "index.html").read_text()
        for name, arguments in classes.items():
            assert f'id="{name}"' in html, f"{name} missing from reference/{page}"
            section = html[html.index(f'id="{name}"') :]
            for argument in arguments:
                assert argument in section, f"{name}: argument {argument} not shown"


def test_guides_and_benchmark_results_are_pages(site):
    for page in ("drop-in", "explorer", "sb3", "scripts", "evaluation", "landscape", "benchmarks"):
        assert (site / page / "index.html").exists(), page
    assert (site / "results" / "small" / "results" / "index.html").exists()
    assert (site / "results" / "small" / "return_vs_training_steps.png").exists()
    assert not (site / "results" / "small" / "runs").exists()  # per-run logs stay out of the site


def reference_modules() -> tuple[str, ...]:
    """The modules the API reference renders: the docs' own list (docs/hooks/sphinx_roles.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sphinx_roles", ROOT / "docs" / "hooks" / "sphinx_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DOCUMENTED


def described_names(obj, griffe):
    """The names a docstring describes in its Args, Other Args or Attributes sections."""
    names = set()
    for section in obj.docstring.parse(griffe.Parser.google):
        if section.kind.value in ("parameters", "other parameters", "attributes"):
            names |= {item.name for item in section.value}
    return names


def undocumented(function, owner, griffe):
    """What a public function (or a class's ``__init__``) leaves undescribed."""
    source = function if function.docstring is not None else owner
    if source is None or source.docstring is None:
        return [f"{function.path}: no docstring"]
    described = described_names(source, griffe)
    arguments = [
        p.name
        for p in function.parameters
        if p.name not in ("self", "cls") and p.kind.value not in ("variadic positional", "variadic keyword")
    ]
    return [f"{function.path}: argument {name} not described" for name in arguments if name not in described]


def test_every_public_name_in_the_reference_is_documented():
    """The reference shows what each public class and function takes: every argument described,
    every public method with a docstring (or inheriting one)."""
    import importlib

    griffe = pytest.importorskip("griffe")
    package = griffe.GriffeLoader(docstring_parser=griffe.Parser.google).load("explorler_optim")
    gaps = []
    for module_name in reference_modules():
        module = importlib.import_module(module_name)
        for name in module.__all__:
            path = f"{module_name}.{name}".removeprefix("explorler_optim.")
            obj = package[path]
            obj = obj.final_target if obj.is_alias else obj
            if obj.is_function:
                gaps += undocumented(obj, None, griffe)
            elif obj.is_class:
                if obj.docstring is None:
                    gaps.append(f"{obj.path}: no docstring")
                init = obj.members.get("__init__")
                if init is not None and init.is_function:
                    gaps += undocumented(init, obj, griffe)
                for member_name, member in obj.members.items():
                    if member_name.startswith("_") or not member.is_function or member.docstring is not None:
                        continue
                    inherited = any(
                        member_name in base.members and base.members[member_name].docstring is not None
                        for base in obj.resolved_bases
                        if hasattr(base, "members")
                    )
                    if not inherited:
                        gaps.append(f"{member.path}: no docstring")
    assert not gaps, "\n".join(gaps)
