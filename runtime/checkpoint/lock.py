"""An exclusive lock on a file, for steps that run as separate processes and share a directory."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Holds ``flock(LOCK_EX)`` on ``path`` (created if missing) for the ``with`` block. Local and
    ReadWriteMany volumes that support POSIX locks only (NFS v4 does; some FUSE mounts do not)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
