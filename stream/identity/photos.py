"""What may enter the gallery folder: person names, uploaded photos and the file names they get.

Pure checks (Pillow for image content, no writes). Nothing from the outside ever becomes a path as
given: a person name is checked to be one plain folder name, and an uploaded photo is stored under a
name made from its original name's letters and digits plus the extension of its *decoded* format.

- ``person_name(text)``: strips surrounding spaces; refuses an empty name, one over ``MAX_NAME_CHARS``,
  control characters, path separators and the characters Windows forbids (``/ \\ : * ? " < > |``), a
  leading dot (hidden folders are skipped by ``enroll``) and a trailing dot.
- ``check_photo(upload, limits)``: refuses an empty file, one over ``max_bytes``, content Pillow cannot
  identify as JPEG, PNG, WebP or BMP, an image over ``max_pixels`` or under ``min_side`` px, and one
  that does not decode to the end (truncated). Returns the extension its format is stored under.
- ``photo_file_name(original, extension, taken)``: ``<stem>.<ext>``, the stem cut to the letters, digits,
  ``-`` and ``_`` of the original's last path part (``photo``when nothing is left), made unique
  against ``taken`` with ``-2``, ``-3``...

Every refusal is a ``BadInput`` (a ``UserError``) whose message names the upload and the reason.
"""

from __future__ import annotations

import io
import re
import unicodedata
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from stream.errors import UserError

__all__ = [
    "FORMATS",
    "MAX_NAME_CHARS",
    "BadInput",
    "Conflict",
    "NotFound",
    "PhotoLimits",
    "Upload",
    "check_photo",
    "person_name",
    "photo_file_name",
]

MAX_NAME_CHARS = 64
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}
"""Pillow format → the extension a photo of that format is stored with (all of them ``enroll`` reads)."""
_FORBIDDEN = set('/\\:*?"<>|')
_STEM_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
MAX_STEM_CHARS = 60


class BadInput(UserError):
    """Input refused (a bad name, a photo that is not one, too big, ...); nothing was changed."""


class NotFound(UserError):
    """No such person, photo, group or event."""


class Conflict(UserError):
    """The request clashes with what is there (a name taken, a group that changed meanwhile)."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name the client gave it (only its letters and digits are kept) and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class PhotoLimits:
    """max_bytes: largest file accepted; max_pixels: largest image (width x height); min_side: smallest
    width or height (a face of ``EnrollGates.min_face_px`` must fit); max_files: most files in one upload."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    min_side: int = 40
    max_files: int = 50


def person_name(text: object, field: str = "person") -> str:
    """``text`` as a person's name (a folder name in the gallery), or ``BadInput`` saying why not."""
    if not isinstance(text, str):
        raise BadInput(f"{field}: expected a name (text), got {type(text).__name__}")
    name = unicodedata.normalize("NFC", text.strip())
    if not name:
        raise BadInput(f"{field}: the name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise BadInput(f"{field}: the name is longer than {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise BadInput(f"{field}: the name has control or invisible characters")
    bad = sorted(_FORBIDDEN.intersection(name))
    if bad:
        raise BadInput(f"{field}: the name may not contain {' '.join(bad)} ({name!r})")
    if name.startswith(".") or name.endswith("."):
        raise BadInput(f"{field}: the name may not start or end with a dot ({name!r})")
    return name


def check_photo(upload: Upload, limits: PhotoLimits = PhotoLimits()) -> str:
    """The extension ``upload`` is stored with, after checking it is a whole image within ``limits``."""
    label = _label(upload.name)
    data = upload.data
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadInput(f"{label}: expected the file's bytes, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise BadInput(f"{label}: the file is empty")
    if size > limits.max_bytes:
        raise BadInput(f"{label}: the file is too large ({size:,} bytes; at most {limits.max_bytes:,})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data))) as image:
                kind = image.format or "?"
                if kind not in FORMATS:
                    raise BadInput(f"{label}: {kind} images are not accepted (JPEG, PNG, WebP or BMP)")
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise BadInput(
                        f"{label}: the image is too large ({width}x{height}; at most {limits.max_pixels:,} pixels)"
                    )
                if min(width, height) < limits.min_side:
                    raise BadInput(f"{label}: the image is too small ({width}x{height}; at least {limits.min_side} px)")
                image.load()
    except BadInput:
        raise
    except UnidentifiedImageError:
        raise BadInput(f"{label}: not an image (JPEG, PNG, WebP or BMP)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(f"{label}: the image is too large (over {limits.max_pixels:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"{label}: the image cannot be decoded ({' '.join(str(exc).split())})") from None
    return FORMATS[kind]


def photo_file_name(original: str, extension: str, taken: set[str]) -> str:
    """A safe, new file name for a photo (module notes); ``taken``: names already in the folder (any case)."""
    last = re.split(r"[/\\]", original or "")[-1]
    stem = last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
    stem = _STEM_CHARS.sub("_", stem).strip("_-")[:MAX_STEM_CHARS] or "photo"
    used = {t.lower() for t in taken}
    name, n = f"{stem}{extension}", 1
    while name.lower() in used:
        n += 1
        name = f"{stem}-{n}{extension}"
    return name


def _label(name: str) -> str:
    """An upload's name for messages: printable, short."""
    text = "".join(c if c.isprintable() else "?" for c in str(name))[:80]
    return repr(text) if text else "(unnamed upload)"
