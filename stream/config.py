"""The validated configuration: pydantic v2 models, YAML loading, ${ENV} substitution.

Every field has a default and a description (the README's config reference is generated
from them: ``python run.py config --reference``). Unknown keys and bad values raise
``ConfigError`` whose message names the key path, e.g.
``detection.min_face_px: must be >= 12, got 3``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from stream.logs import mask_secrets
from trackers import TrackerSettings

__all__ = [
    "DEMO_STREAM",
    "PROFILES",
    "STILL_DETECTION_KEYS",
    "AlertRule",
    "AppConfig",
    "BrokerAddress",
    "ClusterConfig",
    "ConfigError",
    "DetectionConfig",
    "GalleryConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "OutputsConfig",
    "RecognitionConfig",
    "RuntimeConfig",
    "StreamConfig",
    "TrackingConfig",
    "WebConfig",
    "WebhookConfig",
    "apply_profile",
    "broker_address",
    "endpoint_label",
    "is_loopback",
    "load_config",
    "parse_config",
    "polygon_problem",
    "probe_cuda",
    "public_url",
    "resolve_profile",
]

DEMO_STREAM = "demo"
"""The stream name of the built-in demo (no streams configured)."""


class ConfigError(Exception):
    """A user mistake in the configuration; the message is one line naming the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


Probability = Annotated[float, Field(gt=0.0, lt=1.0)]

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
MIN_ZONE_AREA = 1e-4
"""Smallest zone, as a share of the picture (0.01 %: a 1 % x 1 % square)."""


def _safe_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"must use only letters, digits, '_', '.', '-', got {value!r}")
    return value


def polygon_problem(points: Sequence[tuple[float, float]]) -> str | None:
    """Why ``points`` (normalised x, y) is not a usable zone, or None: at least 3 distinct points, an
    area of at least ``MIN_ZONE_AREA``, and no edge crossing or touching another."""
    pts = [(float(x), float(y)) for x, y in points]
    if len(pts) < 3:
        return f"a zone needs at least 3 points, got {len(pts)}"
    if len(set(pts)) < 3:
        return "a zone needs at least 3 distinct points"
    if not all(math.isfinite(v) for p in pts for v in p):
        return "coordinates must be finite"
    edges = list(zip(pts, pts[1:] + pts[:1], strict=True))
    n = len(edges)
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbours share a corner
            if _segments_meet(*edges[i], *edges[j]):
                return f"the polygon's edges {i + 1} and {j + 1} cross (points must go around the zone in order)"
    area = 0.5 * abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in edges))
    if area < MIN_ZONE_AREA:
        return f"the polygon is degenerate (area {area:.2g} of the picture, needs at least {MIN_ZONE_AREA:g})"
    return None


