"""Shape and dtype checks for the arrays carried by the stage types.

A shape pattern is a tuple whose items are ints (exact size), ``None`` (any size)
or a string (a named size that must agree across the fields of one object).
"""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np

Dim = int | str | None


def check_array(
    field: str,
    value: object,
    dtype: np.dtype | type,
    shape: tuple[Dim, ...],
    sizes: MutableMapping[str, int] | None = None,
) -> np.ndarray:
    """Return a read-only view of ``value`` after checking its type, dtype and shape.

    Raises ``TypeError``/``ValueError`` naming ``field``. Named dimensions are
    recorded in ``sizes`` so several fields can be tied to the same length.
    """
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{field}: expected numpy.ndarray, got {type(value).__name__}")
    want = np.dtype(dtype)
    if value.dtype != want:
        raise TypeError(f"{field}: expected dtype {want}, got {value.dtype}")
    if value.ndim != len(shape):
        raise ValueError(f"{field}: expected {len(shape)}-d array of shape {_fmt(shape)}, got {value.shape}")
    for axis, (dim, size) in enumerate(zip(shape, value.shape, strict=True)):
        _check_dim(field, axis, dim, size, shape, value.shape, sizes)
    view = value.view()
    view.flags.writeable = False
    return view


def _check_dim(
    field: str,
    axis: int,
    dim: Dim,
    size: int,
    shape: tuple[Dim, ...],
    got: tuple[int, ...],
    sizes: MutableMapping[str, int] | None,
) -> None:
    if isinstance(dim, int) and size != dim:
        raise ValueError(f"{field}: expected shape {_fmt(shape)}, got {got} (axis {axis})")
    if isinstance(dim, str) and sizes is not None:
        expected = sizes.setdefault(dim, size)
        if size != expected:
            raise ValueError(f"{field}: axis {axis} has length {size}, other fields have {dim}={expected}")


def check_finite(field: str, value: np.ndarray) -> None:
    if value.size and not np.isfinite(value).all():
        raise ValueError(f"{field}: contains NaN or inf")


def _fmt(shape: tuple[Dim, ...]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"
