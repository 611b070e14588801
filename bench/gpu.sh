#!/usr/bin/env bash
# Multi-stream GPU benchmark: N copies of the 1080p clip as parallel streams through the app
# pipeline (cross-stream detection batches, fp16 embeddings: profile gpu), against the naive loop.
#
#   N=16 MAX_FRAMES=100 bash bench/gpu.sh            # on the GPU machine (no internet)
#   N=2 MAX_FRAMES=20 bash bench/gpu.sh              # dry run: falls back to CPU without CUDA
#
# Wheels: facenet-pytorch, av, filterpy, prometheus-client, pydantic... found in ./wheels are
# installed offline (--no-index --no-deps); torch, torchvision, numpy, opencv are expected preinstalled.
# The clip: $CLIP, else data/video.mp4 in the repo (copy it there and carry it), else ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-16}
MAX_FRAMES=${MAX_FRAMES:-100}
PROFILE=${PROFILE:-gpu}
OUT=${OUT:-bench/results}
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

if [ -z "${CLIP:-}" ]; then
  for candidate in data/video.mp4 ../shared/data/facenet-pytorch/examples/video.mp4; do
    [ -f "$candidate" ] && CLIP=$candidate && break
  done
fi
[ -n "${CLIP:-}" ] || { echo "error: no clip: set CLIP=path/to/video.mp4" >&2; exit 2; }

if compgen -G "wheels/*.whl" >/dev/null; then
  echo "== installing carried wheels from wheels/"
  "$PY" -m pip install --quiet --no-index --no-deps --find-links wheels wheels/*.whl
fi

"$PY" - <<'PY'
import torch
cuda = torch.cuda.is_available()
print("== device:", torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA: dry run)", "| torch", torch.__version__)
PY

mkdir -p "$OUT"
JSON="$OUT/gpu-streams$N-last.json"
echo "== $N streams x $MAX_FRAMES frames of $CLIP, profile $PROFILE"
"$PY" -m bench --clip "$CLIP" --streams "$N" --profile "$PROFILE" --max-frames "$MAX_FRAMES" --json "$JSON" --no-save >/dev/null

"$PY" - "$JSON" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p, n = r["pipeline"], r["naive"]
print(f"streams            {r['streams']} x {r['frames_per_stream']} frames ({r['machine']['gpu'] or 'CPU'})")
print(f"pipeline frames/s  {p['fps']:.1f} total, {p['fps'] / r['streams']:.1f} per stream")
print(f"faces/s            detected {p['detections_per_s']:.1f}, embedded {p['embeddings_per_s']:.1f}")
print(f"latency ms         p50 {p['latency_p50_ms']}, p95 {p['latency_p95_ms']}")
print(f"memory MB          GPU peak {p['cuda_peak_mb']}, RSS peak {p['rss_peak_mb']}")
print(f"naive frames/s     {n['fps']:.2f} (one stream) -> speedup {r['speedup']}x")
print(f"json               {sys.argv[1]}")
PY
