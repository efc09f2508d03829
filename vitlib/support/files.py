"""Writing files so that no reader, and no interrupted run, ever sees half of one; reading JSON back."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "read_json", "write_json_atomic"]


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Yields a temporary file beside ``path``; once the block ends without an error it is flushed
    to disk and renamed to ``path`` in one step, else it is removed.

    The temporary file is in the same folder because a rename is atomic only within one file
    system (Lightning's own "atomic" save writes into the system temp folder and *copies* the file
    over when the target is elsewhere, e.g. on a mounted Google Drive). A process killed at any
    moment leaves either the old file or the new one, plus at most a stray ``.NAME.*.tmp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data reach the disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON at ``path``, written with :func:`atomic_write`."""
    with atomic_write(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)


def read_json(path: str | Path) -> Any:
    """The JSON at ``path``; ``None`` when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None
