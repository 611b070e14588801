"""The cpu profile as it was before issue 12, for before/after comparisons (``cpu-before``)."""

BEFORE_CPU = (
    "profile: default\n"
    "detection:\n  detect_width: 480\n  min_face_px: 40\n  every_n_frames: 5\n  pyramid_factor: 0.6\n"
    "  thresholds: [0.7, 0.7, 0.7]\n  max_batch: 1\n  backend: fast\n"
    "tracking:\n  max_age_s: 1.0\n  centre_gate: 0.0\n  hold_size_when_lost: false\n"
    "recognition:\n  max_attempts_per_track: 4\n"
    "outputs:\n  video_preset: superfast\n"
    "runtime:\n  torch_threads: 1\n"
)
"""The whole cpu profile and the tracker before issue 12 (commit 49af991), as a config."""
