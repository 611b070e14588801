"""What the web app needs of the library (``stream.identity.library.Library``, ``App.library``): the
protocol its routes call, the HTTP status of each of its errors, and the checks of names that come in
through a URL before the library sees them.

``LibraryApi`` is the subset of ``Library`` the routes use; every result has ``to_dict()`` (the REST
body), so a test can pass a real ``Library`` over a temporary gallery and store, or a fake.

The library's calls can take seconds (enrolling uploaded photos with its own models) and hold the
library's lock meanwhile: the routes run them in worker threads of their own (``LibraryRunner``, at most
a few at once, the others wait without holding a thread), never on the event loop, and the pipeline
never waits for them (it only takes the new matcher from the ``GallerySlot`` at its next batch).

Errors: ``BadInput`` is 400, ``NotFound`` 404, ``Conflict`` 409; the store unavailable (or off), the
gallery folder not writable or any other ``UserError`` is 503. Names from a URL (a person, a photo's
file) are refused before the library is called when they cannot be a plain name of the gallery (empty,
control characters, ``\\``, ``.`` or ``..`` parts, a person with ``/``): 400; anything else is looked up
among the gallery's own folders and files by the library (never joined to a path as given): 404.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread

from stream.errors import UserError
from stream.identity.photos import BadInput, Conflict, NotFound, Upload
from stream.store import StoreError

__all__ = [
    "IMAGE_TYPES",
    "LibraryApi",
    "LibraryRunner",
    "ViewLike",
    "check_file_part",
    "check_person_part",
    "error_status",
    "image_type",
]

T = TypeVar("T")

IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
"""The photo files the web serves from the gallery (by suffix, with this content type), as ``enroll`` reads."""


class ViewLike(Protocol):
    def to_dict(self) -> Mapping[str, Any]: ...


class LibraryApi(Protocol):
    """What the routes call (``stream.identity.library.Library`` fits)."""

    @property
    def gallery_dir(self) -> Path: ...

    def sync(self) -> bool: ...
    def people(self) -> ViewLike: ...
    def person(self, name: str) -> ViewLike: ...
    def photo_path(self, person: str, file: str) -> Path: ...
    def add_photos(self, person: str, uploads: Sequence[Upload]) -> ViewLike: ...
    def delete_photo(self, person: str, file: str) -> ViewLike: ...
    def delete_person(self, person: str) -> ViewLike: ...
    def rename_person(self, old: str, new: str) -> ViewLike: ...
    def unknowns(self, since: float | None = None) -> ViewLike: ...
    def group(self, group_id: int) -> ViewLike: ...
    def face_crop(self, face_id: int) -> bytes: ...
    def name_group(self, group_id: int, person: str) -> ViewLike: ...
    def ignore_group(self, group_id: int) -> ViewLike: ...
    def merge_groups(self, group_id: int, other_id: int) -> ViewLike: ...
    def remove_face(self, group_id: int, face_id: int) -> ViewLike | None: ...
    def not_this_person(self, event_id: int) -> ViewLike: ...


class LibraryRunner:
    """Runs library calls in worker threads, at most ``threads`` at once (the library serialises them
    under its lock anyway; the cap keeps a queue of slow uploads from taking every worker thread of the
    server, which the live views and the events pages need)."""

    def __init__(self, threads: int = 2) -> None:
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._threads)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiter)


def error_status(exc: BaseException) -> int | None:
    """The HTTP status of a library error, or None when it is not one (a bug: the caller lets it be a 500)."""
    if isinstance(exc, BadInput):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, StoreError | UserError):
        return 503  # the store unavailable or off, the gallery not writable, the models not loadable
    if isinstance(exc, OSError):
        return 503
    return None


def _printable(text: str) -> bool:
    return not any(unicodedata.category(c).startswith("C") for c in text)


def check_person_part(name: str, field: str = "person") -> str:
    """A person's name as it came in a URL: ``BadInput`` unless it can be one plain folder name."""
    if not name or not name.strip():
        raise BadInput(f"{field}: the name is empty")
    if not _printable(name):
        raise BadInput(f"{field}: the name has control or invisible characters")
    if "/" in name or "\\" in name:
        raise BadInput(f"{field}: the name may not contain / or \\")
    if name.strip() in (".", ".."):
        raise BadInput(f"{field}: {name.strip()!r} is not a name")
    return name


def check_file_part(file: str) -> str:
    """A photo's file name as it came in a URL (relative to the person's folder, ``/`` between
    sub-folders): ``BadInput`` when it is empty, absolute, has ``\\``, control characters or an empty,
    ``.`` or ``..`` part."""
    if not file:
        raise BadInput("file: the name is empty")
    if not _printable(file):
        raise BadInput("file: the name has control or invisible characters")
    if "\\" in file or file.startswith("/"):
        raise BadInput(f"file: {_short(file)!r} is not a file name of the person's folder")
    if any(part in ("", ".", "..") for part in file.split("/")):
        raise BadInput(f"file: {_short(file)!r} is not a file name of the person's folder")
    return file


def image_type(path: Path) -> str | None:
    """The content type a gallery file is served with, or None when it is not a photo."""
    return IMAGE_TYPES.get(path.suffix.lower())


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."
