"""Face alignment: 5-point similarity warps and facenet-pytorch style box crops.

Pure numpy/OpenCV core; torch is imported lazily, only by the batched warp.

Conventions
-----------
- Landmarks are (5, 2) ``(x, y)`` full-frame pixels in the order left eye, right eye, nose,
  left mouth corner, right mouth corner, *as seen in the image* (the image-left eye first).
- A transform is an OpenCV (2, 3) float64 matrix mapping image pixels to crop pixels, in
  OpenCV's convention that integer coordinates are pixel centres.
- Two estimators fit it (docs/adaface.md §5.3):

  * ``estimate_similarity``: Umeyama least squares, image → template, never reflective. This
    is what production uses (the AdaFace IJB path, CVLFace and insightface do the same).
  * ``estimate_parity``: the official AdaFace inference path, a MATLAB ``cp2tform`` clone that
    fits in the inverse direction and may pick a mirrored transform. Kept for parity tests.

- Crops other than 112 px use insightface's ``estimate_norm`` convention for the template
  (see ``template_for_size``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

if TYPE_CHECKING:
    import torch

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "AlignMode",
    "box_crop",
    "box_crop_bounds",
    "estimate_parity",
    "estimate_similarity",
    "estimate_transform",
    "frame_to_tensor",
    "grid_thetas",
    "template_for_size",
    "warp_batch",
    "warp_to_template",
]

AlignMode = Literal["similarity", "parity"]

# AdaFace's get_reference_facial_points(default_square=True): the 96x112 template with +8 on
# every x, as float64 (docs/adaface.md §5.3). Same points as insightface's arcface_dst to 4 decimals.
ARCFACE_TEMPLATE_112: np.ndarray = np.array(
    [
        [38.29459953, 51.69630051],  # left eye (image left)
        [73.53179932, 51.50139999],  # right eye
        [56.02519989, 71.73660278],  # nose tip
        [41.54930115, 92.36550140],  # left mouth corner
        [70.72990036, 92.20410156],  # right mouth corner
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE_112.flags.writeable = False

_TEMPLATE_SIZE = 112
_MIN_SCALE = 1e-9


# ---------------------------------------------------------------------------------- checks


def _as_points(name: str, pts: object) -> np.ndarray:
    """Return ``pts`` as a fresh (N, 2) float64 array (N >= 2), finite and not all coincident."""
    arr = np.array(pts, dtype=np.float64, copy=True)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name}: expected an (N, 2) array of (x, y) points with N >= 2, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: points must be finite, got NaN or inf in {arr.tolist()}")
    spread = float(np.abs(arr - arr.mean(axis=0)).max())
    if spread <= 1e-9 * max(1.0, float(np.abs(arr).max())):
        raise ValueError(
            f"{name}: all points coincide at {arr[0].tolist()}; a similarity transform needs two distinct points"
        )
    return arr


def _as_point_pair(src_pts: object, dst_pts: object) -> tuple[np.ndarray, np.ndarray]:
    src = _as_points("src_pts", src_pts)
    dst = _as_points("dst_pts", dst_pts)
    if src.shape != dst.shape:
        raise ValueError(f"src_pts and dst_pts must have the same shape, got {src.shape} and {dst.shape}")
    return src, dst


def _check_landmarks(landmarks: object) -> np.ndarray:
    arr = np.asarray(landmarks)
    if arr.shape != (5, 2):
        raise ValueError(f"landmarks: expected shape (5, 2), got {arr.shape}")
    return arr


def _check_image(image_bgr: object) -> np.ndarray:
    if not isinstance(image_bgr, np.ndarray):
        raise TypeError(f"image_bgr: expected numpy.ndarray, got {type(image_bgr).__name__}")
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"image_bgr: expected an HxWx3 uint8 array, got {image_bgr.dtype} {image_bgr.shape}")
    if image_bgr.shape[0] == 0 or image_bgr.shape[1] == 0:
        raise ValueError(f"image_bgr: empty image {image_bgr.shape}")
    return image_bgr


def _check_size(size: int) -> int:
    if int(size) != size or size < 1:
        raise ValueError(f"size: must be a positive integer, got {size!r}")
    return int(size)


def _check_matrix(name: str, matrix: np.ndarray) -> np.ndarray:
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name}: the fitted transform is not finite: {matrix.tolist()}")
    if abs(np.linalg.det(matrix[:, :2])) < _MIN_SCALE**2:
        raise ValueError(f"{name}: the fitted transform collapses the points (scale ~ 0): {matrix.tolist()}")
    return matrix


# ---------------------------------------------------------------------- similarity (Umeyama)


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama's closed form via ``skimage.transform.SimilarityTransform``: it minimises the
    error in *dst* (crop) pixels and never reflects. Returns the (2, 3) float64 OpenCV matrix.
    Raises ``ValueError`` for a wrong shape, NaN/inf, coincident points or a zero-scale fit.
    """
    src, dst = _as_point_pair(src_pts, dst_pts)
    tform = SimilarityTransform.from_estimate(src, dst)
    if not tform:
        raise ValueError(f"estimate_similarity: fit failed ({tform})")
    return _check_matrix("estimate_similarity", np.array(tform.params[:2], dtype=np.float64))


