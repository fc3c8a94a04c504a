"""Decoding (every format, EXIF, 16-bit, DICOM window, size limits) and class-name aliases."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import dicom_bytes, real_images
from PIL import Image

from brainmri.errors import BrainMRIError
from brainmri.images import ImageError, read_gray, read_gray_info
from brainmri.labels import ALIASES, CLASSES, canonical_label, parse_label_map


@pytest.fixture(scope="module")
def real_gray(sartaj) -> np.ndarray:
    """A real slice, reduced to 64 px so that every format below is quick to write."""
    path = real_images(sartaj, "meningioma_tumor", 1)[0]
    return np.asarray(Image.open(path).convert("L").resize((64, 64)))


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_real_jpeg_decodes_to_gray(sartaj):
    path = real_images(sartaj, "glioma_tumor", 1)[0]
    gray, size, mode = read_gray_info(path)
    assert gray.dtype == np.uint8 and gray.ndim == 2
    assert (gray.shape[1], gray.shape[0]) == size and mode in ("RGB", "L")
    assert 10 < gray.mean() < 200  # a brain slice, not a blank


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_lossless_formats_roundtrip(real_gray, fmt):
    assert np.array_equal(read_gray(_encode(Image.fromarray(real_gray), fmt)), real_gray)


def test_rgb_and_rgba(real_gray):
    rgb = Image.fromarray(np.stack([real_gray] * 3, axis=-1))
    assert np.array_equal(read_gray(_encode(rgb, "PNG")), real_gray)
    rgba = np.dstack([np.stack([real_gray] * 3, axis=-1), np.full_like(real_gray, 255)])
    rgba[:32, :, 3] = 0  # transparent top half is composited on black
    out = read_gray(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[:32].max() == 0
    assert np.array_equal(out[32:], real_gray[32:])


def test_jpeg_grayscale_close(real_gray):
    out = read_gray(_encode(Image.fromarray(real_gray), "JPEG", quality=95))
    assert np.abs(out.astype(int) - real_gray).mean() < 2


def test_png_16bit_scaled_to_full_range(real_gray):
    wide = real_gray.astype(np.uint16) * 40 + 1000  # 1000..11200 of 65535
    data = _encode(Image.fromarray(wide), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = read_gray(data)
    assert out.min() == 0 and out.max() == 255
    expected = (real_gray.astype(float) - real_gray.min()) * 255 / (real_gray.max() - real_gray.min())
    assert np.abs(out - expected).max() <= 1


def test_dicom_window_applied(real_gray):
    pixels = real_gray.astype(np.uint16) * 8  # 0..2040
    out, size, mode = read_gray_info(dicom_bytes(pixels, center=500, width=400))
    assert mode == "DICOM" and size == (64, 64)
    assert (out[pixels <= 300] == 0).all()  # below the window: black
    assert (out[pixels >= 700] == 255).all()  # above: white
    inside = (pixels > 320) & (pixels < 680)
    assert inside.any() and ((out[inside] > 0) & (out[inside] < 255)).all()


def test_dicom_without_window_and_monochrome1(real_gray):
    pixels = real_gray.astype(np.uint16) * 8
    plain = read_gray(dicom_bytes(pixels, None, None))
    assert plain.min() == 0 and plain.max() == 255
    assert np.corrcoef(plain.ravel(), real_gray.ravel())[0, 1] > 0.99
    inverted = read_gray(dicom_bytes(pixels, None, None, photometric="MONOCHROME1"))
    assert np.array_equal(inverted, 255 - plain)


def test_exif_orientation_honoured(real_gray):
    img = Image.fromarray(real_gray[:, :48])  # 48 wide, 64 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = read_gray(_encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (48, 64)


def test_format_by_content_not_name(real_gray, tmp_path):
    path = tmp_path / "slice.jpg"
    path.write_bytes(_encode(Image.fromarray(real_gray), "PNG"))
    assert np.array_equal(read_gray(path), real_gray)


def test_size_limit_and_bomb(real_gray):
    data = _encode(Image.fromarray(real_gray), "PNG")
    with pytest.raises(ImageError, match="too large"):
        read_gray(data, max_pixels=64 * 63)
    # a 1x1 PNG whose header claims 30000x30000 pixels: refused from the header, before decoding
    png = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    png[16:24] = struct.pack(">II", 30000, 30000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    with pytest.raises(ImageError, match="too large"):
        read_gray(bytes(png))


def test_broken_files(sartaj, tmp_path):
    real = real_images(sartaj, "glioma_tumor", 1)[0].read_bytes()
    with pytest.raises(ImageError, match="corrupt"):
        read_gray(real[: len(real) // 3])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        read_gray(text)
    with pytest.raises(ImageError, match="empty"):
        read_gray(b"")
    with pytest.raises(ImageError, match="no such file"):
        read_gray(tmp_path / "missing.png")


def test_files_that_decode_but_cannot_be_converted_are_image_errors(real_gray):
    """Each must be one reportable reason, never an exception that ends a whole batch."""
    pixels = real_gray.astype(np.uint16) * 4
    with pytest.raises(ImageError, match="unusable DICOM"):
        read_gray(dicom_bytes(pixels, center=500, width=0))  # a window of width 0
    floats = real_gray.astype(np.float32)
    floats[0, 0] = np.nan
    buf = io.BytesIO()
    Image.fromarray(floats, mode="F").save(buf, format="TIFF")
    with pytest.raises(ImageError, match="NaN or infinite"):
        read_gray(buf.getvalue())
    buf = io.BytesIO()
    Image.new("LAB", (8, 8)).save(buf, format="TIFF")
    with pytest.raises(ImageError, match="unsupported image mode LAB"):
        read_gray(buf.getvalue())


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias(alias):
    assert canonical_label(alias) == ALIASES[alias] in CLASSES


@pytest.mark.parametrize(
    "name,label",
    [
        ("no_tumor", "normal"),
        ("No Tumor", "normal"),
        ("notumor", "normal"),
        ("Healthy", "normal"),
        ("glioma", "glioma_tumor"),
        ("Glioma-Tumour", "glioma_tumor"),
        ("meningioma_tumor", "meningioma_tumor"),
        ("pituitary", "pituitary_tumor"),
    ],
)
def test_dataset_folder_names(name, label):
    assert canonical_label(name) == label


def test_unknown_folder_says_how_to_map():
    with pytest.raises(BrainMRIError) as err:
        canonical_label("tumor_x")
    msg = str(err.value)
    assert "tumor_x" in msg and "notumor" in msg and "--label-map" in msg and "\n" not in msg
    assert canonical_label("tumor_x", parse_label_map("tumor_x=glioma")) == "glioma_tumor"
    with pytest.raises(BrainMRIError, match="unknown label"):
        parse_label_map("tumor_x=cancer")
    with pytest.raises(BrainMRIError, match="FOLDER=LABEL"):
        parse_label_map("tumor_x")
