"""AdaFace backbone parity with the official net.py (docs/adaface.md §1), preprocessing (§4), checkpoints (§3)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stream.faces.adaface import ARCHS, AdaFaceEmbedder, build_backbone, preprocess_bgr
from stream.faces.checkpoints import (
    CheckpointError,
    arch_for_key_count,
    load_adaface_state,
    sha256_file,
)
from tests.fakes import PicklePayload

# docs/adaface.md §1.3 / §1.4: units per stage, stride-2 and conv-shortcut body indices, sizes.
UNITS = {
    "ir_18": (2, 2, 2, 2),
    "ir_34": (3, 4, 6, 3),
    "ir_50": (3, 4, 14, 3),
    "ir_101": (3, 13, 30, 3),
    "ir_se_50": (3, 4, 14, 3),
}
STRIDE2 = {
    "ir_18": (0, 2, 4, 6),
    "ir_34": (0, 3, 7, 13),
    "ir_50": (0, 3, 7, 21),
    "ir_101": (0, 3, 16, 46),
    "ir_se_50": (0, 3, 7, 21),
}
KEYS = {"ir_18": 179, "ir_34": 323, "ir_50": 467, "ir_101": 917, "ir_se_50": 515}
PARAMS = {"ir_18": 24_020_352, "ir_34": 34_134_080, "ir_50": 43_585_600, "ir_101": 65_150_912, "ir_se_50": 43_808_320}
BN_BUFFERS = {"ir_18": 14_622, "ir_34": 25_782, "ir_50": 38_094, "ir_101": 69_657, "ir_se_50": 38_094}
IR101_SHAPES = {
    "input_layer.0.weight": (64, 3, 3, 3),
    "input_layer.1.running_var": (64,),
    "input_layer.2.weight": (64,),
    "body.0.res_layer.0.weight": (64,),
    "body.0.res_layer.1.weight": (64, 64, 3, 3),
    "body.0.res_layer.3.weight": (64,),
    "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
    "body.3.res_layer.1.weight": (128, 64, 3, 3),
    "body.46.shortcut_layer.0.weight": (512, 256, 1, 1),
    "body.48.res_layer.4.weight": (512, 512, 3, 3),
    "output_layer.0.weight": (512,),
    "output_layer.3.weight": (512, 25088),
    "output_layer.3.bias": (512,),
    "output_layer.4.running_mean": (512,),
    "output_layer.4.running_var": (512,),
    "output_layer.4.num_batches_tracked": (),
}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def meta_backbone(arch: str) -> nn.Module:
    with torch.device("meta"):
        return build_backbone(arch)


def spec_keys(arch: str) -> set[str]:
    """The key set written out from the scheme in docs/adaface.md §1.5."""
    keys = {"input_layer.0.weight", "input_layer.2.weight", *(f"input_layer.1.{b}" for b in BN)}
    keys |= {*(f"output_layer.0.{b}" for b in BN), "output_layer.3.weight", "output_layer.3.bias"}
    keys |= {f"output_layer.4.{b}" for b in ("running_mean", "running_var", "num_batches_tracked")}
    for i in range(sum(UNITS[arch])):
        keys |= {f"body.{i}.res_layer.{j}.{b}" for j in (0, 2, 5) for b in BN}
        keys |= {f"body.{i}.res_layer.{j}.weight" for j in (1, 3, 4)}
        if i in STRIDE2[arch][1:]:
            keys |= {f"body.{i}.shortcut_layer.0.weight", *(f"body.{i}.shortcut_layer.1.{b}" for b in BN)}
        if arch == "ir_se_50":
            keys |= {f"body.{i}.res_layer.se_block.fc{j}.weight" for j in (1, 2)}
    return keys


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN running stats non-default values so loading them matters; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
                mod.num_batches_tracked.fill_(7)
    return model.eval()


def lightning_ckpt(model: nn.Module, path: Path, **extra: object) -> Path:
    """Write ``model`` in the official Lightning layout (backbone under ``model.``, plus a head)."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state |= {"head.kernel": torch.randn(512, 10), "head.t": torch.tensor(0.0)}
    state |= {"head.batch_mean": torch.tensor(20.0), "head.batch_std": torch.tensor(100.0)}
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1000, **extra}, path)
    return path