# ------------------------------------------------------------ parity (official cp2tform clone)


def _fit_inverse_nonreflective(uv: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """cp2tform ``findNonreflectiveSimilarity``: fit xy → uv, return the 3x3 uv → xy matrix.

    Solves u = a·x + b·y + c, v = −b·x + a·y + d by ``lstsq`` (row-vector convention:
    [x y 1] · Tinv = [u v 1]), inverts, and forces the third column to (0, 0, 1).
    """
    x, y = xy[:, :1], xy[:, 1:]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    system = np.vstack([np.hstack([x, y, ones, zeros]), np.hstack([y, -x, zeros, ones])])
    target = np.vstack([uv[:, :1], uv[:, 1:]])
    if np.linalg.matrix_rank(system) < 4:
        raise ValueError(
            "estimate_parity: rank-deficient system (cp2tform:twoUniquePointsReq); need two distinct points"
        )
    a, b, c, d = np.linalg.lstsq(system, target, rcond=None)[0].ravel()
    inverse = np.array([[a, -b, 0.0], [b, a, 0.0], [c, d, 1.0]])
    forward = np.linalg.inv(inverse)
    forward[:, 2] = (0.0, 0.0, 1.0)
    return forward


def _apply_rows(transform: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """cp2tform ``tformfwd``: [u v 1] · T, first two columns."""
    return (np.hstack([uv, np.ones((uv.shape[0], 1))]) @ transform)[:, :2]


def estimate_parity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """The official AdaFace transform (``get_similarity_transform_for_cv2``, reflective=True).

    Reproduces, step by step (docs/adaface.md §5.3): both point sets cast to float32 as
    ``warp_and_crop_face`` does; (1) the non-reflective fit in the inverse direction; (2) the
    reflective candidate, fitted against the x-mirrored dst and un-mirrored with
    diag(−1, 1, 1); (3) the choice rule, which, because the official code mirrors dst *in
    place*, measures both candidates against the **mirrored** dst and keeps the first when
    norm1 <= norm2. The result may therefore be a mirror warp (det < 0). Returns the (2, 3)
    float64 OpenCV matrix. Production should use ``estimate_similarity``.
    """
    src, dst = _as_point_pair(src_pts, dst_pts)
    src = src.astype(np.float32).astype(np.float64)
    dst = dst.astype(np.float32).astype(np.float64)
    plain = _fit_inverse_nonreflective(src, dst)
    dst_mirrored = dst * np.array([-1.0, 1.0])
    mirror = _fit_inverse_nonreflective(src, dst_mirrored) @ np.diag([-1.0, 1.0, 1.0])
    norm_plain = np.linalg.norm(_apply_rows(plain, src) - dst_mirrored)
    norm_mirror = np.linalg.norm(_apply_rows(mirror, src) - dst_mirrored)
    chosen = plain if norm_plain <= norm_mirror else mirror
    return _check_matrix("estimate_parity", np.ascontiguousarray(chosen[:, :2].T))


# --------------------------------------------------------------------------------- warping


def template_for_size(size: int = _TEMPLATE_SIZE) -> np.ndarray:
    """The 5-point template for a ``size`` x ``size`` crop, insightface ``estimate_norm`` style.

    A multiple of 112 scales the 112 template by size/112. Any other size scales it by
    size/128 and shifts x by 8·size/128 (the 112 template sits in a 128 frame, centred in x
    only): e.g. 128 → template + (8, 0); 160 → template·1.25 + (10, 0).
    """
    size = _check_size(size)
    if size % _TEMPLATE_SIZE == 0:
        ratio, shift_x = size / _TEMPLATE_SIZE, 0.0
    else:
        ratio = size / 128.0
        shift_x = 8.0 * ratio
    return ARCFACE_TEMPLATE_112 * ratio + np.array([shift_x, 0.0])


def estimate_transform(landmarks: np.ndarray, size: int = _TEMPLATE_SIZE, mode: AlignMode = "similarity") -> np.ndarray:
    """The (2, 3) matrix that carries ``landmarks`` onto the template of a ``size`` crop."""
    pts = _check_landmarks(landmarks)
    template = template_for_size(size)
    if mode == "similarity":
        return estimate_similarity(pts, template)
    if mode == "parity":
        return estimate_parity(pts, template)
    raise ValueError(f"mode: expected 'similarity' or 'parity', got {mode!r}")


def warp_to_template(
    image_bgr: np.ndarray,
    landmarks: np.ndarray,
    size: int = _TEMPLATE_SIZE,
    mode: AlignMode = "similarity",
) -> np.ndarray:
    """Aligned (size, size, 3) uint8 crop: ``cv2.warpAffine``, bilinear, constant black border.

    The channel order of ``image_bgr`` is kept (BGR in, BGR out).
    """
    image = _check_image(image_bgr)
    size = _check_size(size)
    matrix = estimate_transform(landmarks, size, mode)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )


# ------------------------------------------------------------------- batched warp (torch)


def _as_matrices(matrices: object) -> np.ndarray:
    if hasattr(matrices, "detach"):  # a torch tensor, wherever it lives
        matrices = matrices.detach().cpu().numpy()
    mats = np.array(matrices, dtype=np.float64)
    if mats.ndim == 2:
        mats = mats[None]
    if mats.ndim != 3 or mats.shape[1:] != (2, 3):
        raise ValueError(f"matrices: expected (N, 2, 3) OpenCV affine matrices, got shape {mats.shape}")
    if not np.isfinite(mats).all():
        raise ValueError("matrices: must be finite")
    if (np.abs(np.linalg.det(mats[:, :, :2])) < _MIN_SCALE**2).any():
        raise ValueError("matrices: singular affine matrix (zero scale) cannot be inverted")
    return mats


def _pixel_to_normalised(width: int, height: int) -> np.ndarray:
    """3x3 map from pixel centres to ``grid_sample``'s align_corners=False coordinates."""
    return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0.0, 0.0, 1.0]])


