"""Constant-velocity Kalman filter for one box, with a variable time step in seconds.

State (8,): ``[cx, cy, w, h, vcx, vcy, vw, vh]`` — box centre, width and height in pixels and
their rates in pixels per second. Width and height (rather than SORT's area and aspect ratio)
keep the model linear, let faces change aspect ratio freely, and make a negative size easy to
clamp. Measurement (4,): ``[cx, cy, w, h]`` from an ``x1, y1, x2, y2`` box.

Noise is relative to the box size (``size = max((w + h) / 2, 1)``), so the same settings work
for a 20-pixel face and a 400-pixel one:

* process noise: white-noise acceleration with spectral density ``(process_noise * size)²``,
  so ``Q`` per axis is ``q · [[dt³/3, dt²/2], [dt²/2, dt]]`` (``Q`` is zero when ``dt`` is 0);
* measurement noise: standard deviation ``measurement_noise * size`` on every coordinate;
* initial velocity: standard deviation ``initial_velocity_std * size`` per second.

Numerical guards: width and height never go below 0 (the shrinking rate is zeroed when they
hit it), a step that would leave a NaN or inf in the state keeps the previous state, and
``box`` is clipped to ±1e9 pixels so the float32 output is always finite.
"""

from __future__ import annotations

import numpy as np
from filterpy.kalman import KalmanFilter

_DIM_X = 8
_DIM_Z = 4
COORD_LIMIT = 1e9


