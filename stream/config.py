"""The validated configuration: pydantic v2 models, YAML loading, ${ENV} substitution.

Every field has a default and a description (the README's config reference is generated
from them: ``python run.py config --reference``). Unknown keys and bad values raise
``ConfigError`` whose message names the key path, e.g.
``detection.min_face_px: must be >= 12, got 3``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stream.logs import mask_secrets
from trackers import TrackerSettings

__all__ = [
    "PROFILES",
    "AppConfig",
    "ConfigError",
    "DetectionConfig",
    "GalleryConfig",
    "OutputsConfig",
    "RecognitionConfig",
    "RuntimeConfig",
    "StreamConfig",
    "TrackingConfig",
    "apply_profile",
    "load_config",
    "parse_config",
]


class ConfigError(Exception):
    """A user mistake in the configuration; the message is one line naming the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


Probability = Annotated[float, Field(gt=0.0, lt=1.0)]


class StreamConfig(_Strict):
    name: str = Field(description="Short unique name used in overlays, events and file names.", min_length=1)
    url: str | None = Field(None, description="RTSP/RTMP/HTTP URL. Put credentials in ${ENV_VARS}.")
    path: Path | None = Field(None, description="Video file or folder of images (relative to config.yaml).")
    webcam: int | str | None = Field(None, description="Webcam index (0) or device path (/dev/video0).")
    mode: Literal["live", "file", "auto"] = Field(
        "auto",
        description="live: drop frames at the door to keep up; file: process every frame; auto: file for "
        "paths, live for URLs and webcams.",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError(f"must use only letters, digits, '_', '.', '-', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> StreamConfig:
        given = [k for k in ("url", "path", "webcam") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of url, path, webcam must be set, got {given or 'none'}")
        return self

    @property
    def effective_mode(self) -> Literal["live", "file"]:
        if self.mode != "auto":
            return self.mode
        return "file" if self.path is not None else "live"


class DetectionConfig(_Strict):
    min_face_px: int = Field(
        20, ge=12, le=1024, description="Smallest face to detect, in full-frame pixels (MTCNN's window is 12)."
    )
    thresholds: tuple[Probability, Probability, Probability] = Field(
        (0.6, 0.7, 0.7), description="MTCNN P-Net, R-Net, O-Net score thresholds."
    )
    pyramid_factor: float = Field(0.709, gt=0.3, lt=0.95, description="MTCNN image-pyramid scale step.")
    detect_width: int | None = Field(
        640, ge=64, le=7680, description="Detect on a copy resized to this width (null: full size)."
    )
    backend: Literal["stock", "fast"] = Field(
        "stock",
        description="MTCNN implementation: stock facenet-pytorch, or fast (same weights, batched candidate "
        "crops; parity-tested).",
    )
    edge_pad: float = Field(
        0.05,
        ge=0.0,
        le=0.5,
        description="Black border (share of the short side) added before detection so faces cut by the "
        "frame edge are still found (0: stock facenet-pytorch).",
    )
    max_batch: int = Field(8, ge=1, le=256, description="Most frames per detection batch (across streams).")
    max_wait_ms: float = Field(
        20.0, ge=0.0, le=1000.0, description="Longest wait to fill a batch before running it anyway."
    )
    every_n_frames: int = Field(
        1, ge=1, le=60, description="Run detection on every Nth frame; the tracker predicts in between."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")

    _check_device = field_validator("device")(lambda cls, v: _device(v))


class TrackingConfig(_Strict):
    max_age_s: float = Field(1.0, gt=0.0, le=60.0, description="A track unseen this long is removed.")
    min_confirm_s: float = Field(
        0.2, ge=0.0, le=10.0, description="A new track must be seen this long before it is shown."
    )
    min_hits: int = Field(3, ge=1, le=100, description="...and matched at least this many times.")
    iou_gate: float = Field(0.3, gt=0.0, lt=1.0, description="Least IoU for a detection to join a track.")
    low_score_pass: bool = Field(True, description="Second association pass for low-score detections (ByteTrack).")
    low_score_threshold: float = Field(
        0.8, gt=0.0, lt=1.0, description="Detections scoring below this go to the second pass only."
    )
    low_score_iou_gate: float = Field(
        0.5, gt=0.0, le=1.0, description="Least IoU for a low-score detection to extend a track (stricter)."
    )
    process_noise: float = Field(
        2.0, gt=0.0, le=100.0, description="Kalman acceleration noise, in box sizes per second squared."
    )
    measurement_noise: float = Field(
        0.05, gt=0.0, le=1.0, description="Detector box jitter as a fraction of the box size."
    )

    def tracker_settings(self) -> TrackerSettings:
        """The trackers library's settings for these values."""
        return TrackerSettings(**self.model_dump())


class RecognitionConfig(_Strict):
    model: Literal["auto", "adaface", "facenet"] = Field(
        "auto",
        description="auto: AdaFace if its checkpoint exists, else the offline FaceNet with one warning.",
    )
    arch: Literal["ir_18", "ir_34", "ir_50", "ir_101", "ir_se_50"] = Field(
        "ir_101", description="AdaFace backbone; must match the checkpoint."
    )
    checkpoint: Path = Field(
        Path("checkpoints/adaface_ir101_webface12m.ckpt"),
        description="AdaFace checkpoint (.ckpt or state dict), relative to config.yaml.",
    )
    checkpoints_dir: Path = Field(
        Path("checkpoints"), description="Where converted/cached weights (offline FaceNet) are kept."
    )
    allow_unsafe_checkpoint: bool = Field(
        False, description="Allow full pickle loading of checkpoints (only for files you trust)."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    precision: Literal["fp32", "fp16", "bf16"] = Field("fp16", description="Autocast precision on CUDA (CPU: fp32).")
    batch_size: int = Field(32, ge=1, le=1024, description="Most crops per embedding batch.")
    match_threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Cosine threshold for a known person; set, it wins over target_far (null: from the model's "
        "score table and the gallery size, or the model's fixed default when it has no table).",
    )
    target_far: float = Field(
        1e-3,
        gt=0.0,
        lt=1.0,
        description="Chance that a stranger is named as anybody in the gallery: a gallery of G people uses the "
        "threshold whose per-pair false-accept rate is target_far/G on the model's score table.",
    )
    score_table: Path | None = Field(
        None,
        description="Score table from run.py calibrate --write-table, relative to config.yaml (null: the table "
        "shipped for the model, if any).",
    )
    min_margin: float = Field(
        0.05, ge=0.0, le=2.0, description="Best score must beat the second person by this much, else unknown."
    )
    index: Literal["auto", "exact", "flat", "ivf", "hnsw"] = Field(
        "auto",
        description="Gallery search. exact: numpy brute force (the reference); flat: FAISS exact inner product; "
        "ivf, hnsw: a FAISS approximate index shortlists index_shortlist rows per face, and the threshold and "
        "margin are decided on their exact cosines; auto: exact below index_auto_rows gallery rows, ivf from there.",
    )
    index_auto_rows: int = Field(
        10_000,
        ge=1,
        le=1_000_000_000,
        description="Gallery rows (people, or images with per-image matching) from which auto uses the approximate "
        "index (the measured crossover where it is faster than brute force at recall@1 >= 0.99).",
    )
    index_shortlist: int = Field(
        64, ge=2, le=4096, description="Gallery rows the approximate index returns per face, re-scored exactly."
    )
    ivf_nprobe: int = Field(
        64, ge=1, le=65536, description="IVF lists scanned per face (more: higher recall, slower)."
    )
    hnsw_ef_search: int = Field(
        512, ge=1, le=65536, description="HNSW search beam per face (more: higher recall, slower)."
    )
    min_votes: int = Field(2, ge=1, le=50, description="Embeddings of a track that must agree before naming it.")
    keep_top_k: int = Field(5, ge=1, le=100, description="Embeddings kept per track, highest feature norm first.")
    norm_floor: float = Field(
        0.0, ge=0.0, le=1000.0, description="Embeddings with a feature norm below this are ignored (0: off)."
    )
    switch_votes: int = Field(
        3, ge=1, le=100, description="Updates a new person must lead in a row before a named track is renamed."
    )
    max_attempts_per_track: int = Field(
        8, ge=1, le=1000, description="Most crops embedded per track before the slow re-check."
    )
    recheck_s: float = Field(5.0, gt=0.0, le=3600.0, description="Slow re-check period for long tracks.")
    stranger_ids: bool = Field(
        True,
        description="Label unknown faces unknown-1, unknown-2, ... and give a returning unknown person the "
        "same label within a run (their template matches an earlier unknown track's above the threshold).",
    )

    _check_device = field_validator("device")(lambda cls, v: _device(v))


class GalleryConfig(_Strict):
    dir: Path = Field(Path("gallery"), description="Folder of <person>/<images>, relative to config.yaml.")
    cache: bool = Field(True, description="Cache embeddings per model under <dir>/.cache/.")


class OutputsConfig(_Strict):
    dir: Path = Field(Path("recordings"), description="Where videos, events and snapshots go.")
    annotated_video: bool = Field(True, description="Write <stream>.mp4 with boxes and names.")
    video_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
    ] = Field(
        "veryfast",
        description="libx264 speed/size trade-off of the annotated video (at 720p on one CPU core: veryfast "
        "~30 ms a frame, superfast ~20 ms and files 1.4x larger, ultrafast ~14 ms and 4x larger).",
    )
    video_crf: int = Field(23, ge=0, le=51, description="libx264 quality (0 lossless, 23 default, 51 worst).")
    events_jsonl: bool = Field(True, description="Write events.jsonl (one JSON event per line).")
    events_sqlite: bool = Field(
        True, description="Write the event store (runs, events, tracks, faces): events_db, or <dir>/events.db."
    )
    events_db: str | None = Field(
        None,
        description="Event store: null (<dir>/events.db), a file path or sqlite:///path.db (SQLite, relative to "
        "config.yaml), or postgresql://user:${PG_PASSWORD}@host:5432/db (PostgreSQL: several processes, one store).",
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        le=36500,
        description="Delete events, tracks, faces and snapshot files older than this many days, at start and "
        "hourly (null: keep everything).",
    )
    snapshots: bool = Field(True, description="Save a best-shot JPEG per named track.")
    display: bool = Field(False, description="Show a window (only when a display exists).")
    blur_unknown: bool = Field(
        False,
        description="Hide every face not named (unknown or not yet confirmed tracks) under a coarse blurred "
        "mosaic in the annotated video and the window; named faces stay visible. Other outputs unchanged.",
    )


class RuntimeConfig(_Strict):
    torch_threads: int = Field(
        0, ge=0, le=256, description="torch intra-op threads per process (0: auto, half the CPU cores, at least 1)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve metrics on this port (null: off).")


Profile = Literal["default", "cpu", "gpu"]

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    # Chosen with `python -m bench` on a shared 2-core CPU (720p25 clip): see README "Performance".
    "cpu": {
        "detection": {
            "detect_width": 480,
            "min_face_px": 40,
            "every_n_frames": 5,
            "pyramid_factor": 0.6,
            "thresholds": (0.7, 0.7, 0.7),
            "max_batch": 1,
            "backend": "fast",
        },
        "recognition": {"max_attempts_per_track": 4},
        "outputs": {"video_preset": "superfast"},
        "runtime": {"torch_threads": 1},
    },
    # Many streams on one CUDA GPU: big cross-stream batches, fp16 embeddings.
    "gpu": {
        "detection": {"max_batch": 32, "max_wait_ms": 40.0, "every_n_frames": 2, "backend": "fast"},
        "recognition": {"precision": "fp16", "batch_size": 256},
    },
}
"""Preset values per ``profile``; they fill only the keys the user did not set."""


def _preset_text(profile: str) -> str:
    return ", ".join(
        f"{section}.{key}={value}" for section, values in PROFILES[profile].items() for key, value in values.items()
    )


def apply_profile(data: Any) -> Any:
    """Raw config mapping → the same with the profile's presets filled in where a key is unset.

    Anything that is not a mapping (or an unknown profile) is passed through for the field
    validators to reject with their usual message.
    """
    if not isinstance(data, dict):
        return data
    name = data.get("profile", "default")
    preset = PROFILES.get(name) if isinstance(name, str) else None
    if not preset:
        return data
    filled = dict(data)
    for section, values in preset.items():
        given = filled.get(section, {})
        if not isinstance(given, dict):
            continue  # a bad section: the field validator names it
        filled[section] = {**values, **given}
    return filled


class AppConfig(_Strict):
    streams: tuple[StreamConfig, ...] = Field((), description="Video sources. Empty: the built-in demo clip.")
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="Face detection (MTCNN).")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Kalman tracking.")
    recognition: RecognitionConfig = Field(default_factory=RecognitionConfig, description="Embedding and matching.")
    gallery: GalleryConfig = Field(default_factory=GalleryConfig, description="Known people.")
    outputs: OutputsConfig = Field(default_factory=OutputsConfig, description="Videos, events, snapshots.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Process settings.")
    profile: Profile = Field(
        "default",
        description="Preset for unset keys. cpu: " + _preset_text("cpu") + "; gpu: " + _preset_text("gpu") + ".",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_from_profile(cls, data: Any) -> Any:
        return apply_profile(data)

    @field_validator("streams")
    @classmethod
    def _unique_names(cls, streams: tuple[StreamConfig, ...]) -> tuple[StreamConfig, ...]:
        names = [s.name for s in streams]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stream names must be unique, repeated: {', '.join(dupes)}")
        return streams

    def resolve_paths(self, base: Path) -> AppConfig:
        """Return a copy whose relative paths are taken relative to ``base``."""

        def absolute(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base / p

        return self.model_copy(
            update={
                "streams": tuple(s.model_copy(update={"path": absolute(s.path)}) for s in self.streams),
                "recognition": self.recognition.model_copy(
                    update={
                        "checkpoint": absolute(self.recognition.checkpoint),
                        "checkpoints_dir": absolute(self.recognition.checkpoints_dir),
                        "score_table": absolute(self.recognition.score_table),
                    }
                ),
                "gallery": self.gallery.model_copy(update={"dir": absolute(self.gallery.dir)}),
                "outputs": self.outputs.model_copy(
                    update={"dir": absolute(self.outputs.dir), "events_db": _absolute_store(self.outputs.events_db, base)}
                ),
            }
        )


def _absolute_store(url: str | None, base: Path) -> str | None:
    """A relative SQLite path (plain, or ``sqlite:///relative``) taken relative to ``base``; URLs as given."""
    if url is None or ("://" in url and not url.startswith("sqlite:///")):
        return url
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        return url if path.startswith("/") else f"sqlite:///{base / path}"
    return url if Path(url).is_absolute() else str(base / url)


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


# ---------------------------------------------------------------- loading

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: Path, environ: dict[str, str] | None = None) -> AppConfig:
    """Read, substitute and validate a YAML config file; relative paths resolve next to it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    return parse_config(text, source=str(path), environ=environ).resolve_paths(path.resolve().parent)


def parse_config(text: str, source: str = "<config>", environ: dict[str, str] | None = None) -> AppConfig:
    """Validate YAML text; paths stay as written (see ``AppConfig.resolve_paths``)."""
    data = _parse_yaml(text, source)
    try:
        data = _substitute(data, os.environ if environ is None else environ, path="")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: YAML syntax error{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _substitute(node: Any, environ: Any, path: str) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; a missing VAR is an error."""
    if isinstance(node, dict):
        return {k: _substitute(v, environ, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, environ, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _ENV_REF.sub(replace, node)


# ---------------------------------------------------------------- error messages


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    return f"{_loc(err['loc'])}: {_describe(err)}"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "lax-or-strict", "json-or-python")) and part not in (
            "int",
            "str",
            "float",
            "bool",
            "none",
            "tuple",
        ):
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(err: Any) -> str:
    kind, ctx, got = err["type"], err.get("ctx", {}), err.get("input")
    bounds = {
        "greater_than_equal": ">= {ge}",
        "greater_than": "> {gt}",
        "less_than_equal": "<= {le}",
        "less_than": "< {lt}",
    }
    if kind in bounds:
        return f"must be {bounds[kind].format(**ctx)}, got {got!r}"
    if kind == "extra_forbidden":
        return f"unknown key{_allowed(err['loc'])}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {_short(got)}"


def _allowed(loc: tuple[int | str, ...]) -> str:
    """' (allowed: a, b, c)' for the model that holds the unknown key at ``loc``."""
    model: type[BaseModel] | None = AppConfig
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        model = _model_of(field.annotation) if field else None
    return f" (allowed: {', '.join(model.model_fields)})" if model else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found:
            return found
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- presentation


def to_masked_yaml(config: AppConfig) -> str:
    """The effective config as YAML with credentials in URLs masked."""
    data = config.model_dump(mode="json")
    return mask_secrets(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def reference_rows() -> Iterator[tuple[str, str, str]]:
    """(key path, default, description) for every leaf field: the README's config reference."""
    yield from _rows(AppConfig, "")


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str]]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_of(field.annotation)
        if sub is not None and name != "streams":
            yield from _rows(sub, key + ".")
        elif name == "streams":
            yield key, "[]", field.description or ""
            yield from _rows(StreamConfig, "streams[].")
        else:
            default = field.get_default(call_default_factory=True)
            yield key, _show_default(field.is_required(), default), field.description or ""


def _show_default(required: bool, default: Any) -> str:
    if required:
        return "(required)"
    return yaml.safe_dump(_jsonable(default), default_flow_style=True).removesuffix("\n").removesuffix("\n...")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
