"""The benchmark harness's contract: JSON keys and the naive baseline on the same frames.

No speed is asserted here (tests never time things); the figures come from ``python -m bench``
and ``bench/gpu.sh`` runs, reported in bench/results/ and the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.config import PROFILES
from tests.conftest import REPO, shared_file

pytestmark = pytest.mark.slow  # `python -m bench` and bench/gpu.sh subprocesses with the real models


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_bench_on_the_demo_reports_both_sides_on_the_same_frames(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "bench", "--clip", "demo", "--profile", "cpu", "--max-frames", "12"]
    _run([*cmd, "--no-save", "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["pipeline"]["frames"] == r["naive"]["frames"] == r["frames_per_stream"] == 12
    assert r["pipeline_fps"] > 0 and r["naive_fps"] > 0
    assert r["speedup"] == round(r["pipeline_fps"] / r["naive_fps"], 2)
    assert r["clip_name"] == "demo" and r["profile"] == "cpu" and r["streams"] == 1
    cpu = PROFILES["cpu"]["detection"]
    assert r["pipeline"]["settings"]["every_n_frames"] == cpu["every_n_frames"]  # the cpu profile was applied
    assert r["pipeline"]["settings"]["refine_between"] is cpu["refine_between"]
    assert r["naive"]["embeddings"] == r["naive"]["detections"] > 0  # naive embeds every face
    assert r["identities_kept"] == (set(r["naive"]["identities"]) <= set(r["pipeline"]["identities"]))
    for key in ("latency_p50_ms", "latency_p95_ms", "rss_peak_mb", "stage_s"):
        assert key in r["pipeline"] and key in r["naive"]
    assert {"cpu", "cpu_count", "torch", "av"} <= set(r["machine"])


def test_gpu_script_dry_run_on_cpu(shared_data: Path, tmp_path: Path) -> None:
    """bench/gpu.sh without CUDA: same script, N streams of the 1080p clip on the CPU."""
    clip = shared_file(shared_data, "facenet-pytorch/examples/video.mp4")
    env = dict(os.environ, N="2", MAX_FRAMES="3", OUT=str(tmp_path), CLIP=str(clip), PY=sys.executable)
    done = _run(["bash", "bench/gpu.sh"], env=env)
    assert "CPU (no CUDA: dry run)" in done.stdout
    assert "streams            2 x 3 frames" in done.stdout
    r = json.loads((tmp_path / "gpu-streams2-last.json").read_text())
    assert r["streams"] == 2 and r["pipeline"]["frames"] == 6 and r["naive"]["frames"] == 3
    assert r["profile"] == "gpu" and r["pipeline"]["settings"]["max_batch"] == 32


def test_web_bench_reports_identify_both_ways_and_the_viewer_phases(tmp_path: Path) -> None:
    out = tmp_path / "web.json"
    cmd = [sys.executable, "-m", "bench.web", "--phase-seconds", "2", "--rounds", "1", "--identify-calls", "2"]
    _run([*cmd, "--cli-runs", "1", "--warmup", "3", "--no-save", "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["identify_api"]["calls"] == 2 and r["identify_api"]["ms_p50"] > 0
    api, cli = r["identify_api"]["faces"], r["identify_cli"]["faces"]  # the API answers what the CLI prints
    assert [f["person"] for f in api] == [f["person"] for f in cli] and len(api) >= 1
    assert [f["score"] for f in api] == pytest.approx([f["score"] for f in cli], abs=1e-4)
    assert [p["phase"] for p in r["phases"]] == ["none", "reading", "stalled"]
    reading = r["phases"][1]
    assert reading["viewers"] == 3 and reading["published_fps"] > 0 and reading["viewer_mbit_s"] > 0
    assert r["phases"][0]["published_fps"] == 0  # nobody watching: nothing published
    assert {"ratio_reading_median", "web_cpu_s_per_s_reading", "fps_none", "fps_reading"} <= set(r["viewer_cost"])


def test_bench_ab_runs_both_profiles_alternately_on_the_same_frames(tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    cmd = [sys.executable, "-m", "bench", "--clip", "demo", "--profile", "cpu", "--max-frames", "12"]
    _run([*cmd, "--versus", "cpu-before", "--rounds", "2", "--no-naive", "--no-save", "--json", str(out)])
    r = json.loads(out.read_text())
    ab = r["versus"]
    assert ab["profile"] == "cpu-before" and r["naive_fps"] is None and r["naive"]["skipped"]
    assert [x["profile"] for x in ab["rounds"]] == ["cpu", "cpu-before"] * 2
    assert all(x["fps"] > 0 and x["load_avg_1m_before"] >= 0 for x in ab["rounds"])
    assert ab["fps_ratio"] == pytest.approx(ab["this_fps_median"] / ab["fps_median"], abs=2e-3)
    assert ab["cpu_ratio"] == pytest.approx(ab["this_cpu_s_median"] / ab["cpu_s_median"], rel=0.1)  # from unrounded
    assert all(x["cpu_s"] > 0 for x in ab["rounds"])
    assert ab["pipeline"]["frames"] == r["pipeline"]["frames"] == 12
    assert ab["pipeline"]["settings"]["every_n_frames"] == 5 and ab["pipeline"]["settings"]["detect_width"] == 480


def test_ann_bench_compares_every_search_with_exact(tmp_path: Path) -> None:
    """bench.ann on a small gallery: every search's keys, recall and agreement; the crossover sweep."""
    out = tmp_path / "ann.json"
    cmd = [sys.executable, "-m", "bench.ann", "--sizes", "3000", "--batches", "3", "--genuine", "60"]
    done = _run([*cmd, "--strangers", "20", "--crossover", "1500,3000", "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["threads"] == 1 and r["dim"] == 512 and r["batch"] == 32 and "faiss" in r
    (size,) = r["sizes"]
    assert size["persons"] == 3000 and size["exact"]["memory_mb"] == round(3000 * 512 * 4 / 2**20, 1)
    for kind in ("flat", "ivf", "hnsw"):
        row = size[kind]
        assert {"build_s", "index_mb", "rss_delta_mb", "ms_p50", "ms_p95", "exact_same_batches_ms_p50"} <= set(row)
        assert row["recall_at_1"] >= 0.95 and row["decision_agreement"] >= 0.95
    assert size["flat"]["recall_at_1"] == size["flat"]["decision_agreement"] == 1.0  # exact
    assert [p["ivf_nprobe"] for p in size["ivf"]["sweep"]] == [8, 16, 32, 48, 64, 128]
    assert [p["persons"] for p in r["crossover"]["points"]] == [1500, 3000]
    assert "| 3,000 | exact numpy |" in done.stdout  # the README table
