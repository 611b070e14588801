"""Outputs: overlay, annotated video, events (JSONL + SQLite), snapshots, MOT files, summary, metrics.

Submodules are imported on demand (PyAV, OpenCV and prometheus-client load only where used).
Every I/O failure in this package is raised as ``OutputError``: one line that names the path.
"""

from __future__ import annotations

from pathlib import Path

from stream.errors import UserError

__all__ = ["OutputError", "make_parent"]


class OutputError(UserError):
    """An output could not be opened or written (unwritable folder, disk full); names the path."""


def make_parent(path: Path, what: str) -> None:
    """Create the folder that will hold ``path`` (and its parents), or raise ``OutputError`` naming ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise OutputError(f"cannot open {what} {path}: {path.parent} is not a folder") from exc
    except OSError as exc:
        raise OutputError(f"cannot open {what} {path}: {exc.strerror or exc}") from exc