def _segments_meet(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]
) -> bool:
    def orient(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def on(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> bool:
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    if (o1 > 0) != (o2 > 0) and (o3 > 0) != (o4 > 0) and 0 not in (o1, o2, o3, o4):
        return True
    ends = ((o1, a, b, c), (o2, a, b, d), (o3, c, d, a), (o4, c, d, b))
    return any(o == 0 and on(p, q, r) for o, p, q, r in ends)


def _polygon(points: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    problem = polygon_problem(points)
    if problem:
        raise ValueError(problem)
    return points


Name = Annotated[str, AfterValidator(_safe_name)]
Coordinate = Annotated[float, Field(ge=0.0, le=1.0)]
Polygon = Annotated[tuple[tuple[Coordinate, Coordinate], ...], AfterValidator(_polygon)]


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
    zones: dict[Name, Polygon] = Field(
        default_factory=dict,
        description="Named areas of the picture, {name: [[x, y], ...]}: polygons of at least 3 points in "
        "coordinates from 0 to 1 (x from the left, y from the top edge). Track events say which zones the "
        "face's box centre is in; tracks entering and leaving them give zone_entered/zone_left events; the "
        "video draws them.",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return _safe_name(value)

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
        1,
        ge=1,
        le=60,
        description="Run a full detection on every Nth frame; in between the tracker predicts (or, with "
        "refine_between, the faces already found are re-found).",
    )
    refine_between: bool = Field(
        False,
        description="On the frames between full detections, re-find the faces of the previous frame with "
        "MTCNN's R- and O-Net only (a few ms; no new faces), so the tracker measures every known face on "
        "every frame.",
    )
    refine_thresholds: tuple[Probability, Probability] = Field(
        (0.6, 0.6), description="R-Net, O-Net score thresholds of that re-finding (faces already found)."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")

    _check_device = field_validator("device")(lambda cls, v: _device(v))


class TrackingConfig(_Strict):
    max_age_s: float = Field(
        1.5,
        gt=0.0,
        le=60.0,
        description="A track unseen this long is removed (1.5: a face hidden behind another for under 1 s, "
        "plus the frames where it is half hidden, keeps its ID).",
    )
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
    centre_gate: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Third association pass for what IoU left (small or fast faces, detection every few "
        "frames): most centre distance in track-box sizes (0: off).",
    )
    max_scale_change: float = Field(
        1.5, ge=1.0, le=10.0, description="...and most size ratio between the track and the detection."
    )
    hold_size_when_lost: bool = Field(
        True, description="A track that loses its face keeps its size (moving on) until it is seen again."
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
    snapshots: bool = Field(
        True,
        description="Save a best-shot JPEG per track once it is named or labelled unknown-N (unknown faces: not "
        "with blur_unknown).",
    )
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


# ---------------------------------------------------------------- integrations: MQTT, alerts


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """An MQTT broker URL taken apart. ``password`` is never shown: ``shown`` is the URL with it masked."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = dataclasses.field(repr=False)
    shown: str


def broker_address(url: str) -> BrokerAddress:
    """``mqtt://[user[:password]@]host[:port]`` (1883) or ``mqtts://...`` (TLS, 8883); ValueError (with
    the password masked) for anything else.

    The credentials end at the last ``@``, so a password from ``${ENV}`` may hold any character (``@ / :``
    included); ``%xx`` escapes in the user and password are decoded."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    shown = f"{scheme}{sep}{user}{':***' if colon else ''}{at}{hostport}" if sep else mask_secrets(url)
    if scheme not in ("mqtt", "mqtts") or not sep:
        raise ValueError(f"must start with mqtt:// or mqtts:// (TLS), got {shown!r}")
    try:
        parts = urlsplit(f"{scheme}://{hostport}")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc}): {shown!r}") from None
    if not parts.hostname:
        raise ValueError(f"names no broker host: {shown!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"must be mqtt[s]://[user:password@]host[:port] with nothing after the port, got {shown!r}")
    tls = scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(user) if at else None,
        password=unquote(password) if at and colon else None,
        shown=shown,
    )


def public_url(url: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``url`` checked to be ``scheme://host[...]`` with one of ``schemes``; ValueError (masked) if not."""
    shown = mask_secrets(url)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc}): {shown!r}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must be an {' or '.join(s + '://' for s in schemes)} URL with a host, got {shown!r}")
    return url


def endpoint_label(url: str) -> str:
    """``scheme://host[:port]/***``: a web address as logs and ``run.py config`` show it (hook URLs often
    carry their token in the path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    tail = "/***" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{tail}"


def _topic(value: str) -> str:
    """An MQTT topic (or prefix) we publish to: no wildcards, no empty level at either end."""
    if not value or len(value) > 200:
        raise ValueError(f"must be 1 to 200 characters, got {value!r}")
    if any(c in value for c in "+#\0") or value.startswith(("/", "$")) or value.endswith("/") or "//" in value:
        raise ValueError(f"must be a topic without wildcards (+ #), $ or empty levels, got {value!r}")
    return value


Topic = Annotated[str, AfterValidator(_topic)]


class MqttTlsConfig(_Strict):
    ca_file: Path | None = Field(
        None, description="CA certificates (PEM) that sign the broker's certificate (null: the system's)."
    )
    cert_file: Path | None = Field(None, description="Client certificate (PEM), for brokers that ask for one.")
    key_file: Path | None = Field(None, description="The client certificate's private key (PEM).")
    insecure: bool = Field(
        False, description="Accept a broker certificate for another host name (testing only; still checks the CA)."
    )

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self


class MqttConfig(_Strict):
    url: str = Field(description="Broker: mqtt://[user:${MQTT_PASSWORD}@]host[:1883], or mqtts:// for TLS (port 8883).")
    topic_prefix: Topic = Field(
        "adaface",
        description="First level of every topic: <prefix>/status, <prefix>/<stream>/events, "
        "<prefix>/<stream>/person/<name>, <prefix>/<stream>/last_person, <prefix>/alerts/<rule>.",
    )
    client_id: str | None = Field(
        None, description="MQTT client id (null: adaface-stream-<prefix>-<host name>); unique per broker."
    )
    qos: Literal[0, 1, 2] = Field(
        1, description="QoS of every message (1: at least once, kept and resent across reconnects)."
    )
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="Keep-alive; a broker silent for this long counts as gone (reconnect)."
    )
    reconnect_max_s: float = Field(
        30.0, ge=0.5, le=3600.0, description="Longest wait between reconnects (from 0.5 s, doubling, up to this)."
    )
    outbox: int = Field(
        10000,
        ge=10,
        le=1_000_000,
        description="Most event and alert messages waiting for the broker (while it is away or slow); beyond "
        "it the oldest are dropped and counted (mqtt_dropped). Retained states are never dropped: the latest wins.",
    )
    discovery: bool = Field(
        True,
        description="Publish Home Assistant MQTT discovery configs (retained): per stream a last-person sensor, "
        "per stream and person (gallery names and unknown) a presence binary sensor.",
    )
    discovery_prefix: Topic = Field("homeassistant", description="Home Assistant's discovery prefix.")
    tls: MqttTlsConfig | None = Field(
        None, description="TLS settings (mqtts:// uses the system's CAs without them); paths relative to config.yaml."
    )

    @field_validator("url")
    @classmethod
    def _broker(cls, value: str) -> str:
        broker_address(value)
        return value

    @field_serializer("url", when_used="json")
    def _masked(self, value: str) -> str:
        return broker_address(value).shown

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[!-~]{1,128}", value):
            raise ValueError(f"must be 1 to 128 printable ASCII characters without spaces, got {value!r}")
        return value

    @model_validator(mode="after")
    def _tls_needs_mqtts(self) -> MqttConfig:
        if self.tls is not None and not broker_address(self.url).tls:
            raise ValueError("tls is set but url is mqtt:// (use mqtts:// for TLS)")
        return self


MIN_SECRET_CHARS = 16


class WebhookConfig(_Strict):
    url: str = Field(description="Endpoint the alert is POSTed to (JSON): http:// or https://; tokens as ${ENV}.")
    secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key (at least 16 characters; write ${WEBHOOK_SECRET}): each request has "
        "X-AdaFace-Signature: sha256=<hex HMAC of the body>. Masked by run.py config; null: unsigned.",
    )
    timeout_s: float = Field(5.0, gt=0.0, le=60.0, description="Longest wait for one delivery attempt.")
    retries: int = Field(
        5,
        ge=0,
        le=20,
        description="Further attempts after a failed one (refused, timeout, 5xx, 429), waiting 0.5 s, 1 s, 2 s, "
        "... (at most 30 s) in between; other 4xx answers are not retried.",
    )

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return public_url(value)

    @field_serializer("url", when_used="json")
    def _masked(self, value: str) -> str:
        return endpoint_label(value)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters")
        return value


ANY, UNKNOWN_PERSON = "any", "unknown"


class AlertRule(_Strict):
    name: Name = Field(description="Short unique name of the rule (in alert events, topics and logs).")
    when: tuple[str, ...] = Field(
        (ANY,),
        min_length=1,
        description="Who fires it: person names (gallery folders), unknown (a face not in the gallery, once "
        "labelled unknown-N), or any (either).",
    )
    streams: tuple[Name, ...] = Field((), description="Only on these streams (empty: every stream).")
    zones: tuple[Name, ...] = Field(
        (), description="Only while the face's box centre is in one of these zones of the streams (empty: anywhere)."
    )
    min_score: float | None = Field(
        None, ge=-1.0, le=1.0, description="Named people: only with at least this match score (null: any)."
    )
    cooldown_s: float = Field(
        60.0, ge=0.0, le=604800.0, description="After an alert, the same track or person stays quiet this long."
    )
    cooldown_per: Literal["track", "person"] = Field(
        "track",
        description="track: one alert per track per cool-down; person: one per person (or unknown-N label) "
        "per cool-down, whatever the track and stream.",
    )
    mqtt_topic: Topic | None = Field(
        None, description="Publish alerts on this topic (null: <topic_prefix>/alerts/<name>); needs the mqtt section."
    )
    webhook: WebhookConfig | None = Field(None, description="POST each alert here (null: no webhook).")

    @field_validator("when")
    @classmethod
    def _who(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not v.strip() for v in value):
            raise ValueError("names must not be empty")
        if ANY in value and len(value) > 1:
            raise ValueError(f"'any' covers everybody: give it alone, got {list(value)}")
        return value


ARGON2_PREFIX = "$argon2"
MIN_PASSWORD_CHARS = 8


class WebConfig(_Strict):
    host: str = Field(
        "127.0.0.1",
        description="Address the web app binds (run.py serve, run.py --web). Any address but loopback "
        "(127.0.0.1, ::1, localhost) needs web.password.",
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the web app (0: any free port, logged).")
    password: SecretStr | None = Field(
        None,
        description="Password of the pages and the API: write ${WEB_PASSWORD} and set that environment variable "
        "(at least 8 characters), or an argon2 hash ($argon2id$...). Kept and compared only as an argon2 hash; "
        "masked by run.py config; null: no login (loopback only).",
    )
    max_upload_mb: float = Field(10.0, gt=0.0, le=200.0, description="Largest upload (POST /api/identify), in MB.")
    max_upload_pixels: int = Field(
        40_000_000, ge=1, le=250_000_000, description="Largest uploaded image, in pixels (width x height)."
    )
    live_fps: float = Field(
        10.0,
        gt=0.0,
        le=60.0,
        description="Most frames per second per stream sent to live viewers (MJPEG); frames are JPEG-encoded "
        "only while someone watches.",
    )
    session_hours: float = Field(12.0, gt=0.0, le=720.0, description="A login (cookie or API token) lasts this long.")

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*", text):
                raise ValueError(f"must be an IP address or a host name, got {value!r}") from None
        return text

    @field_validator("password")
    @classmethod
    def _strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if not secret.startswith(ARGON2_PREFIX) and len(secret) < MIN_PASSWORD_CHARS:
            raise ValueError(f"must be at least {MIN_PASSWORD_CHARS} characters (or an argon2 hash)")
        return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (the web app needs no password there)."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Profile = Literal["auto", "default", "cpu", "gpu"]

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    # Chosen with `python -m bench` and `python -m bench.faces_kept` on a shared 2-core CPU (720p25
    # clip): see README "Profiles". Detect as finely as the default (same width, min face and
    # pyramid; P-Net threshold 0.7), but fully only every 12th frame; in between, the faces already
    # found are re-found with R-/O-Net alone and the tracker follows them.
    "cpu": {
        "detection": {
            "every_n_frames": 12,
            "refine_between": True,
            "thresholds": (0.7, 0.7, 0.7),
            "max_batch": 1,
            "backend": "fast",
        },
        "recognition": {"max_attempts_per_track": 3},
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

STILL_DETECTION_KEYS = ("min_face_px", "thresholds", "pyramid_factor", "detect_width", "edge_pad")
"""The ``detection`` keys that decide which faces are found. Still-image commands (embed, verify,
enroll, identify, calibrate, and gallery enrolment in ``run``) take these from the built-in
defaults, not from the profile; keys set in the config file still win."""

CudaProbe = tuple[bool, str]
"""(a CUDA device is usable, why): what ``profile: auto`` decides on."""


def probe_cuda() -> CudaProbe:
    """Whether torch can use a CUDA device, and a short reason; imports torch (only when called)."""
    import warnings

    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a hard dependency of the app
        return False, f"torch not importable ({exc})"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            available = torch.cuda.is_available() and torch.cuda.device_count() > 0
            name = torch.cuda.get_device_name(0) if available else ""
        except Exception as exc:  # any driver or runtime failure means "not usable"
            return False, f"CUDA unusable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if available:
        return True, f"CUDA device {name}"
    problems = [str(w.message).splitlines()[0] for w in caught if "CUDA" in str(w.message)]
    return False, f"CUDA unusable: {problems[0]}" if problems else "no CUDA device"


def resolve_profile(data: dict[str, Any], cuda: CudaProbe | None = None) -> tuple[Any, str]:
    """(profile name, why) for a raw config mapping; ``auto`` becomes cpu or gpu.

    auto picks cpu when ``detection.device`` and ``recognition.device`` are both set to cpu, or when no
    CUDA device is usable (``cuda``, else ``probe_cuda()``), and gpu otherwise. Any other value is
    returned as it is (a bad one is then rejected by the field validator).
    """
    name = data.get("profile", "auto")
    if name != "auto":
        return name, "set in the config"
    devices = [_section_value(data, section, "device") for section in ("detection", "recognition")]
    if devices == ["cpu", "cpu"]:
        return "cpu", "auto: detection.device and recognition.device are cpu"
    available, why = cuda if cuda is not None else probe_cuda()
    return ("gpu" if available else "cpu"), f"auto: {why}"


def _section_value(data: dict[str, Any], section: str, key: str) -> Any:
    given = data.get(section)
    if isinstance(given, dict):
        return given.get(key)
    if isinstance(given, BaseModel) and key in given.model_fields_set:
        return getattr(given, key)
    return None


def _explicit_keys(data: dict[str, Any]) -> frozenset[str]:
    """``section.key`` for every key the user set (in a mapping, or on a model they passed)."""
    keys: set[str] = set()
    for section, given in data.items():
        if isinstance(given, dict):
            keys.update(f"{section}.{key}" for key in given)
        elif isinstance(given, BaseModel):
            keys.update(f"{section}.{key}" for key in given.model_fields_set)
    return frozenset(keys)


def _preset_text(profile: str) -> str:
    return ", ".join(
        f"{section}.{key}={value}" for section, values in PROFILES[profile].items() for key, value in values.items()
    )


def apply_profile(data: Any) -> Any:
    """Raw config mapping → the same with the profile's presets filled in where a key is unset.

    Anything that is not a mapping (or an unknown profile, or ``auto``: see ``resolve_profile``) is
    passed through for the field validators to reject with their usual message.
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
            continue  # a bad section, or a model passed in code (taken as it is): the validator decides
        filled[section] = {**values, **given}
    return filled


class ClusterConfig(_Strict):
    """Where work runs when it outgrows one process: a Ray cluster (``run.py serve``/``run`` place groups of
    streams on it as actors; ``run.py annotate`` spreads its files over it). Null (the default): one
    process, Ray is never imported."""

    address: str = Field(
        "auto",
        description="Ray cluster address: auto (a cluster already running on this machine, started with "
        "`ray start --head`), ray://host:10001 (Ray Client), or host:6379 (the head's GCS).",
    )
    streams_per_worker: int = Field(
        4, ge=1, le=64, description="Streams one worker actor runs (one pipeline per actor, as one process today)."
    )
    worker_cpus: float = Field(1.0, gt=0.0, le=256.0, description="CPUs Ray reserves for each stream worker actor.")
    worker_gpus: float | None = Field(
        None,
        ge=0.0,
        le=16.0,
        description="GPU fraction Ray reserves for each stream worker actor (null: 0.25 with the gpu profile, else 0).",
    )
    max_restarts: int = Field(
        10, ge=0, le=1000, description="Times Ray restarts a worker actor whose process died (its streams resume)."
    )
    annotate_cpus: float = Field(1.0, gt=0.0, le=256.0, description="CPUs Ray reserves for each annotate file task.")

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        text = value.strip()
        if text == "auto" or re.fullmatch(r"(ray://)?[A-Za-z0-9.\-\[\]:]+:\d{1,5}", text):
            return text
        raise ValueError(f"must be auto, ray://host:port or host:port, got {value!r}")


class AppConfig(_Strict):
    streams: tuple[StreamConfig, ...] = Field((), description="Video sources. Empty: the built-in demo clip.")
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="Face detection (MTCNN).")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Kalman tracking.")
    recognition: RecognitionConfig = Field(default_factory=RecognitionConfig, description="Embedding and matching.")
    gallery: GalleryConfig = Field(default_factory=GalleryConfig, description="Known people.")
    outputs: OutputsConfig = Field(default_factory=OutputsConfig, description="Videos, events, snapshots.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Process settings.")
    web: WebConfig = Field(default_factory=WebConfig, description="The web app (run.py serve, --web).")
    profile: Profile = Field(
        "auto",
        description="Preset for unset keys (keys you set win). auto: cpu when no CUDA device is usable (or "
        "both devices are set to cpu), else gpu; the choice and why are logged first. default: the "
        "built-in values. cpu: " + _preset_text("cpu") + "; gpu: " + _preset_text("gpu") + ". Still-image "
        "commands and gallery enrolment detect with the built-in " + ", ".join(STILL_DETECTION_KEYS) + " "
        "whatever the profile. The effective config shows the resolved name.",
    )
    mqtt: MqttConfig | None = Field(
        None, description="Publish events, presence, alerts and Home Assistant discovery to an MQTT broker (null: off)."
    )
    alerts: tuple[AlertRule, ...] = Field(
        (), description="Alert rules: each matching face gives an alert event (journal, store, MQTT, webhook)."
    )
    cluster: ClusterConfig | None = Field(
        None, description="Run streams and annotate batches on a Ray cluster (null: one process, no Ray)."
    )
    snapshot_base_url: str | None = Field(
        None,
        description="Public URL under which the snapshots folder is served, e.g. http://nvr.lan:8080/api/snapshots "
        "(the web app): events and alerts on MQTT and webhooks carry snapshot_url = <this>/<file name> (null: none).",
    )

    _profile_reason: str = PrivateAttr("set in the config")
    _explicit: frozenset[str] = PrivateAttr(frozenset())

    @model_validator(mode="wrap")
    @classmethod
    def _fill_from_profile(
        cls, data: Any, handler: ModelWrapValidatorHandler[AppConfig], info: ValidationInfo
    ) -> AppConfig:
        if not isinstance(data, dict):
            return handler(data)
        cuda = (info.context or {}).get("cuda")
        name, reason = resolve_profile(data, cuda)
        config = handler(apply_profile({**data, "profile": name}))
        config._profile_reason = reason
        config._explicit = _explicit_keys(data)
        return config

    @property
    def profile_note(self) -> str:
        """The profile in use and why, e.g. ``cpu (auto: no CUDA device)``."""
        return f"{self.profile} ({self._profile_reason})"

    def still_detection(self) -> DetectionConfig:
        """``detection`` for still images: ``STILL_DETECTION_KEYS`` at their built-in defaults unless
        set in the config; the rest (backend, device, batching) as for video."""
        defaults = DetectionConfig()
        reset = {
            key: getattr(defaults, key) for key in STILL_DETECTION_KEYS if f"detection.{key}" not in self._explicit
        }
        return self.detection.model_copy(update=reset)

    @field_validator("streams")
    @classmethod
    def _unique_names(cls, streams: tuple[StreamConfig, ...]) -> tuple[StreamConfig, ...]:
        names = [s.name for s in streams]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stream names must be unique, repeated: {', '.join(dupes)}")
        return streams

    @field_validator("snapshot_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else public_url(value).rstrip("/")

    @model_validator(mode="after")
    def _alerts_fit(self) -> AppConfig:
        """Rules name streams and zones that exist; their actions have what they need.

        Messages start with the key path (``alerts[0].zones: ...``): ``_first_error`` shows them as they are."""
        rules = [r.name for r in self.alerts]
        dupes = sorted({n for n in rules if rules.count(n) > 1})
        if dupes:
            raise ValueError(f"alerts: rule names must be unique, repeated: {', '.join(dupes)}")
        streams = {s.name: s for s in self.streams} or {DEMO_STREAM: StreamConfig(name=DEMO_STREAM, webcam=0)}
        for i, rule in enumerate(self.alerts):
            where = f"alerts[{i}]"
            missing = [n for n in rule.streams if n not in streams]
            if missing:
                known = ", ".join(streams) if self.streams else f"none configured; the demo's is {DEMO_STREAM}"
                raise ValueError(f"{where}.streams: no stream named {', '.join(missing)} (streams: {known})")
            scope = [streams[n] for n in rule.streams] if rule.streams else list(streams.values())
            zones = {z for s in scope for z in s.zones}
            unknown_zones = [z for z in rule.zones if z not in zones]
            if unknown_zones:
                names = ", ".join(sorted(zones)) or "none"
                on = ", ".join(s.name for s in scope)
                raise ValueError(
                    f"{where}.zones: no zone {', '.join(unknown_zones)} on stream(s) {on} (zones: {names})"
                )
            if UNKNOWN_PERSON in rule.when and not self.recognition.stranger_ids:
                raise ValueError(
                    f"{where}.when: 'unknown' needs recognition.stranger_ids: true (unknown faces are told by their "
                    "unknown-N label)"
                )
            if rule.mqtt_topic is not None and self.mqtt is None:
                raise ValueError(f"{where}.mqtt_topic: needs the mqtt section (no broker configured)")
        return self

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
                "mqtt": None if self.mqtt is None else _absolute_tls(self.mqtt, absolute),
                "outputs": self.outputs.model_copy(
                    update={"dir": absolute(self.outputs.dir), "events_db": _absolute_store(self.outputs.events_db, base)}
                ),
            }
        )


