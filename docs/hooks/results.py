"""MkDocs hook: the committed benchmark results become pages of the site under ``results/``.

Each folder of ``benchmarks/results`` contributes its README, tables, plots and data files (not the
per-run folders), so the guides link to the same files the repository shows, and a link from one of
them that does not resolve fails ``mkdocs build --strict``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

SKIPPED_FOLDERS = {"runs", "pretrained"}  # per-run logs and checkpoints: thousands of files


def on_files(files, config):
    results = Path(config.config_file_path).parent / "benchmarks" / "results"
    for path in sorted(results.rglob("*")):
        relative = path.relative_to(results)
        if path.is_file() and not SKIPPED_FOLDERS & set(relative.parts[:-1]):
            # src_dir is benchmarks/, so the page "results/..." is read from benchmarks/results/...
            name = f"results/{relative.as_posix()}"
            files.append(File(name, str(results.parent), config.site_dir, config.use_directory_urls))
    return files
