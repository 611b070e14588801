"""Loading AdaFace backbone weights safely and strictly (docs/adaface.md §3).

Accepts the official PyTorch-Lightning ``.ckpt`` (``state_dict`` with ``model.``-prefixed
backbone keys; ``head.*`` ignored) or a bare backbone state dict. Files are read with
``weights_only=True``; full unpickling happens only when the caller opts in. Every
failure is a one-line :class:`CheckpointError` naming the file and, for a wrong
architecture, the configured arch and the arch the key count indicates.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from stream.faces.ir_net import build_backbone

__all__ = ["CheckpointError", "arch_for_key_count", "check_state", "load_adaface_state", "load_backbone", "sha256_file"]

# state_dict key counts of the official backbones (docs/adaface.md §1.4), incl. num_batches_tracked.
KEY_COUNTS: dict[int, str] = {179: "ir_18", 323: "ir_34", 467: "ir_50", 917: "ir_101", 515: "ir_se_50"}
MODEL_PREFIX = "model."
_SHOW_KEYS = 3
_CHUNK = 1 << 20


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, unsafe to unpickle, or does not fit the arch."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def arch_for_key_count(count: int) -> str:
    """The official arch with this many state_dict keys, or ``"unknown"``."""
    return KEY_COUNTS.get(count, "unknown")


def load_backbone(
    arch: str, checkpoint: str | Path | nn.Module, allow_unsafe_pickle: bool = False
) -> tuple[nn.Module, str]:
    """The backbone ``arch`` with its weights, and its model id (``adaface:<arch>:<sha256[:12]>``).

    ``checkpoint`` is a file (Lightning ``.ckpt`` or bare state dict) or an already-built module
    (checked against ``arch``; its id hashes the tensors).
    """
    if isinstance(checkpoint, nn.Module):
        state = checkpoint.state_dict()
        check_state(state, arch, source=f"module {type(checkpoint).__name__}")
        return checkpoint, f"adaface:{arch}:mem-{_state_digest(state)[:12]}"
    state = load_adaface_state(checkpoint, arch, allow_unsafe_pickle=allow_unsafe_pickle)
    model = build_backbone(arch)
    model.load_state_dict(state, strict=True)
    return model, f"adaface:{arch}:{sha256_file(checkpoint)[:12]}"


def _state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over sorted keys and tensor bytes, for modules given without a file."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_adaface_state(path: str | Path, arch: str, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint and return the backbone state dict (no prefix), checked strictly against ``arch``."""
    path = Path(path)
    _check_file(path)
    obj = _torch_load(path, allow_unsafe_pickle)
    state = _backbone_state(obj, str(path))
    check_state(state, arch, source=str(path))
    _strict_load_on_meta(state, arch, str(path))
    return state


def check_state(state: Mapping[str, torch.Tensor], arch: str, source: str) -> None:
    """Raise a one-line CheckpointError unless keys and shapes equal those of ``arch``."""
    expected = _expected_shapes(arch)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if not (missing or unexpected or wrong):
        return
    parts = [
        (
            f"checkpoint {source} does not fit arch {arch!r}: it has {len(state)} backbone keys, "
            f"which indicates {arch_for_key_count(len(state))} ({arch} has {len(expected)})"
        ),
        _list_keys("missing", missing),
        _list_keys("unexpected", unexpected),
        _list_keys("wrong shape", [f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in wrong]),
    ]
    raise CheckpointError("; ".join(p for p in parts if p))


def _expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``arch``'s state dict, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = build_backbone(arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _strict_load_on_meta(state: Mapping[str, torch.Tensor], arch: str, source: str) -> None:
    """Final guard: the torch strict loader must accept the state for the built arch."""
    with torch.device("meta"):
        model = build_backbone(arch)
    try:
        model.load_state_dict(dict(state), strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {source} does not load into {arch}: {_one_line(str(exc))}") from exc


def _list_keys(label: str, keys: list[str]) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:_SHOW_KEYS])
    more = f" (+{len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
    return f"{len(keys)} {label}: {shown}{more}"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")


def _torch_load(path: Path, allow_unsafe_pickle: bool) -> object:
    """torch.load with weights_only=True; full unpickling only if the caller allowed it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _is_weights_only_refusal(exc):
            raise _unreadable(path, exc) from exc
        if not allow_unsafe_pickle:
            raise _needs_unsafe(path, exc) from exc
    except Exception as exc:  # torch raises many types for corrupt files (EOFError, KeyError, RuntimeError...)
        raise _unreadable(path, exc) from exc
    return _unsafe_load(path)


def _unsafe_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _is_weights_only_refusal(exc: Exception) -> bool:
    return "Weights only load failed" in str(exc)


def _needs_unsafe(path: Path, exc: Exception) -> CheckpointError:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        reason = f"it pickles Python objects ({found.group(1)}) that weights-only loading refuses"
    else:
        reason = f"weights-only loading rejected it ({_short_reason(exc)}); it is corrupt, not a PyTorch file, or an old pickle"
    return CheckpointError(
        f"checkpoint {path} needs unsafe (full pickle) loading: {reason}; "
        "set allow_unsafe_pickle=True only if you trust this file"
    )


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {_short_reason(exc)}")


def _short_reason(exc: Exception) -> str:
    text = str(exc)
    operand = re.search(r"Unsupported operand \d+", text)
    return operand.group(0) if operand else _one_line(text) or "no details"


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _backbone_state(obj: object, source: str) -> dict[str, torch.Tensor]:
    """Pick the backbone from a Lightning checkpoint or a bare state dict; strip ``model.``."""
    raw = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"checkpoint {source}: expected a state dict or Lightning checkpoint, got {type(raw).__name__}"
        )
    if any(isinstance(k, str) and k.startswith(MODEL_PREFIX) for k in raw):
        raw = {k[len(MODEL_PREFIX) :]: v for k, v in raw.items() if isinstance(k, str) and k.startswith(MODEL_PREFIX)}
    bad = [str(k) for k, v in raw.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"checkpoint {source}: non-tensor entries in state dict: {', '.join(bad[:_SHOW_KEYS])}")
    return dict(raw)
