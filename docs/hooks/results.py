"""MkDocs hook: the committed benchmark results (and the examples) become files of the site under
``results/`` (``examples/``), and the guides' links to them work on GitHub and on the site alike.

Each folder of ``benchmarks/results`` contributes its README, tables, plots and data files (not the
per-run folders). The guides link to where the files are in the repository
(``../benchmarks/results/verdict/README.md`` from ``docs/``), which GitHub follows; on the site
:func:`on_page_markdown` points each such link at the copy under ``results/``, so a link that
resolves to neither fails ``mkdocs build --strict``. A line that ends in ``<!-- GitHub only -->``
(the API pages' pointer to the source, which GitHub shows instead of the rendered reference) is
left out of the site.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mkdocs.structure.files import File

SKIPPED_FOLDERS = {"runs", "pretrained"}  # per-run logs and checkpoints: thousands of files
# repository folder -> where its files are on the site, under the docs (the folder's own name)
SITE_FOLDERS = {"benchmarks/results": "results", "examples": "examples"}
# an inline link or image: ](target) or ](target "title"), the target without spaces
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?((?:\s+\"[^\"]*\")?\))")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
GITHUB_ONLY = re.compile(r"^.*<!-- GitHub only -->[ \t]*\n?", re.M)  # a line for GitHub readers only


def copied_folders(config) -> dict[Path, str]:
    """{repository folder: its folder on the site}."""
    root = Path(config.config_file_path).parent
    return {root / folder: site for folder, site in SITE_FOLDERS.items()}


def on_files(files, config):
    for folder, site in copied_folders(config).items():
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not SKIPPED_FOLDERS & set(relative.parts[:-1]) and path.suffix != ".pyc":
                # the site's folder has the repository folder's name, so the file "results/x" is read
                # from benchmarks/ (benchmarks/results/x)
                name = f"{site}/{relative.as_posix()}"
                files.append(File(name, str(folder.parent), config.site_dir, config.use_directory_urls))
    return files


def site_target(
    target: str, page_source: Path, page_uri: str, folders: dict[Path, str], docs: Path
) -> str | None:
    """The link ``target`` of a page as the site needs it, or ``None`` to keep it.

    ``page_source`` is the page's file in the repository, ``page_uri`` its path on the site (under
    the docs). A target that resolves into a copied folder (``benchmarks/results``) points at its
    copy (``results/``); from a copied page, one that resolves into ``docs/`` points at that page.
    """
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("/"):
        return None  # a URL or an absolute path: not the repository's
    resolved = Path(os.path.normpath(page_source.parent / target))
    copied = next((folder for folder in folders if resolved.is_relative_to(folder)), None)
    if copied is not None:
        on_site = docs / folders[copied] / resolved.relative_to(copied)
    elif resolved.is_relative_to(docs) and not page_source.is_relative_to(docs):
        on_site = resolved
    else:
        return None
    new = Path(os.path.relpath(on_site, (docs / page_uri).parent)).as_posix()
    return None if new == target else new


def on_page_markdown(markdown, page, config, files):
    folders, docs = copied_folders(config), Path(config.docs_dir)
    source = Path(page.file.abs_src_path)

    def rewrite(match: re.Match) -> str:
        new = site_target(match.group(2), source, page.file.src_uri, folders, docs)
        if new is None:
            return match.group(0)
        return f"{match.group(1)}{new}{match.group(3) or ''}{match.group(4)}"

    markdown = GITHUB_ONLY.sub("", markdown)
    # code blocks are shown as written
    pieces, last = [], 0
    for fence in FENCE.finditer(markdown):
        pieces += [LINK.sub(rewrite, markdown[last : fence.start()]), fence.group(0)]
        last = fence.end()
    return "".join([*pieces, LINK.sub(rewrite, markdown[last:])])
