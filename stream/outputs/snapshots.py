"""Face snapshots: one JPEG per track (the best crop so far), replaced atomically when it improves.

File name: ``<stream>_e<epoch>_t<track_id>.jpg`` in ``folder`` (one per ``TrackKey``); the stream id is masked
(``mask_secrets``) and reduced to ``[A-Za-z0-9._-]`` so a URL or odd name cannot leave the folder.
The JPEG is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import cv2
import numpy as np

from stream.logs import mask_secrets
from stream.outputs import OutputError, make_parent
from stream.types import TrackKey
from trackers import check_array

__all__ = ["JPEG_QUALITY", "save_snapshot", "snapshot_path"]

JPEG_QUALITY = 90
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def snapshot_path(folder: Path | str, track: TrackKey) -> Path:
    """Where ``save_snapshot`` puts the snapshot of one track."""
    safe = _UNSAFE.sub("_", mask_secrets(track.stream_id)).strip("._") or "stream"
    return Path(folder) / f"{safe}_e{int(track.epoch)}_t{int(track.track_id)}.jpg"


def save_snapshot(folder: Path | str, track: TrackKey, crop_bgr: np.ndarray) -> Path:
    """Write ``crop_bgr`` (HxWx3 uint8 BGR) as this track's JPEG and return its path."""
    crop = check_array("save_snapshot.crop_bgr", crop_bgr, np.uint8, (None, None, 3))
    if crop.shape[0] == 0 or crop.shape[1] == 0:
        raise ValueError(f"save_snapshot.crop_bgr: empty image {crop.shape}")
    path = snapshot_path(folder, track)
    make_parent(path, "snapshot")
    temp = path.with_name(f".{path.stem}.tmp.jpg")
    try:
        ok = cv2.imwrite(str(temp), np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    except cv2.error as exc:
        _remove_quietly(temp)
        raise OutputError(f"cannot write snapshot {path}: {str(exc).strip().splitlines()[-1]}") from exc
    if not ok:
        _remove_quietly(temp)
        raise OutputError(f"cannot write snapshot {path}: OpenCV could not write the JPEG")
    try:
        os.replace(temp, path)
    except OSError as exc:
        _remove_quietly(temp)
        raise OutputError(f"cannot write snapshot {path}: {exc.strerror or exc}") from exc
    return path


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
