"""git: the user's repository, read only (what it tracks, what a ref holds)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def output(directory: Path, *args: str) -> str:
    """What `git -C directory ARGS` prints; empty when git refuses."""
    done = subprocess.run(
        ["git", "-C", str(directory), *args], capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else ""


def tracked(path: Path) -> bool:
    """The file is in its repository's index: `git restore` can put it back. False outside a
    repository, and where git is not installed."""
    if shutil.which("git") is None:
        return False
    done = subprocess.run(
        ["git", "-C", str(path.parent), "ls-files", "--error-unmatch", "--", path.name],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0
