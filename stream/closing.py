"""Closing what was opened without letting a failure to close hide anything else."""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["Closable", "close_quietly"]

_LOG = logging.getLogger(__name__)


class Closable(Protocol):
    def close(self) -> None: ...


def close_quietly(resource: Closable | None, what: str, *, level: int = logging.DEBUG) -> None:
    """Close ``resource`` (None: nothing), logging a failure at ``level`` instead of raising it.

    For clean-up paths only: a broken connection closed after its read failed (the read's error is
    the one that matters), a half-opened container, one stream's output among several that must
    all be closed.
    """
    if resource is None:
        return
    try:
        resource.close()
    except Exception as exc:
        _LOG.log(level, "closing %s failed: %s", what, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
