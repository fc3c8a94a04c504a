"""Decode any supported image file into one 8-bit grayscale array.

Every path into a model (training data preparation, evaluation on an external folder,
prediction, the web app) starts here, so a slice looks the same to the model whatever
format it arrived in. Formats are recognised by content, never by file name.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from PIL import (  # noqa: F401 -- importing a plugin registers its format with Image.open
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    MpoImagePlugin,
    PngImagePlugin,
    PpmImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from brainmri.errors import BrainMRIError
from brainmri.files import FileRefused, read_regular

#: Largest image accepted, in pixels. MRI slices are at most a few megapixels; anything
#: far larger is a mistake or a decompression bomb, and decoding it would exhaust memory.
MAX_PIXELS = 50_000_000

#: Largest image file read, in bytes: a 50-megapixel 16-bit DICOM is 100 MB; anything larger
#: is refused from its size before a byte is read (a read is capped here too, so a file that
#: grows, or a device, cannot make it unbounded).
MAX_FILE_BYTES = 256 * 2**20

#: Formats read through Pillow (recognised by content). Others Pillow could open (EPS through
#: Ghostscript, PSD, ICNS, ...) are refused unread: no slice arrives in them, and their
#: decoders are not vetted here for what they allocate.
PIL_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "GIF", "WEBP", "PPM")  # JPEG includes MPO

#: A TIFF tile may exceed its image (writers use 256 px tiles for small images) up to this
#: many pixels; libtiff decodes whole tiles, so a 16384 px tile in an 8 px image would
#: inflate a few hundred kilobytes into a quarter of a gigabyte.
MAX_TILE_PIXELS = 2**20

# PNG text chunks are metadata no slice needs; Pillow holds up to 64 MB of them per image.
PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, 8 * 2**20)

#: Decoding is one file at a time per process: library warnings are caught with
#: ``warnings.catch_warnings`` (process-wide state) and libtiff writes to the process's
#: stderr, so both are captured for the file being decoded and become its ImageError
#: instead of lines on the terminal. Inference, the slow part, still runs in parallel.
# Stays: catch_warnings and the fd-2 swap are process-wide, with no thread-local form in Python 3.11.
_DECODE_LOCK = threading.Lock()

#: File suffixes looked at when scanning folders (content still decides the format).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")


class ImageError(BrainMRIError):
    """A file that cannot be used as an image; the message is the reason, for reports."""


@dataclass(frozen=True)
class Decoded:
    """A decoded slice and what decoding chose: ``frame`` (1-based) of the ``frames`` that a
    multi-frame DICOM, GIF, multi-page TIFF or MPO holds (0: the file's count is unreadable).
    Reported with predictions, so that a reduction to one frame is never silent."""

    array: np.ndarray
    size: tuple[int, int]  # the original (width, height)
    mode: str
    frame: int = 1
    frames: int = 1
    chroma: float = 0.0  # how coloured the source is (:func:`chroma`); the array is grey either way

    @property
    def frame_note(self) -> str | None:
        """``frame 3 of 7`` for a multi-frame file; None for a single image."""
        return frame_note(self.frame, self.frames)


def frame_note(frame: int, frames: int) -> str | None:
    """How a reduction to one frame is shown: ``frame 3 of 7`` (None for a single image)."""
    if frames == 1:
        return None
    return f"frame {frame} of {frames if frames > 1 else 'an unknown number'}"


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


#: The DICOM attributes decoding uses; pydicom skips every other element unread (a private
#: element of any size costs nothing).
DICOM_KEYWORDS = (
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "WindowCenter", "WindowWidth",
    "VOILUTFunction", "VOILUTSequence", "RescaleIntercept", "RescaleSlope", "RescaleType", "ModalityLUTSequence",
    "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "PixelData", "FloatPixelData", "DoubleFloatPixelData",
)  # fmt: skip


def _decode_dicom(data: bytes, max_pixels: int) -> tuple[np.ndarray, int, float]:
    """Check what the file declares (:mod:`brainmri.io.dicomcheck`), then read only the attributes
    decoding needs and decode only the frame that is used: the middle one of a multi-frame file.
    Returns the 8-bit slice, the number of frames in the file and the frame's :func:`chroma`."""
    import pydicom
    from pydicom.datadict import tag_for_keyword

    from brainmri.io.dicomcheck import UNCOMPRESSED, Refused, check_frame, check_structure

    try:
        syntax = check_structure(data, max_pixels).transfer_syntax
        tags = [tag for k in DICOM_KEYWORDS if (tag := tag_for_keyword(k)) is not None]  # every keyword is known
        ds = pydicom.dcmread(io.BytesIO(data), specific_tags=tags)
        if "Rows" not in ds or "Columns" not in ds:
            raise Refused("DICOM without an image (no Rows and Columns: a report, plan or waveform?)")
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except Refused as exc:
        raise ImageError(str(exc)) from None
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageError(f"unreadable DICOM: {exc}") from None
    if rows * cols > max_pixels:
        raise ImageError(f"image too large: {cols}x{rows} pixels (limit {max_pixels:,})")
    try:
        if frames > 1:
            ds.pixel_array_options(index=frames // 2)
        if syntax not in UNCOMPRESSED:
            frame = pydicom.encaps.get_frame(ds.PixelData, frames // 2, number_of_frames=frames)
            check_frame(syntax, frame, rows, cols, int(ds.SamplesPerPixel), int(ds.BitsAllocated))
        arr = ds.pixel_array
    except Refused as exc:
        raise ImageError(str(exc)) from None
    except Exception as exc:
        raise ImageError(f"DICOM without decodable pixels: {exc}") from None
    try:
        gray, colour = _dicom_to_uint8(ds, arr)
        return gray, frames, colour
    except ImageError:
        raise
    except Exception as exc:  # malformed rescale/window attributes, odd photometric data
        raise ImageError(f"unusable DICOM pixel data or window: {exc}") from None


def _dicom_to_uint8(ds, arr: np.ndarray) -> tuple[np.ndarray, float]:
    """Modality rescale, VOI window and photometric interpretation, then 8 bits; and the
    :func:`chroma` of a colour frame (0 for a grayscale one)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 4 or (arr.ndim == 3 and photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")):
        if arr.ndim == 4:
            arr = arr[arr.shape[0] // 2]
        rgb = Image.fromarray(_scale_to_uint8(arr) if arr.dtype != np.uint8 else arr)
        return np.asarray(rgb.convert("L")), chroma(rgb)
    if arr.ndim == 3:  # multi-frame grayscale: the middle frame is the representative slice
        arr = arr[arr.shape[0] // 2]
    arr = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        arr = apply_voi_lut(arr, ds)
    out = _scale_to_uint8(arr)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out, 0.0


def _decode_pil(data: bytes, max_pixels: int) -> Decoded:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = _open_pil(data, max_pixels)
        fmt, size, mode = img.format or "image", img.size, img.mode
        frames = _count_frames(img)  # before decoding: counting seeks through the file and back
        if _load_pil(img, fmt):  # libtiff reported errors, yet Pillow returned pixels: not the file's
            raise ImageError(f"corrupt image: damaged {fmt} pixel data")
    if any(w.category is UserWarning for w in caught):  # Pillow skipped damaged tags or headers
        raise ImageError(f"corrupt image: damaged {fmt} header")
    try:
        return Decoded(_pil_to_uint8(img), size, mode, 1, frames, chroma(img))
    except ImageError:
        raise
    except Exception as exc:  # modes Pillow cannot convert (LAB, CMYK variants, ...)
        raise ImageError(f"unsupported image mode {img.mode}: {exc}") from None


def chroma(img: Image.Image) -> float:
    """How coloured an image is: the mean difference between each pixel's largest and smallest
    colour channel (0..1), on a 64 px copy; 0 for a grayscale mode. MRI slices stored as RGB are
    grey (0, or about 0.02 from JPEG's colour noise); photographs score 0.15 or more. The input
    check uses it (:data:`brainmri.inference.input_check.MAX_CHROMA`), since the grayscale array no longer
    shows it. 0 too for a mode Pillow cannot turn into RGB (LAB, HSV): grey it can still be."""
    if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return 0.0
    try:
        small = np.asarray(img.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.int16)
    except (OSError, ValueError):
        return 0.0
    return float((small.max(axis=2) - small.min(axis=2)).mean() / 255.0)


def _count_frames(img: Image.Image) -> int:
    """Frames (pages) in a GIF, TIFF, MPO, APNG or WebP; Pillow decodes the first, the one used.
    0 when the count cannot be read (frames after the first are damaged)."""
    try:
        return max(int(getattr(img, "n_frames", 1)), 1)
    except Exception:  # Pillow raises many types for a damaged frame chain
        return 0


def _open_pil(data: bytes, max_pixels: int) -> Image.Image:
    """Open (headers only) and check every size that decoding would allocate."""
    try:
        # Our own limit is checked from the header before any pixel is decoded; it sits
        # below Pillow's bomb threshold, whose warning is caught with the others.
        img = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except Image.DecompressionBombError:
        raise ImageError("image too large: refused as a possible decompression bomb") from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}x{height} pixels (limit {max_pixels:,})")
    if img.format == "TIFF":
        tags = cast(TiffImagePlugin.TiffImageFile, img).tag_v2
        tile = tags.get(322, 0), tags.get(323, 0)  # TileWidth, TileLength
        if (
            isinstance(tile[0], int)
            and isinstance(tile[1], int)
            and tile[0] * tile[1] > max(width * height, MAX_TILE_PIXELS)
        ):
            raise ImageError(f"corrupt image: TIFF tiles of {tile[0]}x{tile[1]} pixels in a {width}x{height} image")
    return img


def _load_pil(img: Image.Image, fmt: str) -> list[str]:
    """Decode the pixels and apply the EXIF orientation in place; returns libtiff's errors."""
    messages: list[str] = []
    try:
        with _c_stderr(messages, enabled=fmt == "TIFF"):
            img.load()
        ImageOps.exif_transpose(img, in_place=True)
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        if text.startswith("decoder error") or messages:
            text = f"the {fmt} pixel data cannot be decoded"
        raise ImageError(f"corrupt image: {text}") from None
    return [m for m in messages if ": Warning," not in m]


@contextlib.contextmanager
def _c_stderr(messages: list[str], enabled: bool) -> Iterator[None]:
    """Collect in ``messages`` what C libraries (libtiff) write to the process's stderr meanwhile,
    instead of showing it. A non-blocking pipe: a flood of messages is cut short, never blocks."""
    try:
        saved = os.dup(2) if enabled and os.name == "posix" else -1
    except OSError:  # no stderr at all (a detached service): nothing to show them on
        saved = -1
    if saved < 0:
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    sys.stderr.flush()
    # Stays: libtiff writes to fd 2 from C, which only an fd swap catches; TIFF decodes only, under _DECODE_LOCK.
    os.dup2(write_end, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            text = pipe.read().decode("utf-8", "replace")
        messages.extend(line.strip() for line in text.splitlines() if line.strip())


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
    return read_image(source, max_pixels).array


def read_gray_info(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int], str]:
    """Like :func:`read_gray`, also returning the original (width, height) and mode."""
    decoded = read_image(source, max_pixels)
    return decoded.array, decoded.size, decoded.mode


def read_bytes(path: str | Path) -> bytes:
    """The bytes of an image file: a regular file of at most :data:`MAX_FILE_BYTES` (devices,
    FIFOs and sockets are refused unread, see :func:`brainmri.files.read_regular`)."""
    try:
        return read_regular(path, MAX_FILE_BYTES)
    except FileRefused as exc:
        reason = str(exc)
        if reason in ("no such file", "is a folder"):
            reason = f"{reason}: {path}" if reason == "no such file" else f"is a folder, not an image: {path}"
        raise ImageError(reason) from None


def read_image(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode a file (path or bytes): the 8-bit grayscale slice with its original size, mode
    and the frame used of a multi-frame file (:class:`Decoded`)."""
    data = read_bytes(source) if isinstance(source, (str, Path)) else bytes(source)
    if not data:
        raise ImageError("empty file")
    with _DECODE_LOCK:
        if _is_dicom(data[:132]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's notes on non-conformant values; failures raise
                arr, frames, colour = _decode_dicom(data, max_pixels)
            return Decoded(arr, (arr.shape[1], arr.shape[0]), "DICOM", frames // 2 + 1, frames, colour)
        return _decode_pil(data, max_pixels)