def _absolute_tls(mqtt: MqttConfig, absolute: Any) -> MqttConfig:
    tls = mqtt.tls
    if tls is None:
        return mqtt
    files = {k: absolute(getattr(tls, k)) for k in ("ca_file", "cert_file", "key_file")}
    return mqtt.model_copy(update={"tls": tls.model_copy(update=files)})


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


def load_config(path: Path, environ: dict[str, str] | None = None, cuda: CudaProbe | None = None) -> AppConfig:
    """Read, substitute and validate a YAML config file; relative paths resolve next to it.

    ``cuda`` stands in for ``probe_cuda()`` when resolving ``profile: auto`` (tests)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    return parse_config(text, source=str(path), environ=environ, cuda=cuda).resolve_paths(path.resolve().parent)


def parse_config(
    text: str, source: str = "<config>", environ: dict[str, str] | None = None, cuda: CudaProbe | None = None
) -> AppConfig:
    """Validate YAML text; paths stay as written (see ``AppConfig.resolve_paths``).

    ``cuda`` stands in for ``probe_cuda()`` when resolving ``profile: auto`` (tests)."""
    data = _parse_yaml(text, source)
    try:
        data = _substitute(data, os.environ if environ is None else environ, path="")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return AppConfig.model_validate(data, context={"cuda": cuda})
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


SECRET_KEYS = frozenset({"password"})
"""Keys whose values never appear in an error message."""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    if not err["loc"] and err["type"] == "value_error":  # a check across sections names its own keys
        return _describe(err)
    if any(part in SECRET_KEYS for part in err["loc"]):
        err = {**err, "input": "***", "ctx": {k: "***" if k == "error" else v for k, v in err.get("ctx", {}).items()}}
        if err["type"] == "value_error":
            err["ctx"] = {"error": err["msg"].removeprefix("Value error, ")}
    return f"{_loc(err['loc'])}: {_describe(err)}"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # a bad mapping key (a zone name): the key itself names the place
            continue
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
    """A section's keys; a list of sections (``streams``, ``alerts``) as ``key[].sub``, and an optional
    section (``mqtt``, default null) as its own row followed by its keys."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_of(field.annotation)
        if sub is None:
            default = field.get_default(call_default_factory=True)
            yield key, _show_default(field.is_required(), default), field.description or ""
        elif getattr(field.annotation, "__origin__", None) is tuple:
            yield key, "[]", field.description or ""
            yield from _rows(sub, key + "[].")
        elif not field.is_required() and field.get_default(call_default_factory=True) is None:
            yield key, "null", field.description or ""
            yield from _rows(sub, key + ".")
        else:
            yield from _rows(sub, key + ".")


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
