"""Config: valid files, each error class, ${ENV} substitution, masking, the CLI's exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream.cli import main
from stream.config import AppConfig, ConfigError, load_config, parse_config, reference_rows, to_masked_yaml
from tests.conftest import REPO


def test_shipped_config_is_valid_and_matches_defaults() -> None:
    shipped = load_config(REPO / "config.yaml")
    assert shipped == AppConfig().resolve_paths(REPO)


def test_empty_file_gives_defaults() -> None:
    assert parse_config("") == AppConfig()


def test_relative_paths_resolve_next_to_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "sub" / "c.yaml"
    cfg.parent.mkdir()
    cfg.write_text("streams:\n  - name: a\n    path: clips/a.mp4\ngallery:\n  dir: /abs/gallery\n")
    loaded = load_config(cfg)
    assert loaded.streams[0].path == tmp_path / "sub" / "clips" / "a.mp4"
    assert loaded.gallery.dir == Path("/abs/gallery")
    assert loaded.outputs.dir == tmp_path / "sub" / "recordings"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("detection:\n  min_face_px: 3\n", "detection.min_face_px: must be >= 12, got 3"),
        ("detection:\n  min_fac_px: 30\n", "detection.min_fac_px: unknown key (allowed: min_face_px,"),
        ("colour: red\n", "colour: unknown key (allowed: streams, detection,"),
        (
            "recognition:\n  precision: fp8\n",
            "recognition.precision: must be one of 'fp32', 'fp16' or 'bf16', got 'fp8'",
        ),
        ("detection:\n  max_batch: lots\n", "detection.max_batch: input should be a valid integer"),
        ("detection:\n  thresholds: [0.6, 1.5, 0.7]\n", "detection.thresholds[1]: must be < 1.0, got 1.5"),
        ("detection:\n  device: gpu\n", "detection.device: must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("streams:\n  - name: a\n", "streams[0]: exactly one of url, path, webcam must be set, got none"),
        ("streams:\n  - name: a\n    url: rtsp://h/x\n    webcam: 0\n", "exactly one of url, path, webcam"),
        ("streams:\n  - name: a b\n    webcam: 0\n", "streams[0].name: must use only letters"),
        (
            "streams:\n  - {name: a, webcam: 0}\n  - {name: a, webcam: 1}\n",
            "streams: stream names must be unique, repeated: a",
        ),
        (
            "streams:\n  - {name: a, webcam: 0, fps: 3}\n",
            "streams[0].fps: unknown key (allowed: name, url, path, webcam, mode, zones)",
        ),
        ("tracking:\n  iou_gate: 0\n", "tracking.iou_gate: must be > 0.0, got 0"),
        ("outputs:\n  video_preset: turbo\n", "outputs.video_preset: must be one of 'ultrafast', 'superfast',"),
        ("outputs:\n  video_crf: 60\n", "outputs.video_crf: must be <= 51, got 60"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("detection: [\n", "YAML syntax error at line 2"),
    ],
)
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.yaml")
    text_out = str(info.value)
    assert text_out.startswith("c.yaml: ")
    assert message in text_out
    assert "\n" not in text_out


def test_env_substitution_and_defaults() -> None:
    text = "streams:\n  - name: door\n    url: rtsp://viewer:${PW}@cam/${PATH_PART:-live}\n"
    cfg = parse_config(text, environ={"PW": "s3cr:et"})
    assert cfg.streams[0].url == "rtsp://viewer:s3cr:et@cam/live"


def test_missing_env_var_names_key_and_variable() -> None:
    with pytest.raises(ConfigError, match=r"c.yaml: streams\[0\].url: environment variable PW is not set"):
        parse_config("streams:\n  - name: a\n    url: rtsp://u:${PW}@h/x\n", source="c.yaml", environ={})


def test_masked_yaml_hides_url_passwords() -> None:
    cfg = parse_config("streams:\n  - name: a\n    url: rtsp://u:${PW}@h/x\n", environ={"PW": "hunter2"})
    out = to_masked_yaml(cfg)
    assert "hunter2" not in out
    assert "rtsp://u:***@h/x" in out


def test_effective_mode() -> None:
    cfg = parse_config(
        "streams:\n  - {name: f, path: a.mp4}\n  - {name: u, url: rtsp://h/x}\n  - {name: w, webcam: 0, mode: file}\n"
    )
    assert [s.effective_mode for s in cfg.streams] == ["file", "live", "file"]


def test_config_is_frozen() -> None:
    cfg = AppConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.detection.min_face_px = 40  # type: ignore[misc]


def test_every_field_has_a_description() -> None:
    rows = list(reference_rows())
    assert len(rows) > 30
    assert all(desc for _, _, desc in rows), [key for key, _, desc in rows if not desc]


def test_readme_reference_matches_the_models() -> None:
    from stream.cli import reference_markdown

    readme = (REPO / "README.md").read_text()
    assert reference_markdown() in readme, "README config reference is stale: run `make config-reference`"


def test_cli_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detection:\n  min_face_px: 3\n")
    assert main(["config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {bad}: detection.min_face_px: must be >= 12, got 3"
    good = tmp_path / "good.yaml"
    good.write_text("streams:\n  - name: a\n    url: rtsp://u:${PW}@h/x\n")
    assert main(["config", "--config", str(good)]) == 2  # PW unset
    assert main(["config", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_run_py_help_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "run.py", "--help"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "config" in out.stdout and "run" in out.stdout


@pytest.mark.slow
def test_run_py_config_prints_and_unknown_key_exits_2(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "run.py", "config"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "detection:" in ok.stdout
    bad = tmp_path / "c.yaml"
    bad.write_text("tracking:\n  max_age: 2\n")
    out = subprocess.run(
        [sys.executable, "run.py", "config", "--config", str(bad)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "tracking.max_age: unknown key" in out.stderr
    assert "Traceback" not in out.stderr


def test_tracking_section_maps_onto_the_tracker_library() -> None:
    from trackers import TrackerSettings

    assert AppConfig().tracking.tracker_settings() == TrackerSettings()
    custom = parse_config("tracking:\n  max_age_s: 2.5\n  min_hits: 1\n").tracking.tracker_settings()
    assert (custom.max_age_s, custom.min_hits) == (2.5, 1)


# ---------------------------------------------------------------- profile presets


def test_profile_fills_only_unset_keys() -> None:
    from stream.config import PROFILES

    default, cpu = AppConfig(profile="default"), parse_config("profile: cpu\n")
    assert cpu.profile == "cpu" and default.profile == "default"
    for section, values in PROFILES["cpu"].items():
        for key, value in values.items():
            got = getattr(getattr(cpu, section), key)
            assert got == (tuple(value) if isinstance(value, list | tuple) else value), f"{section}.{key}"
    # keys the profile does not name keep their defaults
    assert cpu.tracking == default.tracking and cpu.detection.edge_pad == default.detection.edge_pad
    gpu = parse_config("profile: gpu\n")
    assert gpu.detection.max_batch == PROFILES["gpu"]["detection"]["max_batch"]
    assert gpu.runtime == default.runtime


def test_profile_explicit_keys_win() -> None:
    text = "profile: cpu\ndetection:\n  detect_width: 800\n  every_n_frames: 1\nruntime:\n  torch_threads: 2\n"
    config = parse_config(text)
    assert (config.detection.detect_width, config.detection.every_n_frames) == (800, 1)
    assert config.runtime.torch_threads == 2
    assert config.detection.min_face_px == parse_config("profile: cpu\n").detection.min_face_px  # still filled
    # an explicit null is a set key too
    assert parse_config("profile: cpu\ndetection:\n  detect_width: null\n").detection.detect_width is None


NO_CUDA, CUDA = (False, "no CUDA device"), (True, "CUDA device NVIDIA H200")


def test_auto_is_the_default_and_picks_cpu_without_cuda_and_gpu_with_it() -> None:
    assert AppConfig.model_fields["profile"].default == "auto"
    cpu, gpu = parse_config("", cuda=NO_CUDA), parse_config("", cuda=CUDA)
    assert (cpu.profile, gpu.profile) == ("cpu", "gpu")
    assert cpu.profile_note == "cpu (auto: no CUDA device)"
    assert gpu.profile_note == "gpu (auto: CUDA device NVIDIA H200)"
    explicit_cpu, explicit_gpu = parse_config("profile: cpu\n"), parse_config("profile: gpu\n")
    for section in ("detection", "tracking", "recognition", "outputs", "runtime"):
        assert getattr(cpu, section) == getattr(explicit_cpu, section), section
        assert getattr(gpu, section) == getattr(explicit_gpu, section), section
    assert parse_config("profile: auto\n", cuda=(False, "CUDA unusable: driver too old")).profile_note == (
        "cpu (auto: CUDA unusable: driver too old)"
    )


def test_auto_takes_cpu_when_both_devices_are_cpu_even_with_cuda() -> None:
    text = "detection:\n  device: cpu\nrecognition:\n  device: cpu\n"
    assert parse_config(text, cuda=CUDA).profile_note == "cpu (auto: detection.device and recognition.device are cpu)"
    assert parse_config("detection:\n  device: cpu\n", cuda=CUDA).profile == "gpu"  # one of two: CUDA decides


def test_explicit_profile_and_explicit_keys_win_over_auto() -> None:
    for name in ("default", "cpu", "gpu"):
        config = parse_config(f"profile: {name}\n", cuda=CUDA)
        assert config.profile_note == f"{name} (set in the config)"
    config = parse_config("detection:\n  every_n_frames: 1\n  min_face_px: 32\n", cuda=NO_CUDA)
    assert (config.profile, config.detection.every_n_frames, config.detection.min_face_px) == ("cpu", 1, 32)


def test_probe_cuda_answers_without_raising() -> None:
    from stream.config import probe_cuda

    usable, why = probe_cuda()
    assert isinstance(usable, bool) and why
    assert why.startswith("CUDA device") if usable else (why == "no CUDA device" or why.startswith("CUDA unusable"))


def test_still_detection_ignores_the_profile_but_not_explicit_keys() -> None:
    from stream.config import STILL_DETECTION_KEYS, DetectionConfig

    defaults = DetectionConfig()
    for name in ("cpu", "gpu", "default"):
        still = parse_config(f"profile: {name}\n").still_detection()
        for key in STILL_DETECTION_KEYS:
            assert getattr(still, key) == getattr(defaults, key), (name, key)
    cpu = parse_config("profile: cpu\n")
    assert cpu.still_detection().backend == cpu.detection.backend  # speed-only keys follow the profile
    explicit = parse_config("profile: cpu\ndetection:\n  min_face_px: 48\n  detect_width: null\n")
    assert (explicit.still_detection().min_face_px, explicit.still_detection().detect_width) == (48, None)
    assert explicit.still_detection().pyramid_factor == defaults.pyramid_factor
    # a section passed as a model counts its set fields as explicit
    coded = AppConfig(profile="cpu", detection=DetectionConfig(min_face_px=30))
    assert coded.still_detection().min_face_px == 30 and coded.still_detection().detect_width == defaults.detect_width
    # the explicit keys survive resolve_paths (a model_copy)
    assert explicit.resolve_paths(REPO).still_detection().min_face_px == 48


def test_unknown_profile_is_a_one_line_error_naming_it() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("profile: fast\n")
    message = str(err.value)
    assert "profile" in message and "fast" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"detection\.detect_width"):
        parse_config("profile: cpu\ndetection:\n  detect_width: 10\n")  # presets do not hide field errors


@pytest.mark.slow
def test_run_py_config_shows_the_profile_values(tmp_path: Path) -> None:
    from stream.config import PROFILES

    path = tmp_path / "c.yaml"
    path.write_text("profile: cpu\ndetection:\n  min_face_px: 24\n")
    out = subprocess.run(
        [sys.executable, "run.py", "config", "--config", str(path)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "profile: cpu" in out.stdout and "min_face_px: 24" in out.stdout
    assert f"every_n_frames: {PROFILES['cpu']['detection']['every_n_frames']}" in out.stdout
    assert f"torch_threads: {PROFILES['cpu']['runtime']['torch_threads']}" in out.stdout


def test_cpu_profile_values_are_pinned() -> None:
    """The cpu profile of issue 12: detect as finely as the default, fully every 12th frame, re-find
    known faces in between (python -m bench.faces_kept: >= 90 % of the default's faces kept)."""
    from stream.config import PROFILES, DetectionConfig

    assert PROFILES["cpu"] == {
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
    }
    cpu, full = parse_config("profile: cpu\n").detection, DetectionConfig()
    for key in ("detect_width", "min_face_px", "pyramid_factor", "edge_pad"):  # not less finely
        assert getattr(cpu, key) == getattr(full, key), key
    assert cpu.refine_thresholds == (0.6, 0.6)
    assert parse_config("profile: cpu\n").tracking == parse_config("profile: default\n").tracking
