"""Logging setup and credential masking.

``setup_logging`` is the one place that configures handlers; modules use
``logging.getLogger(__name__)``. Every handler it installs carries ``MaskSecrets``, so
``rtsp://user:secret@host`` is logged as ``rtsp://user:***@host`` whatever the call site.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

# scheme://user:password@  — the password ends at the last '@' before the host part.
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<secret>[^\s/]*)(?P<at>@)")
_HANDLER_NAME = "adaface-stream"


def mask_secrets(text: str) -> str:
    """Replace the password part of any URL in ``text`` with ``***``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['head']}***{m['at']}", text)


class MaskSecrets(logging.Filter):
    """Formats each record's message (and traceback) once, with URL passwords masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_secrets(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Install one masked handler on the root logger; calling again replaces it."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(MaskSecrets())
    root.addHandler(handler)
    root.setLevel(level)
    return handler