def grid_thetas(matrices: np.ndarray, image_hw: tuple[int, int], size: int) -> np.ndarray:
    """``affine_grid`` thetas (N, 2, 3) reproducing ``cv2.warpAffine(image, M, (size, size))``.

    cv2 samples crop pixel p at M⁻¹·p (pixel centres at integers). With align_corners=False
    on both ``affine_grid`` and ``grid_sample``: theta = N_image · M⁻¹ · N_crop⁻¹.
    """
    mats = _as_matrices(matrices)
    height, width = image_hw
    homogeneous = np.concatenate([mats, np.broadcast_to([0.0, 0.0, 1.0], (mats.shape[0], 1, 3))], axis=1)
    crop_from_normalised = np.linalg.inv(_pixel_to_normalised(size, size))
    thetas = _pixel_to_normalised(width, height) @ np.linalg.inv(homogeneous) @ crop_from_normalised
    return thetas[:, :2]


def frame_to_tensor(image_bgr: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 frame → (1, 3, H, W) uint8 tensor on ``device``, channel order kept."""
    import torch

    image = _check_image(image_bgr)
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).unsqueeze(0)


def _check_frames(images: torch.Tensor, count: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected a (1, 3, H, W) or (N, 3, H, W) tensor, got shape {tuple(images.shape)}")
    if images.shape[0] not in (1, count):
        raise ValueError(
            f"images: batch of {images.shape[0]} frames does not match {count} matrices (give 1 or {count})"
        )


def warp_batch(images: torch.Tensor, matrices: np.ndarray | torch.Tensor, size: int = _TEMPLATE_SIZE) -> torch.Tensor:
    """Warp N crops at once with ``affine_grid`` + ``grid_sample`` (bilinear, zero padding).

    ``images`` is one full-resolution frame (1, 3, H, W), shared by all N matrices, or N
    frames (N, 3, H, W), one per matrix; uint8 or float in 0..255, any channel order (kept).
    ``matrices`` are (N, 2, 3) OpenCV image → crop matrices (``estimate_transform``; one (2, 3)
    matrix counts as N = 1), numpy or tensor, inverted on the CPU in float64. Runs on
    the tensor's device (CUDA or CPU). Returns a (N, size, size, 3) **uint8 tensor** on that
    device, laid out like ``warp_to_template``'s output; ``.cpu().numpy()`` for FaceCrops.
    Agrees with ``cv2.warpAffine`` up to cv2's 1/32-pixel fixed-point rounding.
    """
    import torch
    from torch.nn import functional as F

    size = _check_size(size)
    mats = _as_matrices(matrices)
    count = mats.shape[0]
    _check_frames(images, count)
    if count == 0:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8, device=images.device)
    thetas = torch.as_tensor(
        grid_thetas(mats, (int(images.shape[2]), int(images.shape[3])), size), dtype=torch.float32, device=images.device
    )
    grid = F.affine_grid(thetas, [count, 3, size, size], align_corners=False)
    source = images.to(torch.float32)
    if images.shape[0] == 1 and count > 1:
        # Stack the N grids vertically and sample the one frame once: no N-fold frame copy.
        grid = grid.reshape(1, count * size, size, 2)
        warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        warped = warped.reshape(3, count, size, size).permute(1, 2, 3, 0)
    else:
        warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        warped = warped.permute(0, 2, 3, 1)
    return warped.round().clamp_(0, 255).to(torch.uint8).contiguous()


# ---------------------------------------------------------------------- box crop (FaceNet)


def box_crop_bounds(
    box: np.ndarray, image_hw: tuple[int, int], size: int = 160, margin: int = 32
) -> tuple[int, int, int, int]:
    """Integer crop bounds (x1, y1, x2, y2) exactly as facenet-pytorch ``extract_face``.

    The margin is given in output pixels: in the box's own scale it is
    margin·(box side)/(size − margin) per axis, half on each side; the bounds are clamped
    to the image and truncated with ``int()``.
    """
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise ValueError(f"box: expected 4 finite values x1, y1, x2, y2, got {np.asarray(box).tolist()}")
    x1, y1, x2, y2 = (float(v) for v in values)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box: needs x2 > x1 and y2 > y1, got {[x1, y1, x2, y2]}")
    if margin < 0 or margin >= size:
        raise ValueError(f"margin: must be in [0, size), got margin={margin} size={size}")
    height, width = image_hw
    margin_x = margin * (x2 - x1) / (size - margin)
    margin_y = margin * (y2 - y1) / (size - margin)
    bounds = (
        int(max(x1 - margin_x / 2, 0)),
        int(max(y1 - margin_y / 2, 0)),
        int(min(x2 + margin_x / 2, width)),
        int(min(y2 + margin_y / 2, height)),
    )
    if bounds[2] <= bounds[0] or bounds[3] <= bounds[1]:
        raise ValueError(f"box: {[x1, y1, x2, y2]} leaves no pixels inside the {width}x{height} image")
    return bounds


def box_crop(image_bgr: np.ndarray, box: np.ndarray, size: int = 160, margin: int = 32) -> np.ndarray:
    """facenet-pytorch style (size, size, 3) uint8 crop of ``box`` plus ``margin``.

    Replicates ``extract_face`` on a numpy image (its ``crop_resize`` numpy path): slice the
    ``box_crop_bounds`` region and ``cv2.resize`` it with INTER_AREA, so the result equals
    ``extract_face(image_bgr, box, size, margin)`` exactly. (On a PIL image facenet-pytorch
    resizes with PIL bilinear instead, which differs by a few grey levels.) Channel order kept.
    """
    image = _check_image(image_bgr)
    size = _check_size(size)
    x1, y1, x2, y2 = box_crop_bounds(box, image.shape[:2], size, margin)
    return cv2.resize(image[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)
