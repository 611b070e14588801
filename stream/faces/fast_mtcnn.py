"""Batched MTCNN: facenet-pytorch's P/R/O-Nets and maths, without its per-box Python loops.

facenet-pytorch's ``detect_face`` spends most of its time cropping R-Net (24 px) and O-Net
(48 px) candidates one by one (slice the image, ``F.interpolate(mode="area")`` per box, then
``torch.cat``). ``FastMtcnn`` runs the same three networks with the same weights, thresholds,
scale schedule and box maths, but:

- P-Net: the pyramid is resampled per scale on the whole batch (as stock); the candidate
  boxes of every scale are generated from one concatenated score map with one ``nonzero``
  (the per-cell box coordinates of each (frame size, min face) pyramid are cached), and the
  per-(image, scale) NMS is a single ``batched_nms`` keyed by ``scale * batch + image``.
- R-/O-Net crops: for ALL candidate boxes of ALL images at once, from a summed-area table
  (integral image) of the uint8 batch. Stock's crop is "integer box (truncated, clipped to the
  frame), then area resize", and area resize is adaptive average pooling: output cell ``i``
  of ``S`` averages input rows ``floor(i*L/S) .. ceil((i+1)*L/S) - 1``. Those window bounds
  are integers, so each cell's sum is four table look-ups, exact in integers, divided by the
  window's height and width in float32 as PyTorch's pooling kernel does. The crops therefore
  equal stock's to float rounding (usually bit for bit), unlike ``roi_align``'s bilinear
  sampling. Boxes whose clipped crop is empty (wholly outside the frame) are dropped; stock
  skips their crop and misaligns the rest, or raises.
- The final "Min"-overlap NMS runs on the host after one transfer of the O-Net survivors.

``refine(images, boxes)`` re-finds faces already known (e.g. from the previous frame of a video)
without P-Net: each known box, squared, and copies shifted by ``REFINE_SHIFT`` of its size up, down,
left and right are the candidates R-Net and O-Net score and regress, with the usual NMS. It never
finds a new face, and costs a few milliseconds for a few faces instead of a full pyramid.

Optional ``half=True`` (CUDA only) runs the three networks in float16; pyramid resampling,
crops and box maths stay float32.

Output per image: ``MtcnnFaces`` with boxes (N, 4) x1, y1, x2, y2, scores (N,) and
landmarks (N, 5, 2) x, y, float32 numpy, best score first, in the coordinates of the image
given (like stock ``detect_face``: not clipped, no edge padding — the adapter does that).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from torchvision.ops import batched_nms

__all__ = ["FastMtcnn", "MtcnnFaces"]

_PNET_CELL = 12
_PNET_STRIDE = 2
_RNET_SIZE = 24
_ONET_SIZE = 48
_PIXEL_MEAN = 127.5
_PIXEL_SCALE = 0.0078125
_NMS_SCALE_IOU = 0.5
_NMS_IMAGE_IOU = 0.7
_NMS_FINAL_MIN = 0.7
_MAX_PYRAMID_CACHE = 8
_INT32_SAFE_PIXELS = (2**31 - 1) // 255
REFINE_SHIFT = 0.25
"""``refine`` candidates: each known box, and copies moved by this share of its size along x and y."""
_REFINE_NMS_IOU = 0.3  # one candidate per face left for O-Net: most of the cost
_REFINE_OFFSETS = ((0.0, 0.0), (REFINE_SHIFT, 0.0), (-REFINE_SHIFT, 0.0), (0.0, REFINE_SHIFT), (0.0, -REFINE_SHIFT))


class MtcnnFaces(NamedTuple):
    """One image's faces: boxes (N, 4), scores (N,), landmarks (N, 5, 2); float32 numpy."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty() -> MtcnnFaces:
        return MtcnnFaces(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


@dataclass(frozen=True)
class _Pyramid:
    """P-Net's scales for one (height, width, min face) and the box of every output cell."""

    sizes: tuple[tuple[int, int], ...]  # resampled (h, w) per scale
    out_shapes: tuple[tuple[int, int], ...]  # P-Net output (h, w) per scale
    cell_boxes: torch.Tensor  # (K, 4) float32: stage-1 box of each cell of each scale
    cell_scale: torch.Tensor  # (K,) int64: scale index of each cell


class FastMtcnn:
    """MTCNN on a batch of equal-size RGB uint8 images, vectorised over boxes and images.

    ``nets``: (pnet, rnet, onet) to share, e.g. a ``facenet_pytorch.MTCNN``'s; by default the
    bundled pretrained ones are loaded. With ``half=True`` half-precision copies are made,
    so shared modules are never modified. ``chunk`` bounds how many candidates are cropped
    and run through R-/O-Net at once (memory). Not for concurrent use from several threads.
    """

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        device: str | torch.device = "cpu",
        *,
        half: bool = False,
        nets: tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module] | None = None,
        chunk: int = 2048,
    ) -> None:
        if min_face_size < 1:
            raise ValueError(f"FastMtcnn: min_face_size must be >= 1, got {min_face_size}")
        if len(thresholds) != 3:
            raise ValueError(f"FastMtcnn: expected 3 thresholds, got {thresholds!r}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"FastMtcnn: factor must be in (0, 1), got {factor}")
        if chunk < 1:
            raise ValueError(f"FastMtcnn: chunk must be >= 1, got {chunk}")
        self.device = torch.device(device)
        if half and self.device.type != "cuda":
            raise ValueError(f"FastMtcnn: half=True needs a CUDA device, got {self.device}")
        self.min_face_size = int(min_face_size)
        self.thresholds = (float(thresholds[0]), float(thresholds[1]), float(thresholds[2]))
        self.factor = float(factor)
        self.half = bool(half)
        self.chunk = int(chunk)
        pnet, rnet, onet = nets if nets is not None else _load_nets()
        if half:
            pnet, rnet, onet = (copy.deepcopy(net).half() for net in (pnet, rnet, onet))
        self.pnet, self.rnet, self.onet = (net.to(self.device).eval() for net in (pnet, rnet, onet))
        self._net_dtype = torch.float16 if half else torch.float32
        self._pyramids: dict[tuple[int, int, int], _Pyramid] = {}

    # --- public -------------------------------------------------------------------------------

    def detect(
        self, images: np.ndarray | torch.Tensor | Sequence[np.ndarray], min_face_size: int | None = None
    ) -> list[MtcnnFaces]:
        """Faces in (B, H, W, 3) or (H, W, 3) RGB uint8 images (numpy, tensor or a list of
        equal-size arrays); one ``MtcnnFaces`` per image. ``min_face_size`` overrides the
        constructor's for this call."""
        batch = self._as_batch(images)
        count, height, width = int(batch.shape[0]), int(batch.shape[1]), int(batch.shape[2])
        min_face = self.min_face_size if min_face_size is None else int(min_face_size)
        if min_face < 1:
            raise ValueError(f"FastMtcnn: min_face_size must be >= 1, got {min_face}")
        if count == 0:
            return []
        pyramid = self._pyramid(height, width, min_face)
        if not pyramid.sizes:  # stock raises here (empty scale pyramid)
            return [MtcnnFaces.empty() for _ in range(count)]
        with torch.inference_mode():
            return self._detect(batch.to(self.device), pyramid)

    def refine(
        self,
        images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
        boxes: Sequence[np.ndarray],
        thresholds: tuple[float, float] | None = None,
    ) -> list[MtcnnFaces]:
        """Faces near known ``boxes`` (one (N, 4) x1, y1, x2, y2 array per image, in that image's
        pixels) in (B, H, W, 3) RGB uint8 images: R-Net and O-Net on each box and its shifted copies
        (see the module docstring). ``thresholds`` (R, O) default to the constructor's."""
        batch = self._as_batch(images)
        count = int(batch.shape[0])
        if len(boxes) != count:
            raise ValueError(f"FastMtcnn.refine: expected {count} box arrays, got {len(boxes)}")
        r_threshold, o_threshold = thresholds if thresholds is not None else self.thresholds[1:]
        candidates, image_ids = [], []
        for index, known in enumerate(boxes):
            known = np.asarray(known, np.float32).reshape(-1, 4)
            for dx, dy in _REFINE_OFFSETS:
                side_w, side_h = known[:, 2] - known[:, 0], known[:, 3] - known[:, 1]
                shift = np.stack([dx * side_w, dy * side_h, dx * side_w, dy * side_h], axis=1)
                candidates.append(known + shift)
                image_ids.append(np.full(len(known), index, np.int64))
        every = np.concatenate(candidates) if candidates else np.zeros((0, 4), np.float32)
        valid = np.isfinite(every).all(axis=1) & (every[:, 2] > every[:, 0]) & (every[:, 3] > every[:, 1])
        if count == 0 or not valid.any():
            return [MtcnnFaces.empty() for _ in range(count)]
        with torch.inference_mode():
            batch = batch.to(self.device)
            cand = _Candidates(
                _square(torch.from_numpy(every[valid]).to(self.device)),
                torch.from_numpy(np.concatenate(image_ids)[valid]).to(self.device),
            )
            table = _summed_area_table(batch)
            refined = self._refine(table, cand, batch.shape[1:3], r_threshold, _REFINE_NMS_IOU)
            if refined is None:
                return [MtcnnFaces.empty() for _ in range(count)]
            return _per_image(self._output(table, refined, batch.shape[1:3], o_threshold), count)

    # --- stages -------------------------------------------------------------------------------

    def _detect(self, batch: torch.Tensor, pyramid: _Pyramid) -> list[MtcnnFaces]:
        """P-Net proposals → R-Net refinement → O-Net boxes and landmarks → per-image "Min" NMS."""
        count = int(batch.shape[0])
        proposals = self._propose(batch, pyramid)
        if proposals is None:
            return [MtcnnFaces.empty() for _ in range(count)]
        table = _summed_area_table(batch)
        refined = self._refine(table, proposals, batch.shape[1:3])
        if refined is None:
            return [MtcnnFaces.empty() for _ in range(count)]
        return _per_image(self._output(table, refined, batch.shape[1:3]), count)

    def _propose(self, batch: torch.Tensor, pyramid: _Pyramid) -> _Candidates | None:
        """Stage 1: P-Net per scale on the whole batch, one ``nonzero`` over every scale, NMS per
        (image, scale) then per image; squared, regressed boxes (None: no candidate anywhere)."""
        count = int(batch.shape[0])
        prob_all, reg_all = self._pnet_maps(batch, pyramid)
        image_ids, cells = (prob_all >= self.thresholds[0]).nonzero(as_tuple=True)
        if image_ids.numel() == 0:
            return None
        scores = prob_all[image_ids, cells]
        reg = reg_all[image_ids, :, cells]
        boxes = pyramid.cell_boxes[cells]
        keep = batched_nms(boxes, scores, pyramid.cell_scale[cells] * count + image_ids, _NMS_SCALE_IOU)
        boxes, scores, reg, image_ids = boxes[keep], scores[keep], reg[keep], image_ids[keep]
        keep = batched_nms(boxes, scores, image_ids, _NMS_IMAGE_IOU)
        boxes, reg, image_ids = boxes[keep], reg[keep], image_ids[keep]
        return _Candidates(_square(_regressed(boxes, reg, pixel=0.0)), image_ids)

    def _pnet_maps(self, batch: torch.Tensor, pyramid: _Pyramid) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net face probability (B, K) and box regression (B, 4, K) over the K cells of every scale."""
        count = int(batch.shape[0])
        images = batch.permute(0, 3, 1, 2).float()  # channels-last memory, as stock
        probs, regs = [], []
        for size, out_shape in zip(pyramid.sizes, pyramid.out_shapes, strict=True):
            scaled = F.interpolate(images, size=size, mode="area")
            reg, prob = self.pnet(self._normalised(scaled))
            if tuple(prob.shape[2:]) != out_shape:
                raise RuntimeError(f"P-Net output {tuple(prob.shape[2:])} != expected {out_shape} at {size}")
            probs.append(prob[:, 1].reshape(count, -1))
            regs.append(reg.reshape(count, 4, -1))
        return torch.cat(probs, dim=1).float(), torch.cat(regs, dim=2).float()

    def _refine(
        self,
        table: torch.Tensor,
        cand: _Candidates,
        hw: tuple[int, ...],
        threshold: float | None = None,
        nms_iou: float = _NMS_IMAGE_IOU,
    ) -> _Candidates | None:
        """Stage 2: R-Net on 24 px area crops of every candidate at once; threshold, NMS, regress."""
        reg, prob = self._run_cropped(self.rnet, table, cand.image_ids, cand.boxes, _RNET_SIZE, hw[0], hw[1])
        passed = prob[:, 1] > (self.thresholds[1] if threshold is None else threshold)
        boxes, scores, reg, image_ids = cand.boxes[passed], prob[passed, 1], reg[passed], cand.image_ids[passed]
        if image_ids.numel() == 0:
            return None
        keep = batched_nms(boxes, scores, image_ids, nms_iou)
        return _Candidates(_square(_regressed(boxes[keep], reg[keep])), image_ids[keep])

    def _output(
        self, table: torch.Tensor, cand: _Candidates, hw: tuple[int, ...], threshold: float | None = None
    ) -> _Faces:
        """Stage 3: O-Net on 48 px area crops: final scores, landmarks and regressed boxes."""
        reg, points, prob = self._run_cropped(self.onet, table, cand.image_ids, cand.boxes, _ONET_SIZE, hw[0], hw[1])
        passed = prob[:, 1] > (self.thresholds[2] if threshold is None else threshold)
        boxes, scores, reg, points = cand.boxes[passed], prob[passed, 1], reg[passed], points[passed]
        box_w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        box_h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points_x = box_w * points[:, :5] + boxes[:, 0:1] - 1
        points_y = box_h * points[:, 5:] + boxes[:, 1:2] - 1
        landmarks = torch.stack([points_x, points_y], dim=2)
        return _Faces(_regressed(boxes, reg), scores, landmarks, cand.image_ids[passed])

    def _run_cropped(
        self,
        net: torch.nn.Module,
        table: torch.Tensor,
        image_ids: torch.Tensor,
        boxes: torch.Tensor,
        size: int,
        height: int,
        width: int,
    ) -> tuple[torch.Tensor, ...]:
        """Crop every box (stock's integer crop + area resize) and run ``net`` on the crops.
        Boxes with an empty crop get a face probability of -1, so no threshold passes them."""
        outputs = []
        for start in range(0, int(image_ids.shape[0]), self.chunk):
            stop = start + self.chunk
            crops, valid = _area_crops(table, image_ids[start:stop], boxes[start:stop], size, height, width)
            out = [o.float() for o in net(self._normalised(crops))]
            out[-1] = torch.where(valid[:, None], out[-1], torch.full_like(out[-1], -1.0))
            outputs.append(out)
        if len(outputs) == 1:
            return tuple(outputs[0])
        return tuple(torch.cat(parts, dim=0) for parts in zip(*outputs, strict=True))

    def _normalised(self, pixels: torch.Tensor) -> torch.Tensor:
        return ((pixels - _PIXEL_MEAN) * _PIXEL_SCALE).to(self._net_dtype)

    # --- input and pyramid ----------------------------------------------------------------------

    def _as_batch(self, images: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            batch = images
        elif isinstance(images, np.ndarray):
            batch = torch.from_numpy(np.ascontiguousarray(images))
        else:
            arrays = [np.asarray(image) for image in images]
            if not arrays:
                return torch.zeros((0, 1, 1, 3), dtype=torch.uint8)
            for index, array in enumerate(arrays):
                if array.shape != arrays[0].shape:
                    raise ValueError(f"FastMtcnn: images[{index}] shape {array.shape} differs from {arrays[0].shape}")
            batch = torch.from_numpy(np.stack(arrays))
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.dtype != torch.uint8:
            raise TypeError(f"FastMtcnn: expected uint8 images, got {batch.dtype}")
        if batch.ndim != 4 or batch.shape[3] != 3 or batch.shape[1] == 0 or batch.shape[2] == 0:
            raise ValueError(f"FastMtcnn: expected (B, H, W, 3) images, got {tuple(batch.shape)}")
        return batch

    def _pyramid(self, height: int, width: int, min_face: int) -> _Pyramid:
        key = (height, width, min_face)
        cached = self._pyramids.get(key)
        if cached is not None:
            return cached
        if len(self._pyramids) >= _MAX_PYRAMID_CACHE:
            self._pyramids.pop(next(iter(self._pyramids)))
        pyramid = _build_pyramid(height, width, min_face, self.factor, self.device)
        self._pyramids[key] = pyramid
        return pyramid


class _Candidates(NamedTuple):
    """Candidate boxes (N, 4) of all images of a batch, and the image each belongs to (N,)."""

    boxes: torch.Tensor
    image_ids: torch.Tensor


class _Faces(NamedTuple):
    """O-Net's output for all images: boxes (N, 4), scores (N,), landmarks (N, 5, 2), image ids (N,)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor
    image_ids: torch.Tensor


def _per_image(faces: _Faces, count: int) -> list[MtcnnFaces]:
    """One transfer to the host, then the "Min"-overlap NMS per image."""
    boxes = faces.boxes.cpu().numpy().astype(np.float32, copy=False)
    scores = faces.scores.cpu().numpy().astype(np.float32, copy=False)
    landmarks = faces.landmarks.cpu().numpy().astype(np.float32, copy=False)
    image_ids = faces.image_ids.cpu().numpy()
    out = []
    for index in range(count):
        rows = np.flatnonzero(image_ids == index)
        rows = rows[_nms_min(boxes[rows], scores[rows], _NMS_FINAL_MIN)]
        out.append(
            MtcnnFaces(
                np.ascontiguousarray(boxes[rows]),
                np.ascontiguousarray(scores[rows]),
                np.ascontiguousarray(landmarks[rows]),
            )
        )
    return out


def _load_nets() -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet  # bundled weights, no download

    return PNet(), RNet(), ONet()


def _pnet_output_length(length: int) -> int:
    length -= 2  # conv1 3x3
    length = math.ceil((length - 2) / 2) + 1  # max-pool 2/2, ceil mode
    return length - 4  # conv2, conv3 3x3


def _build_pyramid(height: int, width: int, min_face: int, factor: float, device: torch.device) -> _Pyramid:
    # The same float recurrence as stock detect_face, so the same scales and sizes.
    scale = 12.0 / min_face
    min_side = min(height, width) * scale
    sizes, out_shapes, cell_boxes, cell_scale = [], [], [], []
    index = 0
    while min_side >= 12:
        size = (int(height * scale + 1), int(width * scale + 1))
        out_shape = (_pnet_output_length(size[0]), _pnet_output_length(size[1]))
        sizes.append(size)
        out_shapes.append(out_shape)
        ys, xs = torch.meshgrid(
            torch.arange(out_shape[0], device=device),
            torch.arange(out_shape[1], device=device),
            indexing="ij",
        )
        cells = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).float()
        # As stock generateBoundingBox: float32 maths, division by the Python float scale.
        top_left = ((_PNET_STRIDE * cells + 1) / scale).floor()
        bottom_right = ((_PNET_STRIDE * cells + _PNET_CELL - 1 + 1) / scale).floor()
        cell_boxes.append(torch.cat([top_left, bottom_right], dim=1))
        cell_scale.append(torch.full((cells.shape[0],), index, dtype=torch.int64, device=device))
        index += 1
        scale *= factor
        min_side *= factor
    if not sizes:
        empty = torch.zeros((0, 4), device=device)
        return _Pyramid((), (), empty, torch.zeros((0,), dtype=torch.int64, device=device))
    return _Pyramid(tuple(sizes), tuple(out_shapes), torch.cat(cell_boxes), torch.cat(cell_scale))


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Stock ``rerec``: a square of side max(w, h) around the box centre."""
    box_h = boxes[:, 3] - boxes[:, 1]
    box_w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(box_w, box_h)
    x1 = boxes[:, 0] + box_w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + box_h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _regressed(boxes: torch.Tensor, reg: torch.Tensor, pixel: float = 1.0) -> torch.Tensor:
    """Stock ``bbreg``: each corner moved by ``reg`` in units of the box width and height, measured as
    ``x2 - x1 + pixel`` (R-/O-Net: +1, as stock; P-Net's proposals: 0, as stock's stage 1)."""
    box_w = boxes[:, 2] - boxes[:, 0] + pixel
    box_h = boxes[:, 3] - boxes[:, 1] + pixel
    return torch.stack(
        [
            boxes[:, 0] + reg[:, 0] * box_w,
            boxes[:, 1] + reg[:, 1] * box_h,
            boxes[:, 2] + reg[:, 2] * box_w,
            boxes[:, 3] + reg[:, 3] * box_h,
        ],
        dim=1,
    )


def _summed_area_table(batch: torch.Tensor) -> torch.Tensor:
    """(B, H + 1, W + 1, 3) integer prefix sums of the uint8 (B, H, W, 3) batch."""
    count, height, width, _ = batch.shape
    dtype = torch.int32 if height * width <= _INT32_SAFE_PIXELS else torch.int64
    if batch.device.type == "cpu" and dtype == torch.int32:  # OpenCV's is ~30x faster than cumsum
        table = torch.empty((count, height + 1, width + 1, 3), dtype=dtype)
        images, out = batch.numpy(), table.numpy()
        for index in range(count):
            out[index] = cv2.integral(np.ascontiguousarray(images[index]), sdepth=cv2.CV_32S)
        return table
    table = torch.zeros((count, height + 1, width + 1, 3), dtype=dtype, device=batch.device)
    table[:, 1:, 1:] = batch.cumsum(dim=1, dtype=dtype).cumsum(dim=2, dtype=dtype)
    return table


def _area_crops(
    table: torch.Tensor, image_ids: torch.Tensor, boxes: torch.Tensor, size: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, size, size) float32 crops equal to stock's ``imresample(img[y-1:ey, x-1:ex])``
    and an (N,) mask of boxes whose clipped crop is not empty.

    Stock truncates the box to integers, clips x, y to >= 1 and ex, ey to <= the frame, and
    area-resizes rows y-1 .. ey-1 and columns x-1 .. ex-1. Area resize is adaptive average
    pooling; its windows have integer bounds, so each is a rectangle sum from the table."""
    corners = boxes.trunc().to(torch.int64)
    x0 = corners[:, 0].clamp(min=1) - 1
    y0 = corners[:, 1].clamp(min=1) - 1
    x_end = corners[:, 2].clamp(max=width)
    y_end = corners[:, 3].clamp(max=height)
    crop_w, crop_h = x_end - x0, y_end - y0
    valid = (crop_w > 0) & (crop_h > 0)
    x0, y0 = torch.where(valid, x0, 0), torch.where(valid, y0, 0)
    crop_w, crop_h = torch.where(valid, crop_w, 1), torch.where(valid, crop_h, 1)

    cell = torch.arange(size, device=boxes.device)
    row_lo = (cell * crop_h[:, None]) // size  # (N, size), PyTorch's adaptive-pool start_index
    row_hi = ((cell + 1) * crop_h[:, None] + size - 1) // size  # end_index (ceil)
    col_lo = (cell * crop_w[:, None]) // size
    col_hi = ((cell + 1) * crop_w[:, None] + size - 1) // size
    rows = torch.cat([row_lo, row_hi], dim=1) + y0[:, None]  # (N, 2 size)
    cols = torch.cat([col_lo, col_hi], dim=1) + x0[:, None]
    stride_y = table.shape[2]
    flat = ((image_ids[:, None] * table.shape[1] + rows) * stride_y)[:, :, None] + cols[:, None, :]
    picked = table.reshape(-1, 3).index_select(0, flat.reshape(-1)).reshape(-1, 2 * size, 2 * size, 3)
    lo, hi = slice(0, size), slice(size, 2 * size)
    sums = picked[:, hi, hi] - picked[:, lo, hi] - picked[:, hi, lo] + picked[:, lo, lo]
    win_h = (row_hi - row_lo).float()[:, :, None, None]
    win_w = (col_hi - col_lo).float()[:, None, :, None]
    crops = sums.float() / win_h / win_w
    return crops.permute(0, 3, 1, 2), valid


def _nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Stock's greedy NMS with intersection over the *smaller* area (+1 pixel convention):
    indices kept, best score first."""
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))  # float32, as stock
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = inter_w * inter_h / np.minimum(area[best], area[rest])
        order = rest[overlap <= threshold]
    return np.asarray(kept, np.int64)