def random_crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ir18() -> nn.Module:
    torch.manual_seed(0)
    return randomized(build_backbone("ir_18"))


# --- architecture parity ---------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_key_set_and_count_match_spec(arch: str) -> None:
    state = meta_backbone(arch).state_dict()
    assert len(state) == KEYS[arch]
    assert set(state) == spec_keys(arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_and_buffer_counts(arch: str) -> None:
    model = meta_backbone(arch)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[arch]
    assert sum(b.numel() for b in model.buffers()) == BN_BUFFERS[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_stride2_and_conv_shortcut_units(arch: str) -> None:
    body = meta_backbone(arch).body
    assert len(body) == sum(UNITS[arch])
    strided = [i for i, unit in enumerate(body) if unit.res_layer[4].stride == (2, 2)]
    conv_shortcut = [i for i, unit in enumerate(body) if isinstance(unit.shortcut_layer, nn.Sequential)]
    assert tuple(strided) == STRIDE2[arch]
    assert tuple(conv_shortcut) == STRIDE2[arch][1:]
    assert isinstance(body[0].shortcut_layer, nn.MaxPool2d) and body[0].shortcut_layer.stride == 2


def test_ir101_example_shapes_and_key_order() -> None:
    state = meta_backbone("ir_101").state_dict()
    assert {k: tuple(state[k].shape) for k in IR101_SHAPES} == IR101_SHAPES
    assert state["body.5.res_layer.2.num_batches_tracked"].dtype == torch.int64
    groups = [k.split(".")[0] for k in state]
    assert groups == sorted(groups, key=["input_layer", "output_layer", "body"].index)


def test_ir_se_has_se_block_and_plain_ir_does_not() -> None:
    assert "body.0.res_layer.se_block.fc1.weight" in meta_backbone("ir_se_50").state_dict()
    assert tuple(meta_backbone("ir_se_50").state_dict()["body.23.res_layer.se_block.fc1.weight"].shape) == (
        32,
        512,
        1,
        1,
    )
    assert not any("se_block" in k for k in meta_backbone("ir_50").state_dict())


def test_unknown_arch_names_allowed() -> None:
    with pytest.raises(ValueError, match="ir_18.*ir_34.*ir_50.*ir_101.*ir_se_50"):
        build_backbone("ir_152")


# --- forward ---------------------------------------------------------------------------


@pytest.mark.slow
def test_forward_shapes_dtypes_unit_norm(ir18: nn.Module) -> None:
    x = preprocess_bgr(random_crops(3))
    with torch.inference_mode():
        emb, norm = ir18(x)
    assert emb.shape == (3, 512) and norm.shape == (3, 1)
    assert emb.dtype == torch.float32 and norm.dtype == torch.float32
    torch.testing.assert_close(torch.linalg.vector_norm(emb, dim=1), torch.ones(3))
    assert bool((norm > 0).all())


@pytest.mark.slow
def test_ir101_forward_small_batch() -> None:
    torch.manual_seed(1)
    model = build_backbone("ir_101").eval()
    with torch.inference_mode():
        emb, norm = model(preprocess_bgr(random_crops(1)))
    assert emb.shape == (1, 512) and norm.shape == (1, 1)
    assert torch.isfinite(emb).all() and torch.isfinite(norm).all()


@pytest.mark.slow
def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(2)
    model = randomized(build_backbone("ir_18"), seed=2)
    x = preprocess_bgr(random_crops(1))
    with torch.inference_mode():
        want = model(x)
        model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[1], want[1], atol=1e-4, rtol=1e-4)


# --- preprocessing ---------------------------------------------------------------------


def test_preprocess_exact_values() -> None:
    crops = np.zeros((1, 112, 112, 3), np.uint8)
    crops[0, 0, 0] = (0, 128, 255)  # B, G, R
    x = preprocess_bgr(crops)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 112, 112) and x.is_contiguous()
    assert x[0, 0, 0, 0].item() == -1.0
    assert x[0, 2, 0, 0].item() == 1.0
    # float64 ((128/255) - 0.5) / 0.5 cast to float32; the float32 path x/127.5-1 gives 0x1.0102p-8
    assert x[0, 1, 0, 0].item() == float.fromhex("0x1.010102p-8")


