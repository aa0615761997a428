"""Free space where the daemon writes: ``daemon status`` warns before runs end "disk full".

Its own module so that ``daemon status`` can ask without importing the state store
(SQLite); the store itself turns ENOSPC into ``DiskFull`` (``daemon.state``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

__all__ = ["LOW_DISK_BYTES", "disk_space_warning"]

# Below this much free space in the state directory, status warns.
LOW_DISK_BYTES: Final = 64 * 1024 * 1024


def disk_space_warning(directory: Path, low_bytes: int = LOW_DISK_BYTES) -> str | None:
    """A one-line warning when ``directory``'s disk has less than ``low_bytes`` free."""
    try:
        usage = shutil.disk_usage(directory)
    except OSError:
        return None
    if usage.free >= low_bytes:
        return None
    return (
        f"low disk space: {usage.free / 1024 / 1024:.1f} MiB free of "
        f"{usage.total / 1024 / 1024:.1f} MiB in the state directory {directory}; "
        "runs end 'disk full' when it runs out"
    )
