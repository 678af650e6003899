"""The local state folder (`AMEIDE_STATE_DIR`): checked writable before anything is put there."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ameide_migrate.core.errors import StateDirUnwritable


def writable(directory: Path) -> Path:
    """`directory`, made when missing; StateDirUnwritable naming it and why when it cannot be
    made or written (a read-only or immutable folder, a path under a file, a full disk)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # A probe write: permissions bits cannot tell of an immutable folder or a read-only mount.
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as e:
        blocker = next((p for p in [directory, *directory.parents] if p.is_file()), None)
        why = f"{blocker} is a file, not a folder" if blocker else e.strerror or str(e)
        raise StateDirUnwritable(
            f"cannot write the state folder {directory}: {why}; set AMEIDE_STATE_DIR to a "
            "folder you can write, or make this one writable"
        ) from None
    return directory