def box_to_measurement(box: np.ndarray) -> np.ndarray:
    """``x1, y1, x2, y2`` -> ``[cx, cy, w, h]`` (float64, width and height clamped at 0)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 0.0), max(y2 - y1, 0.0)])


def measurement_to_box(z: np.ndarray) -> np.ndarray:
    """``[cx, cy, w, h]`` -> ``x1, y1, x2, y2`` as (4,) float32, clipped to ±1e9 px so it stays finite."""
    cx, cy, w, h = (float(v) for v in z[:4])
    box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return np.clip(box, -COORD_LIMIT, COORD_LIMIT).astype(np.float32)


class BoxKalmanFilter:
    """Kalman filter of one box: ``predict(dt_s)`` then ``update(box)``; read ``box``.

    Args:
        box: the first measurement, ``x1, y1, x2, y2`` in pixels; must be finite.
        process_noise: acceleration noise in box sizes per second². Raising it follows
            sudden turns faster but makes predictions across gaps noisier.
        measurement_noise: detector jitter as a fraction of the box size. Raising it smooths
            the box more but makes it lag behind fast motion.
        initial_velocity_std: prior spread of the unknown initial velocity, in box sizes per second.
    """

    def __init__(
        self,
        box: np.ndarray,
        *,
        process_noise: float = 2.0,
        measurement_noise: float = 0.05,
        initial_velocity_std: float = 2.0,
    ) -> None:
        z = box_to_measurement(_finite_box("box", box))
        self._process_noise = float(process_noise)
        self._measurement_noise = float(measurement_noise)
        self._kf = KalmanFilter(dim_x=_DIM_X, dim_z=_DIM_Z)
        self._kf.H = np.hstack([np.eye(_DIM_Z), np.zeros((_DIM_Z, _DIM_Z))])
        self._kf.x = np.concatenate([z, np.zeros(_DIM_Z)]).reshape(_DIM_X, 1)
        size = _size(z)
        position_var = (self._measurement_noise * size) ** 2
        velocity_var = (float(initial_velocity_std) * size) ** 2
        self._kf.P = np.diag([position_var] * _DIM_Z + [velocity_var] * _DIM_Z)

    @property
    def state(self) -> np.ndarray:
        """A copy of the state ``[cx, cy, w, h, vcx, vcy, vw, vh]`` (float64)."""
        return self._kf.x[:, 0].copy()

    @property
    def box(self) -> np.ndarray:
        """The current estimate as ``x1, y1, x2, y2`` (4,) float32, always finite."""
        return measurement_to_box(self._kf.x[:, 0])

    def predict(self, dt_s: float) -> None:
        """Step the state forward by ``dt_s`` seconds (``dt_s >= 0``; 0 leaves it unchanged)."""
        dt = float(dt_s)
        if not np.isfinite(dt) or dt < 0:
            raise ValueError(f"dt_s: must be finite and >= 0, got {dt_s!r}")
        if dt == 0:
            return
        saved = self._save()
        with np.errstate(over="ignore", invalid="ignore"):  # an absurd dt overflows; the step is then undone
            accel_std = self._process_noise * _size(self._kf.x[:4, 0])
            self._kf.predict(F=_transition(dt), Q=_process_covariance(dt, accel_std))
        self._clamp_size()
        self._restore_if_bad(saved)

    def update(self, box: np.ndarray) -> None:
        """Correct the state with a measured box ``x1, y1, x2, y2`` (must be finite)."""
        z = box_to_measurement(_finite_box("box", box))
        saved = self._save()
        sigma = self._measurement_noise * max(_size(z), _size(self._kf.x[:4, 0]))
        self._kf.update(z.reshape(_DIM_Z, 1), R=np.eye(_DIM_Z) * sigma**2)
        self._clamp_size()
        self._restore_if_bad(saved)

    def hold_size(self) -> None:
        """Stop the box growing or shrinking: zero the width and height rates.

        For a box that is not seen (occluded, missed): its size rate is mostly detector jitter, and
        extrapolated over a gap of a second it can halve or double the box, so the face would no
        longer match its own track when it reappears. Position rates are kept (they carry the box
        along its path behind an occluder).
        """
        self._kf.x[6:8, 0] = 0.0
        self._kf.P[6:8, :] = 0.0
        self._kf.P[:, 6:8] = 0.0
        size = _size(self._kf.x[:4, 0])
        self._kf.P[6, 6] = self._kf.P[7, 7] = (self._measurement_noise * size) ** 2

    def _clamp_size(self) -> None:
        x = self._kf.x
        for i in (2, 3):
            if x[i, 0] < 0:
                x[i, 0] = 0.0
                x[i + _DIM_Z, 0] = max(x[i + _DIM_Z, 0], 0.0)

    def _save(self) -> tuple[np.ndarray, np.ndarray]:
        return self._kf.x.copy(), self._kf.P.copy()

    def _restore_if_bad(self, saved: tuple[np.ndarray, np.ndarray]) -> None:
        if np.isfinite(self._kf.x).all() and np.isfinite(self._kf.P).all():
            return
        self._kf.x, self._kf.P = saved


def _finite_box(field: str, box: np.ndarray) -> np.ndarray:
    values = np.asarray(box, dtype=np.float64)
    if values.shape != (4,):
        raise ValueError(f"{field}: expected shape (4,), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{field}: contains NaN or inf")
    return values


def _size(z: np.ndarray) -> float:
    """Box scale for the noise model: mean of width and height, at least 1 pixel."""
    return max((float(z[2]) + float(z[3])) / 2, 1.0)


def _transition(dt: float) -> np.ndarray:
    f = np.eye(_DIM_X)
    f[:_DIM_Z, _DIM_Z:] = np.eye(_DIM_Z) * dt
    return f


def _process_covariance(dt: float, accel_std: float) -> np.ndarray:
    q = np.float64(accel_std) ** 2
    d = np.float64(dt)  # numpy floats overflow to inf instead of raising like Python floats
    block = q * np.array([[d**3 / 3, d**2 / 2], [d**2 / 2, d]])
    cov = np.zeros((_DIM_X, _DIM_X))
    for i in range(_DIM_Z):
        index = np.ix_([i, i + _DIM_Z], [i, i + _DIM_Z])
        cov[index] = block
    return cov
