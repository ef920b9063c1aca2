"""Every relative link and image of the README and the docs resolves in the repository (as GitHub
follows it), and the docs hook points the ones into ``benchmarks/results`` at the site's copies."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ](target) of an inline link or image, and the src of an HTML image
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img[^>]*\ssrc=\"([^\"]+)\"")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def pages() -> list[Path]:
    """README.md, the docs and the results pages the site shows."""
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "benchmarks" / "results").glob("*/*.md")),
    ]


def relative_targets(text: str) -> list[str]:
    """The relative link and image targets of a markdown text (code shown as code is left out)."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^#", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_targets(page.read_text()):
        path = target.split("#", 1)[0]
        if target.startswith("/") or not (page.parent / path).exists():
            broken.append(f"{page.relative_to(ROOT)}: {target}")
    return broken


def test_the_checker_finds_a_broken_link_and_image(tmp_path):
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text(
        '[ok](there.md) [gone](missing.md#a) ![img](figure.png) <img src="nope.png">\n'
        "`[code](not-a-link.md)` [web](https://example.org) [anchor](#top)\n"
    )
    global ROOT
    root, ROOT = ROOT, tmp_path
    try:
        assert broken_links(page) == ["page.md: missing.md#a", "page.md: figure.png", "page.md: nope.png"]
    finally:
        ROOT = root


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves_in_the_repository(page):
    assert not broken_links(page)


def test_the_docs_link_the_results_where_github_finds_them():
    """The guides link ../benchmarks/results/..., which GitHub follows (results/... is only on the site)."""
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert not [t for t in relative_targets(page.read_text()) if t.startswith("results/")], page.name


def results_hook():
    spec = importlib.util.spec_from_file_location("results_hook", ROOT / "docs" / "hooks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("page", "uri", "target", "on_site"),
    [
        ("docs/index.md", "index.md", "../benchmarks/results/verdict/README.md", "results/verdict/README.md"),
        ("docs/reference/rl.md", "reference/rl.md", "../../benchmarks/results/a.png", "../results/a.png"),
        ("docs/index.md", "index.md", "drop-in.md", None),
        ("docs/index.md", "index.md", "../examples/minimal_ppo.py", "examples/minimal_ppo.py"),
        ("docs/index.md", "index.md", "https://arxiv.org/abs/2509.25876", None),
        ("benchmarks/results/verdict/README.md", "results/verdict/README.md", "../free-next/README.md", None),
        (
            "benchmarks/results/verdict/README.md",
            "results/verdict/README.md",
            "../../../docs/sb3.md",
            "../../sb3.md",
        ),
    ],
)
def test_the_hook_points_results_links_at_the_sites_copies(page, uri, target, on_site):
    pytest.importorskip("mkdocs")
    hook = results_hook()
    folders = {ROOT / folder: site for folder, site in hook.SITE_FOLDERS.items()}
    assert hook.site_target(target, ROOT / page, uri, folders, ROOT / "docs") == on_site


def test_github_only_lines_are_left_out_of_the_site():
    pytest.importorskip("mkdocs")
    hook = results_hook()
    text = (ROOT / "docs" / "reference" / "sb3.md").read_text()
    assert "<!-- GitHub only -->" in text and "::: explorler_optim.sb3" in text
    assert "GitHub" not in hook.GITHUB_ONLY.sub("", text)
