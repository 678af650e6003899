"""Go tools the tests build from source once (`go install`) into the git-ignored `.cache/bin`;
one already on PATH is used as it is."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CACHE_BIN = Path(__file__).resolve().parent.parent / ".cache" / "bin"


def go_install(module: str) -> str:
    """The binary of `module` (`path/cmd/name@version`): on PATH, cached, or built now."""
    name = module.split("@", 1)[0].rsplit("/", 1)[-1]
    found = shutil.which(name) or (str(CACHE_BIN / name) if (CACHE_BIN / name).exists() else None)
    if found:
        return found
    CACHE_BIN.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["go", "install", module],
        env={**os.environ, "GOBIN": str(CACHE_BIN), "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, f"building {name} failed:\n{done.stderr[-2000:]}"
    return str(CACHE_BIN / name)
