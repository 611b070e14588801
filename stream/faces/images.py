"""Still-image reading (Pillow adapter): any common file → HxWx3 uint8 BGR, or one clear error.

Handles EXIF orientation, grayscale, palette, RGBA/LA (alpha dropped onto black), 16-bit and
32-bit integer/float greyscale (scaled to 8 bits), and CMYK. Files whose content is not an
image (whatever the extension) raise ``ImageReadError`` naming the file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
MAX_PIXELS = 250_000_000  # refuse decompression bombs, allow > 8000 px photos


class ImageReadError(Exception):
    """An unreadable or unsupported image; the message names the file."""


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_bgr(path: Path) -> np.ndarray:
    """Decode ``path`` into a contiguous HxWx3 uint8 BGR array."""
    return _decode(path, str(path), MAX_PIXELS)


def decode_bgr(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image file bytes (an upload) like ``read_bgr``; ``max_pixels`` caps width x height, checked
    from the header before any pixel is decoded. Errors name ``name``."""
    if not data:
        raise ImageReadError(f"{name}: empty file")
    return _decode(io.BytesIO(data), name, min(max_pixels, MAX_PIXELS))


def image_size(data: bytes, name: str = "upload") -> tuple[int, int]:
    """(width, height) from the header of image file bytes, without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not an image (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{name}: cannot decode image ({_one_line(exc)})") from None


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                _check_size(name, img.size, max_pixels)
                img.load()
                rgb = _to_rgb(ImageOps.exif_transpose(img))
    except FileNotFoundError:
        raise ImageReadError(f"{name}: file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not an image (or an unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(f"{name}: image too large (over {max_pixels:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{name}: cannot decode image ({_one_line(exc)})") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _check_size(name: str, size: tuple[int, int], max_pixels: int = MAX_PIXELS) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageReadError(f"{name}: image too large ({width}x{height}, over {max_pixels:,} pixels)")
    if width < 1 or height < 1:
        raise ImageReadError(f"{name}: empty image ({width}x{height})")


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _high_depth_grey(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def _high_depth_grey(values: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit or float greyscale to 0..255 by its type's range (floats: by 0..1 or max)."""
    data = values.astype(np.float64)
    if np.issubdtype(values.dtype, np.floating):
        top = 1.0 if data.max(initial=0.0) <= 1.0 else data.max()
    else:
        top = 65535.0 if data.max(initial=0) <= 65535 else float(np.iinfo(values.dtype).max)
    grey = np.clip(np.nan_to_num(data) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def list_images(folder: Path, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``folder``, sorted; hidden files and folders are skipped."""
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not _hidden(p.relative_to(folder)))
    return [p for p in files if is_image_name(p)], [p for p in files if not is_image_name(p)]


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
