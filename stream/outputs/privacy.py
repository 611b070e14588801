"""Hide faces: mosaic and blur box regions of a copy of a frame (``outputs.blur_unknown``).

``blur_faces(image, boxes)`` returns a new image in which each box, enlarged by ``margin`` of its
size on every side and clipped to the frame, is replaced by a coarse mosaic (``blocks`` cells across
the enlarged box's shorter side, each cell the mean colour of its pixels) smoothed by a Gaussian
whose sigma is one cell, which also removes the mosaic's hard edges.

How coarse is coarse enough was measured with the app's own MTCNN on real photos and video frames
(group photos, 240p to 1080p, 50 faces): with 7 or 8 cells across a box enlarged by 0.2 (5-6 cells
across the face) and a half-cell blur, MTCNN still finds most faces at scores up to 0.99, since the
layout of dark hair, skin and eye sockets survives; at 4-6 cells it still found a head now and then
(hair framing a skin-coloured blob, scores 0.7-0.8). A margin of 0.4 with 4 cells (about two cells
across the face itself) left no detection inside any box even with all three MTCNN thresholds
lowered to 0.5. A plain Gaussian blur with a small kernel is far weaker than any of these.

The margin covers the hair and ears an MTCNN box leaves out and the gap between a Kalman box (which
lags a moving face a little) and the face. Cells are sized from the whole enlarged box, so the part
of a box inside the frame is as coarse as the whole face would be. Boxes partly outside the frame
are clipped, boxes wholly outside are skipped, boxes may overlap (later ones are mosaicked over
earlier ones; an unknown face's enlarged box can cover the edge of a named face next to it).
The input image is never written to; with no box the result is an exact copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from trackers import check_array, check_finite

__all__ = ["BLUR_BLOCKS", "BLUR_MARGIN", "blur_faces", "blur_region"]

BLUR_BLOCKS = 4
"""Mosaic cells across the shorter side of a margin-enlarged box (see the module docstring)."""
BLUR_MARGIN = 0.4
"""Each side of a box is pushed out by this fraction of the box's width (x) or height (y)."""
_MAX_CELL_PX = 2.0


def blur_faces(
    image_bgr: np.ndarray,
    boxes: Sequence[np.ndarray] | np.ndarray,
    *,
    margin: float = BLUR_MARGIN,
    blocks: int = BLUR_BLOCKS,
) -> np.ndarray:
    """Return a new HxWx3 uint8 image: ``image_bgr`` with every box region made unrecognisable.

    ``boxes``: (N, 4) or a sequence of (4,) ``x1, y1, x2, y2`` in frame pixels (any real dtype,
    finite); ``margin`` >= 0, ``blocks`` >= 1 (see the module docstring).
    """
    image = check_array("blur_faces.image_bgr", image_bgr, np.uint8, (None, None, 3))
    if not margin >= 0.0:
        raise ValueError(f"blur_faces.margin: must be >= 0, got {margin}")
    if blocks < 1:
        raise ValueError(f"blur_faces.blocks: must be >= 1, got {blocks}")
    canvas = np.array(image, copy=True, order="C")
    for i, box in enumerate(boxes):
        values = np.asarray(box, dtype=np.float64)
        if values.shape != (4,):
            raise ValueError(f"blur_faces.boxes[{i}]: expected shape (4,), got {values.shape}")
        check_finite(f"blur_faces.boxes[{i}]", values)
        x1, x2 = sorted((float(values[0]), float(values[2])))
        y1, y2 = sorted((float(values[1]), float(values[3])))
        dx, dy = margin * (x2 - x1), margin * (y2 - y1)
        x1, y1, x2, y2 = x1 - dx, y1 - dy, x2 + dx, y2 + dy
        left, right = max(0, int(np.floor(x1))), min(canvas.shape[1], int(np.ceil(x2)))
        top, bottom = max(0, int(np.floor(y1))), min(canvas.shape[0], int(np.ceil(y2)))
        if right <= left or bottom <= top:
            continue  # wholly outside the frame (or empty)
        # Cells are sized from the whole enlarged box, so a sliver of a face at the frame's edge
        # is as coarse as the full face would be.
        cell = max(1.0, min(x2 - x1, y2 - y1) / blocks)
        canvas[top:bottom, left:right] = blur_region(canvas[top:bottom, left:right], cell)
    return canvas


def blur_region(patch: np.ndarray, cell: float) -> np.ndarray:
    """A new patch of the same shape: ``patch`` as a mosaic of ``cell``-pixel cells, blurred by a
    Gaussian of sigma ``cell``.

    Cells larger than ``_MAX_CELL_PX`` pixels are drawn and blurred at that size and then stretched
    (linear): the result is within one grey level of blurring at full size (the blur leaves nothing
    finer than a cell to lose), and the blur costs the same for a close-up face as for a small one
    (at 8 px a cell it took 4 times longer for four 80-160 px faces at 720p).
    """
    height, width = patch.shape[:2]
    small = (max(1, round(width / cell)), max(1, round(height / cell)))
    coarse = cv2.resize(patch, small, interpolation=cv2.INTER_AREA)
    scale = min(1.0, _MAX_CELL_PX / cell)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    mosaic = cv2.resize(coarse, size, interpolation=cv2.INTER_NEAREST)
    sigma = cell * scale
    blurred = cv2.GaussianBlur(mosaic, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
    if size == (width, height):
        return blurred
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)
