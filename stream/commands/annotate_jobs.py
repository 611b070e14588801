"""What a batch of files and its schedulers share: the job, its result, the per-file function, and the
one-line reasons of failures. ``annotate`` (worker processes here) and ``annotate_ray`` (actors on a
Ray cluster) both use it; neither imports the other's scheduler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stream.config import ConfigError
from stream.errors import PipelineError, UserError
from stream.faces.embedder import ModelUnavailableError
from stream.logs import mask_secrets

__all__ = ["FileFunction", "FileJob", "FileResult", "Status", "WorkerStartError", "failure_reason", "start_failure"]


Status = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class FileJob:
    """One video to annotate: the source and its output folder."""

    source: Path
    out_dir: Path


@dataclass(frozen=True)
class FileResult:
    """What became of one video. ``reason``: one line, for a failed file."""

    source: Path
    out_dir: Path
    status: Status
    frames: int = 0
    seconds: float = 0.0
    reason: str = ""
    decode_errors: int = 0


FileFunction = Callable[[FileJob], FileResult]


def failure_reason(exc: BaseException) -> str:
    """One line: the user-facing message of a bad input, else the error's type and message."""
    cause = exc.__cause__ if isinstance(exc, PipelineError) and isinstance(exc.__cause__, UserError) else exc
    text = str(cause) if isinstance(cause, UserError) else f"{type(cause).__name__}: {cause}"
    lines = text.strip().splitlines()
    return mask_secrets(lines[0] if lines else type(cause).__name__)


def start_failure(exc: Exception) -> tuple[str, bool]:
    """Why a worker could not start (one line) and whether it is the user's to fix."""
    return failure_reason(exc), isinstance(exc, UserError | ConfigError | ModelUnavailableError)


class WorkerStartError(Exception):
    """A worker process could not start (models or gallery); ``user`` when it is the user's to fix."""

    def __init__(self, message: str, user: bool) -> None:
        super().__init__(message)
        self.user = user
