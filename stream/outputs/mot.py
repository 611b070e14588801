"""MOT Challenge result files: ``frame,id,x,y,w,h,score,-1,-1,-1`` per confirmed track per frame.

Frames are numbered from 1 (``frame_index`` 0 is written as frame 1); boxes go from x1, y1, x2, y2
to x, y, w, h with 2 decimals. Only confirmed tracks with a public id (>= 1) are written.

One file holds one stream, and a track is a ``TrackKey`` (stream, epoch, track id): tracker ids
restart after a reconnect, so epoch 0 keeps its ids and each later epoch's ids are offset past the
highest id written so far (ids stay unique in the file, and a run without reconnects is unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from stream.outputs import OutputError, make_parent
from trackers import TrackSnapshot, TrackState

__all__ = ["MotWriter", "mot_line"]


def mot_line(frame_number: int, track: TrackSnapshot, mot_id: int | None = None) -> str:
    """One MOT line (no newline) for ``track`` in the 1-based ``frame_number`` (id: ``mot_id`` or its own)."""
    x1, y1, x2, y2 = (float(v) for v in track.box)
    return f"{frame_number},{track.track_id if mot_id is None else mot_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{track.score:.2f},-1,-1,-1"


class MotWriter:
    """Write one MOT file; ``write`` once per frame (any order of tracks; sorted by id)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        make_parent(self.path, "MOT file")
        try:
            self._file: IO[str] | None = self.path.open("w", encoding="ascii", newline="\n")
        except OSError as exc:
            raise OutputError(f"cannot open MOT file {self.path}: {exc.strerror or exc}") from exc
        self._epoch = 0
        self._offset = 0  # added to this epoch's track ids
        self._highest = 0  # highest id written so far

    def write(self, frame_index: int, epoch: int, tracks: Iterable[TrackSnapshot]) -> int:
        """Write the confirmed tracks of the 0-based ``frame_index`` in ``epoch``; returns how many lines."""
        if self._file is None:
            raise OutputError(f"MOT file {self.path} is closed")
        if frame_index < 0:
            raise ValueError(f"MotWriter.write: frame_index must be >= 0, got {frame_index}")
        if epoch < self._epoch:
            raise ValueError(f"MotWriter.write: epoch went back from {self._epoch} to {epoch}")
        if epoch > self._epoch:
            self._epoch, self._offset = epoch, self._highest
        confirmed = sorted(
            (t for t in tracks if t.state is TrackState.CONFIRMED and t.track_id >= 1), key=lambda t: t.track_id
        )
        if confirmed:
            self._highest = max(self._highest, self._offset + confirmed[-1].track_id)
        lines = "".join(mot_line(frame_index + 1, t, self._offset + t.track_id) + "\n" for t in confirmed)
        try:
            self._file.write(lines)
        except OSError as exc:
            raise OutputError(f"cannot write MOT file {self.path}: {exc.strerror or exc}") from exc
        return len(confirmed)

    def close(self) -> None:
        """Flush and close; safe to call twice."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except OSError as exc:
            raise OutputError(f"cannot write MOT file {self.path}: {exc.strerror or exc}") from exc

    def __enter__(self) -> MotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
