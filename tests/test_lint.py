"""Lint, format and type checks run as tests, so the README's one test command (and CI) runs them.

The configuration is in pyproject.toml; the pinned tool versions are in its ``test`` extra.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent


def check(tool, *args, timeout=HANG_GUARD_S):
    if importlib.util.find_spec(tool) is None:
        pytest.fail(f"{tool} is not installed: pip install -e '.[test]' installs the pinned version")
    proc = subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"`{tool} {' '.join(args)}` failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    )


def test_ruff_lint():
    check("ruff", "check", "--no-cache", ".")


def test_ruff_format():
    check("ruff", "format", "--check", "--no-cache", ".")


@pytest.mark.slow
def test_mypy_on_the_library():
    check("mypy")  # files and strictness: [tool.mypy] in pyproject.toml
