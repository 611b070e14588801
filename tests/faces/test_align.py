"""Face alignment: estimators (Umeyama and the official cp2tform parity clone), warps, box crops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stream.faces.align import (
    ARCFACE_TEMPLATE_112,
    AlignMode,
    box_crop,
    box_crop_bounds,
    estimate_parity,
    estimate_similarity,
    estimate_transform,
    frame_to_tensor,
    template_for_size,
    warp_batch,
    warp_to_template,
)
from tests.conftest import shared_file

ADAFACE_IMAGES = "adaface/face_alignment/test_images"
MODES: tuple[AlignMode, ...] = ("similarity", "parity")

# docs/adaface.md §5.4: official-MTCNN landmarks (3 decimals) and the official transform's matrices.
GOLDEN = {
    "img1": (
        [(108.987, 86.230), (138.267, 86.000), (121.923, 105.170), (110.760, 120.285), (135.254, 120.808)],
        [[1.188018, 0.021537, -92.37874], [-0.021537, 1.188018, -48.64531]],
    ),
    "img2": (
        [(69.503, 85.431), (111.320, 84.881), (88.932, 109.875), (71.444, 133.999), (109.933, 132.162)],
        [[0.831755, -0.007683, -18.18056], [0.007683, 0.831755, -19.67820]],
    ),
    "img3": (
        [(337.701, 257.158), (460.523, 245.568), (394.866, 338.043), (356.798, 398.208), (468.199, 389.836)],
        [[0.279545, -0.023875, -49.02551], [0.023875, 0.279545, -28.80078]],
    ),
}

# The tabulated landmarks are rounded to 1e-3 px, and the translation column amplifies that
# rounding through the ~60 px lever of the template: fitting the rounded points can only
# reproduce the translations to ~1e-3. These are points within 4.5e-4 px of the tabulated
# ones (they round to them) found once by bounded least squares (scipy, against a
# transliteration of docs/adaface.md §5.3) so that the official transform gives the golden matrix;
# with them the matrix must match to 1e-4 everywhere.
GOLDEN_UNROUNDED = {
    "img1": [
        [108.987448, 86.229995],
        [138.266945, 85.999897],
        [121.922802, 105.170206],
        [110.759815, 120.285129],
        [135.253749, 120.80845],
    ],
    "img2": [
        [69.502958, 85.431108],
        [111.319858, 84.881008],
        [88.931966, 109.875401],
        [71.444064, 133.99945],
        [109.933035, 132.16245],
    ],
    "img3": [
        [337.70114, 257.157653],
        [460.523067, 245.56755],
        [394.865904, 338.04255],
        [356.797758, 398.207846],
        [468.19945, 389.83555],
    ],
}

# facenet-pytorch MTCNN(device='cpu').detect(pil_rgb, landmarks=True), measured once (0.1 px).
MULTIFACE_LANDMARKS = [
    [[877.4, 486.2], [919.0, 484.6], [895.7, 516.8], [884.4, 533.6], [920.2, 530.2]],
    [[580.2, 90.0], [616.5, 93.1], [599.1, 120.3], [576.3, 127.2], [610.8, 129.4]],
    [[452.3, 175.2], [489.4, 178.6], [474.8, 202.5], [451.8, 216.0], [482.7, 217.4]],
    [[246.2, 294.3], [282.6, 287.3], [269.9, 316.1], [253.6, 329.5], [292.1, 322.0]],
    [[740.3, 510.5], [778.6, 507.4], [762.6, 537.5], [745.3, 546.9], [781.4, 542.4]],
    [[640.5, 237.3], [676.9, 238.5], [657.0, 260.7], [639.5, 268.9], [676.0, 270.3]],
]
MULTIFACE_BOXES = [
    [859.2, 436.6, 953.6, 558.6],
    [554.1, 45.5, 632.8, 158.1],
    [420.1, 133.0, 502.7, 240.2],
    [225.8, 249.1, 304.8, 356.8],
    [722.2, 464.4, 797.6, 573.2],
    [622.2, 197.5, 694.8, 296.8],
]
DAVID = {
    "0500": [[144.4, 79.2], [164.9, 77.3], [155.3, 92.1], [148.6, 101.8], [165.2, 100.5]],
    "0600": [[176.6, 75.0], [200.1, 75.5], [188.5, 90.3], [175.7, 98.6], [199.4, 99.4]],
    "0700": [[200.4, 102.3], [222.4, 100.0], [213.8, 115.8], [201.5, 124.4], [221.5, 122.0]],
}


# ----------------------------------------------------------------------------------- helpers


def similarity_matrix(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[cos, -sin, tx], [sin, cos, ty]])


def apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def official_reference(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """docs/adaface.md §5.3 steps 1–3 written out literally, with the in-place mirror of dst."""
    uv = np.float32(src)
    xy = np.float32(np.array(dst))  # a fresh float32 copy, as warp_and_crop_face makes

    def fit(uv: np.ndarray, xy: np.ndarray) -> np.ndarray:
        m = xy.shape[0]
        x, y = xy[:, 0].reshape(-1, 1), xy[:, 1].reshape(-1, 1)
        big = np.vstack(
            (
                np.hstack((x, y, np.ones((m, 1)), np.zeros((m, 1)))),
                np.hstack((y, -x, np.zeros((m, 1)), np.ones((m, 1)))),
            )
        )
        rhs = np.vstack((uv[:, 0].reshape(-1, 1), uv[:, 1].reshape(-1, 1)))
        a, b, c, d = np.linalg.lstsq(big, rhs, rcond=None)[0].ravel()
        t = np.linalg.inv(np.array([[a, -b, 0], [b, a, 0], [c, d, 1]]))
        t[:, 2] = [0, 0, 1]
        return t

    def forward(t: np.ndarray, uv: np.ndarray) -> np.ndarray:
        return np.dot(np.hstack((uv, np.ones((uv.shape[0], 1)))), t)[:, :2]

    t1 = fit(uv, xy)
    xy_r = xy
    xy_r[:, 0] = -1 * xy_r[:, 0]  # mutates xy too: the official aliasing
    t2 = np.dot(fit(uv, xy_r), np.array([[-1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    norm1 = np.linalg.norm(forward(t1, uv) - xy)
    norm2 = np.linalg.norm(forward(t2, uv) - xy)
    return (t1 if norm1 <= norm2 else t2)[:, 0:2].T


def blob_image(points: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    img = np.zeros(shape)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    grey = np.clip(np.round(255 * img), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def centroid_near(crop: np.ndarray, point: np.ndarray, radius: int = 6) -> np.ndarray:
    grey = crop[:, :, 0].astype(np.float64)
    cx, cy = int(np.rint(point[0])), int(np.rint(point[1]))
    window = grey[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    yy, xx = np.mgrid[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    return np.array([(window * xx).sum(), (window * yy).sum()]) / window.sum()


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def facenet_detect_face_module():
    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch not importable")
    from facenet_pytorch.models.utils import detect_face

    return detect_face


@pytest.fixture(scope="module")
def adaface_images(shared_data: Path) -> dict[str, np.ndarray]:
    return {name: cv2.imread(str(shared_file(shared_data, f"{ADAFACE_IMAGES}/{name}.jpeg"))) for name in GOLDEN}


# ---------------------------------------------------------------------------------- template


def test_template_is_the_spec_template_read_only():
    summary = [(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)]
    assert ARCFACE_TEMPLATE_112.shape == (5, 2) and ARCFACE_TEMPLATE_112.dtype == np.float64
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112, summary, atol=1e-4)
    assert ARCFACE_TEMPLATE_112[0, 0] < ARCFACE_TEMPLATE_112[1, 0]  # image-left eye first
    assert ARCFACE_TEMPLATE_112[3, 0] < ARCFACE_TEMPLATE_112[4, 0]
    with pytest.raises(ValueError):
        ARCFACE_TEMPLATE_112[0, 0] = 0.0


def test_template_for_other_sizes_follows_insightface():
    np.testing.assert_array_equal(template_for_size(112), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(template_for_size(224), ARCFACE_TEMPLATE_112 * 2)
    np.testing.assert_allclose(template_for_size(128), ARCFACE_TEMPLATE_112 + [8.0, 0.0])
    np.testing.assert_allclose(template_for_size(160), ARCFACE_TEMPLATE_112 * 1.25 + [10.0, 0.0])
    for bad in (0, -112, 112.5):
        with pytest.raises(ValueError, match="size"):
            template_for_size(bad)


# ------------------------------------------------------------------------ parity (official)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_parity_golden_from_tabulated_landmarks(name: str):
    landmarks, golden = GOLDEN[name]
    matrix = estimate_parity(np.array(landmarks), ARCFACE_TEMPLATE_112)
    assert matrix.shape == (2, 3) and matrix.dtype == np.float64
    np.testing.assert_allclose(matrix[:, :2], np.array(golden)[:, :2], atol=1e-4, rtol=0)
    # Translations: limited by the 1e-3 rounding of the tabulated landmarks (see GOLDEN_UNROUNDED).
    np.testing.assert_allclose(matrix, golden, atol=2e-3, rtol=0)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_parity_golden_to_1e4_with_landmarks_inside_their_rounding(name: str):
    landmarks, golden = GOLDEN[name]
    unrounded = np.array(GOLDEN_UNROUNDED[name])
    np.testing.assert_array_equal(np.round(unrounded, 3), landmarks)
    assert np.abs(unrounded - landmarks).max() < 5e-4
    matrix = estimate_parity(unrounded, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(matrix, golden, atol=1e-4, rtol=0)
    # The check discriminates: Umeyama (the production estimator) is not the official transform.
    assert np.abs(estimate_similarity(unrounded, ARCFACE_TEMPLATE_112) - golden).max() > 1e-2
    # The golden cases take the non-reflective candidate.
    assert np.linalg.det(matrix[:, :2]) > 0


@pytest.mark.parametrize(
    ("scale", "angle", "tx", "ty"), [(1.2, 0.1, 100.0, 50.0), (3.0, -0.4, -500.0, 40.0), (0.5, 2.5, 10.0, 10.0)]
)
def test_parity_picks_the_mirror_for_a_mirrored_face(scale: float, angle: float, tx: float, ty: float):
    # The face in the image is the template mirrored (x → −x) then moved by a similarity:
    # the reflective candidate fits exactly and the choice rule picks it.
    image_from_template = similarity_matrix(scale, angle, tx, ty) @ np.array([[-1.0, 0, 0], [0, 1, 0], [0, 0, 1]])
    landmarks = apply(image_from_template, ARCFACE_TEMPLATE_112)
    expected = invert(image_from_template)
    matrix = estimate_parity(landmarks, ARCFACE_TEMPLATE_112)
    assert np.linalg.det(matrix[:, :2]) < 0
    np.testing.assert_allclose(matrix, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
    np.testing.assert_allclose(matrix, official_reference(landmarks, ARCFACE_TEMPLATE_112), atol=1e-12)
    assert np.linalg.det(estimate_similarity(landmarks, ARCFACE_TEMPLATE_112)[:, :2]) > 0


def test_parity_reflective_quirk_on_squeezed_face():
    # docs/adaface.md §5.3: eye/mouth spreads squeezed to 20 % make the official rule pick the mirror
    # although the face is not mirrored (the rule compares against the mirrored template).
    template = ARCFACE_TEMPLATE_112
    squeezed = template.copy()
    squeezed[:, 0] = template[:, 0].mean() + 0.2 * (template[:, 0] - template[:, 0].mean())
    landmarks = squeezed * 1.5 + [100.0, 80.0]
    matrix = estimate_parity(landmarks, template)
    assert np.linalg.det(matrix[:, :2]) < 0
    np.testing.assert_allclose(matrix, official_reference(landmarks, template), atol=1e-12)


def test_parity_matches_literal_reference_on_random_faces():
    rng = np.random.default_rng(7)
    mirrors = 0
    for _ in range(300):
        base = similarity_matrix(
            rng.uniform(0.3, 4), rng.uniform(-0.6, 0.6), rng.uniform(-50, 800), rng.uniform(-50, 600)
        )
        squeeze = np.array([rng.uniform(0.15, 1.0), 1.0])
        mean = ARCFACE_TEMPLATE_112.mean(axis=0)
        landmarks = apply(base, mean + (ARCFACE_TEMPLATE_112 - mean) * squeeze) + rng.normal(
            0, rng.uniform(0, 4), (5, 2)
        )
        matrix = estimate_parity(landmarks, ARCFACE_TEMPLATE_112)
        np.testing.assert_allclose(matrix, official_reference(landmarks, ARCFACE_TEMPLATE_112), rtol=1e-9, atol=1e-9)
        mirrors += np.linalg.det(matrix[:, :2]) < 0
    assert 0 < mirrors < 300


def test_parity_does_not_mutate_a_float32_template():
    template = ARCFACE_TEMPLATE_112.astype(np.float32)
    before = template.copy()
    estimate_parity(np.array(GOLDEN["img1"][0]), template)
    np.testing.assert_array_equal(template, before)


# ---------------------------------------------------------------------- similarity (Umeyama)


@pytest.mark.parametrize(
    ("scale", "angle", "tx", "ty"),
    [
        (1.0, 0.0, 0.0, 0.0),
        (0.31, 0.2, -12.5, 7.25),
        (2.7, -1.1, 350.0, -80.0),
        (1.5, 3.0, 640.0, 360.0),
        (8.0, -2.9, 1e3, 2e3),
    ],
)
def test_similarity_recovers_a_known_transform_exactly(scale: float, angle: float, tx: float, ty: float):
    known = similarity_matrix(scale, angle, tx, ty)
    moved = apply(known, ARCFACE_TEMPLATE_112)
    assert np.abs(estimate_similarity(ARCFACE_TEMPLATE_112, moved) - known).max() < 1e-9
    back = estimate_similarity(moved, ARCFACE_TEMPLATE_112)
    assert np.abs(back - invert(known)).max() < 1e-9
    assert np.abs(apply(back, moved) - ARCFACE_TEMPLATE_112).max() < 1e-9


def test_similarity_is_the_exact_least_squares_optimum():
    # Umeyama = linear least squares over [[a, -b, c], [b, a, d]] in crop pixels.
    rng = np.random.default_rng(3)
    for _ in range(50):
        src = rng.uniform(0, 500, (5, 2))
        dst = ARCFACE_TEMPLATE_112 + rng.normal(0, 3, (5, 2))
        x, y = src[:, :1], src[:, 1:]
        system = np.vstack([np.hstack([x, -y, np.ones_like(x), 0 * x]), np.hstack([y, x, 0 * x, np.ones_like(x)])])
        a, b, c, d = np.linalg.lstsq(system, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
        expected = np.array([[a, -b, c], [b, a, d]])
        assert np.abs(estimate_similarity(src, dst) - expected).max() < 1e-9


def test_similarity_never_reflects():
    rng = np.random.default_rng(11)
    mirrored = ARCFACE_TEMPLATE_112 * [-1.0, 1.0] + [200.0, 0.0]
    assert np.linalg.det(estimate_similarity(mirrored, ARCFACE_TEMPLATE_112)[:, :2]) > 0
    for _ in range(200):
        src = rng.uniform(0, 300, (5, 2))
        assert np.linalg.det(estimate_similarity(src, ARCFACE_TEMPLATE_112)[:, :2]) > 0


def test_production_and_parity_agree_closely_on_real_landmarks():
    # docs/adaface.md §5.3: 0.3–1 % in scale, up to ~1 px in translation (in crop pixels).
    for landmarks, _ in GOLDEN.values():
        umeyama = estimate_transform(np.array(landmarks), mode="similarity")
        parity = estimate_transform(np.array(landmarks), mode="parity")
        scale_ratio = np.sqrt(abs(np.linalg.det(umeyama[:, :2])) / abs(np.linalg.det(parity[:, :2])))
        assert abs(scale_ratio - 1) < 0.02
        assert np.abs(apply(umeyama, landmarks) - apply(parity, landmarks)).max() < 2.0


# -------------------------------------------------------------------------------- degenerate


@pytest.mark.parametrize("estimator", [estimate_similarity, estimate_parity])
def test_degenerate_points_raise_clear_errors(estimator):
    template = ARCFACE_TEMPLATE_112
    same = np.full((5, 2), 42.0)
    with pytest.raises(ValueError, match="src_pts: all points coincide"):
        estimator(same, template)
    with pytest.raises(ValueError, match="dst_pts: all points coincide"):
        estimator(template, same)
    for bad in (np.nan, np.inf):
        pts = template.copy()
        pts[2, 1] = bad
        with pytest.raises(ValueError, match="src_pts: points must be finite"):
            estimator(pts, template)
    with pytest.raises(ValueError, match=r"expected an \(N, 2\) array"):
        estimator(np.zeros((5, 3)), template)
    with pytest.raises(ValueError, match="same shape"):
        estimator(template[:4], template)


def test_warp_rejects_bad_landmarks_image_and_mode():
    image = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(ValueError, match="all points coincide"):
        warp_to_template(image, np.full((5, 2), 10.0))
    with pytest.raises(ValueError, match="finite"):
        warp_to_template(image, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match=r"landmarks: expected shape \(5, 2\)"):
        warp_to_template(image, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="mode"):
        warp_to_template(image, ARCFACE_TEMPLATE_112, mode="affine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        warp_to_template(image.astype(np.float32), ARCFACE_TEMPLATE_112)


# ----------------------------------------------------------------------------------- warping


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [112, 128, 224])
def test_warped_landmarks_land_on_the_template(mode: AlignMode, size: int):
    image_from_template = similarity_matrix(2.3, 0.35, 137.3, 41.6)
    landmarks = apply(image_from_template, ARCFACE_TEMPLATE_112)
    image = blob_image(landmarks, (420, 400), sigma=2.3 * 1.2)
    target = template_for_size(size)
    matrix = estimate_transform(landmarks, size, mode)
    np.testing.assert_allclose(apply(matrix, landmarks), target, atol=1e-4)
    crop = warp_to_template(image, landmarks, size, mode)
    batch = warp_batch(frame_to_tensor(image), matrix[None], size).numpy()[0]
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    radius = max(4, size // 20)
    for warped in (crop, batch):
        found = np.array([centroid_near(warped, point, radius) for point in target])
        assert np.abs(found - target).max() < 0.1, found - target


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_torch_warp_matches_cv2_on_real_crops(adaface_images, name: str, mode: AlignMode):
    image = adaface_images[name]
    landmarks = np.array(GOLDEN[name][0])
    expected = warp_to_template(image, landmarks, 112, mode)
    matrix = estimate_transform(landmarks, 112, mode)
    got = warp_batch(frame_to_tensor(image), matrix, 112)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8 and tuple(got.shape) == (1, 112, 112, 3)
    assert mad(got.numpy()[0], expected) < 1.0
    assert expected.mean() > 40  # a real face, not a black border


def test_torch_warp_one_frame_many_faces(shared_data: Path):
    image = cv2.imread(str(shared_file(shared_data, "facenet-pytorch/data/multiface.jpg")))
    matrices = np.stack([estimate_transform(np.array(lm)) for lm in MULTIFACE_LANDMARKS])
    frame = frame_to_tensor(image)
    one_frame = warp_batch(frame, matrices).numpy()
    per_frame = warp_batch(frame.expand(len(matrices), -1, -1, -1), torch.from_numpy(matrices)).numpy()
    np.testing.assert_array_equal(one_frame, per_frame)
    for crop, landmarks in zip(one_frame, MULTIFACE_LANDMARKS, strict=True):
        assert mad(crop, warp_to_template(image, np.array(landmarks))) < 1.0


def test_torch_warp_many_frames(shared_data: Path):
    frames = [cv2.imread(str(shared_file(shared_data, f"otb-david/demo/David/img/{k}.jpg"))) for k in DAVID]
    batch = torch.cat([frame_to_tensor(f) for f in frames]).float()
    matrices = np.stack([estimate_transform(np.array(lm)) for lm in DAVID.values()])
    crops = warp_batch(batch, matrices).numpy()
    for crop, frame, landmarks in zip(crops, frames, DAVID.values(), strict=True):
        assert mad(crop, warp_to_template(frame, np.array(landmarks))) < 1.0


def test_warp_batch_validates_and_handles_empty():
    frame = frame_to_tensor(np.zeros((50, 60, 3), np.uint8))
    matrix = estimate_transform(ARCFACE_TEMPLATE_112)
    assert tuple(warp_batch(frame, np.zeros((0, 2, 3))).shape) == (0, 112, 112, 3)
    with pytest.raises(ValueError, match="does not match"):
        warp_batch(torch.cat([frame, frame]), np.stack([matrix] * 3))
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        warp_batch(frame[0], matrix)
    with pytest.raises(ValueError, match="singular"):
        warp_batch(frame, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(N, 2, 3\)"):
        warp_batch(frame, np.eye(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_warp_batch_on_cuda_matches_cpu(adaface_images):
    image = adaface_images["img3"]
    matrix = estimate_transform(np.array(GOLDEN["img3"][0]))
    on_gpu = warp_batch(frame_to_tensor(image, "cuda"), matrix)
    assert on_gpu.device.type == "cuda"
    assert mad(on_gpu.cpu().numpy()[0], warp_batch(frame_to_tensor(image), matrix).numpy()[0]) < 0.05


# ---------------------------------------------------------------------------------- box crop


def edge_boxes(height: int, width: int) -> list[list[float]]:
    return [
        [-10.0, -5.0, 60.7, 80.2],
        [width - 50.3, height - 40.2, width + 20.0, height + 3.0],
        [10.2, 20.9, 30.4, 27.1],
    ]


def test_box_crop_equals_facenet_extract_face_on_numpy(shared_data: Path, adaface_images):
    detect_face = facenet_detect_face_module()
    multiface = cv2.imread(str(shared_file(shared_data, "facenet-pytorch/data/multiface.jpg")))
    cases = [(multiface, box) for box in MULTIFACE_BOXES + edge_boxes(*multiface.shape[:2])]
    cases += [(img, box) for img in adaface_images.values() for box in edge_boxes(*img.shape[:2])]
    for image, box in cases:
        for size, margin in ((160, 32), (160, 0), (112, 20)):
            ours = box_crop(image, np.array(box), size, margin)
            theirs = detect_face.extract_face(image, box, size, margin).permute(1, 2, 0).numpy()
            assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
            np.testing.assert_array_equal(ours, theirs.astype(np.uint8))


def test_box_crop_close_to_facenet_extract_face_on_pil(shared_data: Path):
    from PIL import Image

    detect_face = facenet_detect_face_module()
    path = shared_file(shared_data, "facenet-pytorch/data/multiface.jpg")
    image = cv2.imread(str(path))
    pil = Image.open(path).convert("RGB")
    for box in MULTIFACE_BOXES:
        theirs_rgb = detect_face.extract_face(pil, box, 160, 32).permute(1, 2, 0).numpy()
        ours = box_crop(image, np.array(box), 160, 32)
        assert mad(ours, np.round(theirs_rgb[:, :, ::-1]).astype(np.uint8)) < 3.0  # PIL bilinear vs INTER_AREA


def test_box_crop_bounds_margin_maths():
    # margin 32 at size 160: a 128-px box gains 32·128/128 = 32 px, 16 a side.
    assert box_crop_bounds(np.array([100.0, 50.0, 228.0, 178.0]), (480, 640), 160, 32) == (84, 34, 244, 194)
    assert box_crop_bounds(np.array([5.0, 5.0, 133.0, 133.0]), (100, 100), 160, 32) == (0, 0, 100, 100)


def test_box_crop_rejects_bad_boxes():
    image = np.zeros((100, 120, 3), np.uint8)
    for box, message in (
        ([50, 50, 40, 60], "x2 > x1"),
        ([np.nan, 0, 10, 10], "finite"),
        ([200, 10, 260, 50], "no pixels"),
        ([1, 2, 3], "4 finite values"),
    ):
        with pytest.raises(ValueError, match=message):
            box_crop(image, np.array(box, dtype=np.float64))
    with pytest.raises(ValueError, match="margin"):
        box_crop(image, np.array([10.0, 10.0, 50.0, 50.0]), size=32, margin=32)


# ------------------------------------------------------------------- live facenet-pytorch


@pytest.mark.slow
def test_end_to_end_with_facenet_mtcnn_landmarks(shared_data: Path):
    from PIL import Image

    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch not importable")
    from facenet_pytorch import MTCNN

    detect_face = facenet_detect_face_module()
    path = shared_file(shared_data, f"{ADAFACE_IMAGES}/img1.jpeg")
    pil = Image.open(path).convert("RGB")
    boxes, _, landmarks = MTCNN(device="cpu").detect(pil, landmarks=True)
    box, points = np.asarray(boxes, np.float32)[0], np.asarray(landmarks, np.float32)[0]
    # Same landmark order as the official detector, a few pixels apart (docs/adaface.md §5.2).
    assert np.abs(points - np.array(GOLDEN["img1"][0])).max() < 4.0
    image = cv2.imread(str(path))
    for mode in MODES:
        expected = warp_to_template(image, points, 112, mode)
        got = warp_batch(frame_to_tensor(image), estimate_transform(points, 112, mode)).numpy()[0]
        assert mad(got, expected) < 1.0
    theirs = detect_face.extract_face(image, box, 160, 32).permute(1, 2, 0).numpy().astype(np.uint8)
    np.testing.assert_array_equal(box_crop(image, box, 160, 32), theirs)