def test_preprocess_matches_float64_path_for_all_values() -> None:
    values = np.arange(256, dtype=np.uint8)
    crops = np.broadcast_to(values[:, None, None, None], (256, 112, 112, 3)).copy()
    x = preprocess_bgr(crops)[:, :, 0, 0].numpy()
    official = ((values.astype(np.float64) / 255.0 - 0.5) / 0.5).astype(np.float32)
    assert np.array_equal(x, np.repeat(official[:, None], 3, axis=1))
    float32_path = values.astype(np.float32) / np.float32(127.5) - np.float32(1)
    assert int((float32_path != official).sum()) == 128  # docs/adaface.md §4: why the float64 path matters


def test_preprocess_keeps_channel_order_and_layout() -> None:
    crops = random_crops(2)
    x = preprocess_bgr(crops)
    assert np.array_equal(x[1, 0].numpy(), ((crops[1, :, :, 0] / 255.0 - 0.5) / 0.5).astype(np.float32))
    assert preprocess_bgr(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 3, 112, 112)


@pytest.mark.parametrize(
    ("crops", "error"),
    [(np.zeros((1, 112, 112, 3), np.float32), TypeError), (np.zeros((1, 96, 112, 3), np.uint8), ValueError)],
)
def test_preprocess_rejects_bad_input(crops: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error, match="crops"):
        preprocess_bgr(crops)


# --- checkpoints -----------------------------------------------------------------------


@pytest.mark.slow
def test_lightning_checkpoint_loads_and_reproduces_outputs(ir18: nn.Module, tmp_path: Path) -> None:
    path = lightning_ckpt(ir18, tmp_path / "adaface_ir18.ckpt")
    state = load_adaface_state(path, "ir_18")
    assert len(state) == 179 and not any(k.startswith(("model.", "head.")) for k in state)
    loaded = build_backbone("ir_18")
    loaded.load_state_dict(state, strict=True)
    x = preprocess_bgr(random_crops(2))
    with torch.inference_mode():
        want, got = ir18(x), loaded.eval()(x)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


@pytest.mark.slow
def test_embedder_from_file_equals_embedder_from_module(ir18: nn.Module, tmp_path: Path) -> None:
    path = lightning_ckpt(ir18, tmp_path / "a.ckpt")
    from_file = AdaFaceEmbedder("ir_18", path)
    from_module = AdaFaceEmbedder("ir_18", ir18)
    crops = random_crops(2)
    vec_a, norm_a = from_file.embed(crops)
    vec_b, norm_b = from_module.embed(crops)
    assert np.array_equal(vec_a, vec_b) and np.array_equal(norm_a, norm_b)
    assert from_file.model_id == f"adaface:ir_18:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    assert from_module.model_id.startswith("adaface:ir_18:")


@pytest.mark.slow
def test_bare_state_dict_loads_with_or_without_prefix(ir18: nn.Module, tmp_path: Path) -> None:
    torch.save(ir18.state_dict(), tmp_path / "bare.pt")
    torch.save({f"model.{k}": v for k, v in ir18.state_dict().items()}, tmp_path / "prefixed.pt")
    for name in ("bare.pt", "prefixed.pt"):
        state = load_adaface_state(tmp_path / name, "ir_18")
        assert all(torch.equal(state[k], v) for k, v in ir18.state_dict().items())


