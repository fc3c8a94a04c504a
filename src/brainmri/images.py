"""Decode any supported image file into one 8-bit grayscale array.

Every path into a model (training data preparation, evaluation on an external folder,
prediction, the web app) starts here, so a slice looks the same to the model whatever
format it arrived in. Formats are recognised by content, never by file name.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from brainmri.errors import BrainMRIError

#: Largest image accepted, in pixels. MRI slices are at most a few megapixels; anything
#: far larger is a mistake or a decompression bomb, and decoding it would exhaust memory.
MAX_PIXELS = 50_000_000

#: File suffixes looked at when scanning folders (content still decides the format).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")


class ImageError(BrainMRIError):
    """A file that cannot be used as an image; the message is the reason, for reports."""


def _is_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Stretch any numeric range linearly onto 0..255 (16-bit PNG/TIFF, DICOM).

    NaN or infinite pixels (float TIFFs) are refused: stretching around them would give an
    all-black slice that still gets a confident-looking prediction."""
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ImageError("image contains NaN or infinite pixel values")
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _decode_dicom(data: bytes, max_pixels: int) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageError(f"unreadable DICOM: {exc}") from None
    if rows * cols > max_pixels:
        raise ImageError(f"image too large: {cols}x{rows} pixels (limit {max_pixels:,})")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise ImageError(f"DICOM without decodable pixels: {exc}") from None
    try:
        return _dicom_to_uint8(ds, arr)
    except ImageError:
        raise
    except Exception as exc:  # malformed rescale/window attributes, odd photometric data
        raise ImageError(f"unusable DICOM pixel data or window: {exc}") from None


def _dicom_to_uint8(ds, arr: np.ndarray) -> np.ndarray:
    """Modality rescale, VOI window and photometric interpretation, then 8 bits."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 4 or (arr.ndim == 3 and photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")):
        if arr.ndim == 4:
            arr = arr[arr.shape[0] // 2]
        return np.asarray(Image.fromarray(_scale_to_uint8(arr) if arr.dtype != np.uint8 else arr).convert("L"))
    if arr.ndim == 3:  # multi-frame grayscale: the middle frame is the representative slice
        arr = arr[arr.shape[0] // 2]
    arr = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        arr = apply_voi_lut(arr, ds)
    out = _scale_to_uint8(arr)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _decode_pil(data: bytes, max_pixels: int) -> tuple[np.ndarray, tuple[int, int], str]:
    try:
        # Our own limit is checked from the header before any pixel is decoded; it sits
        # below Pillow's bomb threshold, so Pillow's process-wide warning filters (not
        # thread-safe to change) never come into play.
        img = Image.open(io.BytesIO(data))
        size, mode = img.size, img.mode
        if size[0] * size[1] > max_pixels:
            raise ImageError(f"image too large: {size[0]}x{size[1]} pixels (limit {max_pixels:,})")
        img.load()
        img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError("image too large: refused as a possible decompression bomb") from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image: {exc}") from None
    try:
        return _pil_to_uint8(img), size, mode
    except ImageError:
        raise
    except Exception as exc:  # modes Pillow cannot convert (LAB, CMYK variants, ...)
        raise ImageError(f"unsupported image mode {img.mode}: {exc}") from None


def _pil_to_uint8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> 8-bit grayscale (16-bit and float stretched, alpha on black)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = _scale_to_uint8(np.asarray(img))
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        arr = np.asarray(Image.alpha_composite(black, rgba).convert("L"))
    elif img.mode == "L":
        arr = np.asarray(img)
    else:
        arr = np.asarray(img.convert("L"))
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_gray(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a file (path or bytes) to an 8-bit grayscale array of shape (H, W).

    Raises :class:`ImageError` with a short reason for anything that is not a usable image.
    """
    return read_gray_info(source, max_pixels)[0]


def read_gray_info(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int], str]:
    """Like :func:`read_gray`, also returning the original (width, height) and mode."""
    if isinstance(source, (str, Path)):
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"no such file: {source}") from None
        except IsADirectoryError:
            raise ImageError(f"is a folder, not an image: {source}") from None
        except OSError as exc:
            raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
    else:
        data = bytes(source)
    if not data:
        raise ImageError("empty file")
    if _is_dicom(data[:132]):
        arr = _decode_dicom(data, max_pixels)
        return arr, (arr.shape[1], arr.shape[0]), "DICOM"
    return _decode_pil(data, max_pixels)
