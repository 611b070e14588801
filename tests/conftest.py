"""Shared fixtures. Real data is read from ../shared/data; tests skip with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ADAFACE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real test images and videos (../shared/data), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set ADAFACE_SHARED_DATA)")
    return SHARED_DATA


def shared_file(root: Path, relative: str) -> Path:
    path = root / relative
    if not path.exists():
        pytest.skip(f"missing shared data file {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One intra-op thread: on a shared 2-core machine two threads oversubscribe badly."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