@pytest.mark.slow
def test_wrong_arch_is_one_line_naming_both(ir18: nn.Module, tmp_path: Path) -> None:
    path = lightning_ckpt(ir18, tmp_path / "ir18.ckpt")
    with pytest.raises(CheckpointError) as info:
        load_adaface_state(path, "ir_34")
    message = str(info.value)
    assert "\n" not in message
    assert "'ir_34'" in message and "indicates ir_18" in message and "missing" in message
    assert "body.3.shortcut_layer.0.weight" in message  # first missing keys are listed


def test_key_count_to_arch() -> None:
    assert [arch_for_key_count(n) for n in (179, 323, 467, 917, 515, 100)] == [*ARCHS, "unknown"]


def test_malicious_pickle_refused_without_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": PicklePayload(print, "pwned")}, path)
    with pytest.raises(CheckpointError) as info:
        load_adaface_state(path, "ir_18")
    message = str(info.value)
    assert "\n" not in message and "allow_unsafe_pickle" in message and "print" in message
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.slow
def test_non_tensor_objects_need_opt_in(ir18: nn.Module, tmp_path: Path) -> None:
    path = lightning_ckpt(ir18, tmp_path / "hp.ckpt", hyper_parameters=argparse.Namespace(arch="ir_18"))
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle.*trust"):
        load_adaface_state(path, "ir_18")
    assert len(load_adaface_state(path, "ir_18", allow_unsafe_pickle=True)) == 179


@pytest.mark.parametrize("content", [b"", b"not a torch file\n", bytes(range(256)) * 4])
def test_unreadable_file_names_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_adaface_state(path, "ir_18")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_adaface_state(tmp_path / "nope.ckpt", "ir_18")


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 5000)
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --- embedder --------------------------------------------------------------------------


@pytest.mark.slow
def test_embedder_chunks_and_empty(ir18: nn.Module) -> None:
    embedder = AdaFaceEmbedder("ir_18", ir18, batch_size=2)
    assert (embedder.crop_size, embedder.crop_kind) == (112, "template")
    crops = random_crops(3)
    vectors, norms = embedder.embed(crops)
    assert vectors.shape == (3, 512) and norms.shape == (3,)
    assert vectors.dtype == np.float32 and norms.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_batch, one_norms = AdaFaceEmbedder("ir_18", ir18, batch_size=8).embed(crops)
    np.testing.assert_allclose(vectors, one_batch, atol=1e-5)
    np.testing.assert_allclose(norms, one_norms, rtol=1e-5)
    empty_vectors, empty_norms = embedder.embed(np.zeros((0, 112, 112, 3), np.uint8))
    assert empty_vectors.shape == (0, 512) and empty_norms.shape == (0,)


@pytest.mark.slow
def test_embedder_bf16_autocast_keeps_norm_fp32(ir18: nn.Module) -> None:
    captured: list[torch.Tensor] = []
    hook = ir18.output_layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        vectors, norms = AdaFaceEmbedder("ir_18", ir18, precision="bf16").embed(random_crops(1))
    finally:
        hook.remove()
    assert captured[0].dtype == torch.bfloat16  # the raw feature really was low precision
    assert vectors.dtype == np.float32 and norms.dtype == np.float32
    assert norms[0] == torch.linalg.vector_norm(captured[0].float(), dim=1).item()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_embedder_rejects_bad_settings(ir18: nn.Module) -> None:
    with pytest.raises(ValueError, match="precision"):
        AdaFaceEmbedder("ir_18", ir18, precision="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        AdaFaceEmbedder("ir_18", ir18, batch_size=0)
    with pytest.raises(CheckpointError, match="indicates ir_18"):
        AdaFaceEmbedder("ir_50", ir18)
