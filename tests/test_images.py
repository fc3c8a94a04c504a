"""Decoding (every format, EXIF, 16-bit, DICOM window, size limits) and class-name aliases."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import dicom_bytes, real_images
from PIL import Image

from brainmri.errors import BrainMRIError
from brainmri.io.images import ImageError, read_gray, read_gray_info
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


# --- what a file declares is checked before it is decoded ------------------------------------


def dicom_file(pixels: np.ndarray, syntax: str, pixel_data: bytes | None = None, frames: int = 1) -> bytes:
    """A DICOM file of uint16 ``pixels`` (rows, columns) in ``syntax``; ``pixel_data`` replaces
    the native pixel bytes (an encapsulated stream for a compressed syntax)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = pixels.tobytes() if pixel_data is None else pixel_data
    if pixel_data is not None and syntax not in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"):
        ds["PixelData"].is_undefined_length = True
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def deflated_dicom(pixels: np.ndarray, bulk: int) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM of ``pixels`` holding a private element of
    ``bulk`` zero bytes: a few hundred kilobytes that inflate to ``bulk``. Compressed as a
    stream, so the test never holds the inflated data either."""
    plain = dicom_file(pixels, "1.2.840.10008.1.2.1.99")
    meta_end = 144 + struct.unpack_from("<I", plain, 140)[0]  # (0002,0000) group length
    dataset = zlib.decompress(plain[meta_end:], -zlib.MAX_WBITS)
    pos = 0  # the private group 0009 goes after group 0008 (short VRs: UI, CS)
    while struct.unpack_from("<H", dataset, pos)[0] <= 0x0009:
        pos += 8 + struct.unpack_from("<H", dataset, pos + 6)[0]
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [plain[:meta_end], z.compress(dataset[:pos])]
    parts.append(z.compress(struct.pack("<HH2sH4sHH2sHI", 9, 0x10, b"LO", 4, b"TEST", 9, 0x1000, b"OB", 0, bulk)))
    zeros = bytes(2**20)
    parts += [z.compress(zeros) for _ in range(bulk >> 20)] + [z.compress(bytes(bulk % 2**20))]
    return b"".join([*parts, z.compress(dataset[pos:]), z.flush()])


def _peak_python_bytes(fn) -> int:
    """Peak of the memory Python allocates (zlib and pydicom buffers included) while ``fn`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_deflated_dicom_is_read_and_a_bomb_refused_before_it_inflates(real_gray, tiny_checkpoint):
    from brainmri.inference.predictor import Predictor

    pixels = real_gray.astype(np.uint16) * 8
    plain = read_gray(dicom_file(pixels, "1.2.840.10008.1.2.1"))
    assert np.array_equal(read_gray(deflated_dicom(pixels, 0)), plain)
    assert np.array_equal(read_gray(deflated_dicom(pixels, 2**20)), plain)  # a modest private element is fine
    bomb = deflated_dicom(pixels[:8, :8], 256 * 2**20)
    assert len(bomb) < 2**20  # inflates more than 256-fold
    with pytest.raises(ImageError, match="inflates to more than 16 MB besides its pixels"):
        read_gray(bomb)

    def refuse() -> None:
        with pytest.raises(ImageError):
            read_gray(bomb)

    assert _peak_python_bytes(refuse) < 32 * 2**20  # streamed and thrown away, never held
    row = Predictor(tiny_checkpoint).predict_sources([bomb], ["bomb.dcm"])[0]  # predict reads it the same way
    assert row.label is None and "inflates to more than 16 MB" in row.error


def test_every_declared_size_is_checked(real_gray):
    pixels = real_gray.astype(np.uint16)
    # Pixel data that declares far more bytes than its 64x64 pixels: refused before inflating it.
    bloated = dicom_file(pixels, "1.2.840.10008.1.2.1.99", pixel_data=pixels.tobytes() + bytes(2**20))
    with pytest.raises(ImageError, match="pixel data declares 1,056,768 bytes; 1 frame\\(s\\) of 64x64 pixels need"):
        read_gray(bloated)
    # An element whose length runs past the end of the file.
    plain = dicom_file(pixels, "1.2.840.10008.1.2.1")
    with pytest.raises(ImageError, match="more than the file holds"):
        read_gray(plain[:-100])
    # 20 MB of empty sequence items would be over a million Python objects in pydicom.
    meta_end = 144 + struct.unpack_from("<I", plain, 140)[0]
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence = (
        struct.pack("<HH2sH4s", 9, 0x10, b"LO", 4, b"TEST")
        + struct.pack("<HH2sHI", 9, 0x1001, b"SQ", 0, 0xFFFFFFFF)
        + items * 150_000
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    pos = meta_end
    while struct.unpack_from("<H", plain, pos)[0] <= 0x0009:
        pos += 8 + struct.unpack_from("<H", plain, pos + 6)[0]
    with pytest.raises(ImageError, match="more than 100,000 elements"):
        read_gray(plain[:pos] + sequence + plain[pos:])


def test_compressed_dicom_frames_must_be_the_size_the_header_says(real_gray):
    from pydicom.encaps import encapsulate

    # A JPEG stream of 64x64 in a DICOM that says 8x8.
    jpeg = _encode(Image.fromarray(real_gray), "JPEG", quality=95)
    small = np.zeros((8, 8), np.uint8)
    with pytest.raises(ImageError, match="a compressed frame of 64x64 pixels in an image of 8x8"):
        read_gray(dicom_file(small, "1.2.840.10008.1.2.4.50", pixel_data=encapsulate([jpeg])))
    decoded = read_gray(dicom_file(real_gray, "1.2.840.10008.1.2.4.50", pixel_data=encapsulate([jpeg])))
    assert np.corrcoef(decoded.ravel(), read_gray(jpeg).ravel())[0, 1] > 0.999  # the right size is decoded
    # An RLE segment of 200 kB that expands to 12.8 MB for 64 pixels (pydicom would decode it all).
    header = struct.pack("<16I", 1, 64, *[0] * 14)
    rle = header + b"\x81\x00" * 100_000  # each pair: repeat 0 128 times
    with pytest.raises(ImageError, match="RLE segment expands beyond its 64 pixels"):
        read_gray(dicom_file(small, "1.2.840.10008.1.2.5", pixel_data=encapsulate([rle])))


def test_multi_frame_dicom_decodes_only_the_middle_frame(real_gray):
    frames = np.stack([real_gray // 4, real_gray, 255 - real_gray]).astype(np.uint16)
    out = read_gray(dicom_file(frames, "1.2.840.10008.1.2.1", frames=3))
    assert np.array_equal(out, read_gray(dicom_file(frames[1], "1.2.840.10008.1.2.1")))


def test_tiff_tiles_and_unvetted_formats_are_refused_unread():
    # An 8x8 TIFF with one deflated 16384x16384 tile: libtiff would inflate 256 kB into 256 MB.
    tile = 16384
    z = zlib.compressobj(9)
    body = b"".join(z.compress(bytes(2**20)) for _ in range(tile * tile >> 20)) + z.flush()
    tags = [(256, 4, 8), (257, 4, 8), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1)]
    tags += [(322, 4, tile), (323, 4, tile), (324, 4, 8 + 2 + 12 * 10 + 4), (325, 4, len(body))]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, k, 1, v) for t, k, v in tags) + bytes(4)
    tiff = b"II*\0" + struct.pack("<I", 8) + ifd + body
    with pytest.raises(ImageError, match="TIFF tiles of 16384x16384 pixels in a 8x8 image"):
        read_gray(tiff)
    # PostScript would be run by Ghostscript to decode; formats no slice arrives in are not read.
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n"
    with pytest.raises(ImageError, match="not an image file"):
        read_gray(eps)
    with pytest.raises(ImageError, match="not an image file"):
        read_gray(_encode(Image.new("L", (8, 8)), "PCX"))


def corrupt_tiffs(gray: np.ndarray, folder: Path) -> list[Path]:
    """30 damaged TIFFs: six compressions, each cut in half, cut short and with bytes flipped."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(gray).resize((128, 128))
    paths = []
    for comp in ("raw", "tiff_lzw", "tiff_adobe_deflate", "jpeg", "packbits", "group4"):
        src = img.convert("1") if comp == "group4" else img.convert("RGB") if comp == "jpeg" else img
        data = _encode(src, "TIFF", compression=comp)
        for k in range(5):
            b = bytearray(data[: len(data) // 2] if k == 0 else data[:-40] if k == 1 else data)
            for i in rng.integers(8, len(b), 20 * k if k > 1 else 0):
                b[i] = rng.integers(256)
            paths.append(folder / f"{comp}_{k}.tif")
            paths[-1].write_bytes(bytes(b))
    return paths


def test_corrupt_tiffs_get_one_line_each_and_nothing_from_the_libraries(real_gray, tiny_checkpoint, tmp_path):
    """libtiff writes to the process's stderr and Pillow warns (with site-packages paths):
    neither may reach the terminal; each file is one row of the table, with the reason."""
    import subprocess
    import sys

    import brainmri

    paths = corrupt_tiffs(real_gray, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(brainmri.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "brainmri", "predict", str(tiny_checkpoint), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stderr[-2000:]  # some files failed
    rows = done.stdout.strip().splitlines()[1:]
    assert len(rows) == len(paths)
    failed = [row for row in rows if " ERROR " in row]
    assert len(failed) >= 20  # all that are cut short, and most of the rest
    for comp in ("raw", "tiff_lzw", "jpeg", "group4"):
        assert any(row.startswith(str(tmp_path / f"{comp}_0.tif")) for row in failed)
    assert all("corrupt image" in row or "not an image file" in row for row in failed)
    lines = done.stderr.splitlines()  # the project's own summary lines, nothing from the libraries
    assert f"brainmri: {len(failed)} of {len(paths)} files could not be read" in lines
    assert all(line.startswith("brainmri: ") for line in lines) and len(lines) <= 2, lines
