"""Check what a DICOM file declares before pydicom reads or decodes any of it.

pydicom trusts a file's declarations: a Deflated transfer syntax is inflated in one call (a
1 MB file can hold 1 GB), every item of an undefined-length sequence becomes a Python object
(20 MB of empty items is over a million of them), and compressed pixels are decoded to
whatever size their own stream states. :func:`check_structure` walks every element header
first, inflating a deflated data set as a stream that is thrown away as it is read, and
:func:`check_frame` reads the size a compressed frame declares. Neither holds more than a
small buffer, whatever the file says. :class:`Refused` carries the reason, in one line.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

#: Elements and sequence items a file may declare, at all levels. A slice's header holds a
#: few hundred; an enhanced multi-frame file a few tens of thousands.
MAX_ELEMENTS = 100_000
#: Nesting of sequences (pydicom parses them recursively).
MAX_DEPTH = 16
#: Inflated bytes a deflated file may hold besides its pixel data.
MAX_HEADER_BYTES = 16 * 2**20
#: Inflated pixel bytes allowed per accepted pixel (the largest: 32-bit or RGBA samples).
MAX_BYTES_PER_PIXEL = 4
CHUNK = 2**20
#: Bytes an RLE segment may decode to beyond its plane (encoders pad by one).
RLE_PADDING = 128

DEFLATED = "1.2.840.10008.1.2.1.99"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
UNCOMPRESSED = (IMPLICIT_LE, "1.2.840.10008.1.2.1", DEFLATED, EXPLICIT_BE)
RLE = "1.2.840.10008.1.2.5"
JPEG_PREFIX = "1.2.840.10008.1.2.4."
J2K = {"90", "91", "201", "202", "203"}  # suffixes after JPEG_PREFIX: JPEG 2000 and HTJ2K
JPEG = {"50", "51", "57", "70", "80", "81"}  # baseline, extended, lossless, JPEG-LS

ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float and Double Float Pixel Data
LUT_SEQUENCES = (0x00283000, 0x00283010)  # Modality and VOI LUT: parsed when the window is applied
GEOMETRY = {0x00280010: "rows", 0x00280011: "columns", 0x00280002: "samples", 0x00280100: "bits"}
FRAMES = 0x00280008
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED = 0xFFFFFFFF


class Refused(Exception):
    """A file whose declared structure is refused; the message is the reason."""


@dataclass
class Layout:
    """What the walk found: the transfer syntax and the pixel geometry the header declares."""

    transfer_syntax: str = ""
    rows: int | None = None
    columns: int | None = None
    samples: int | None = None
    bits: int | None = None
    frames: int = 1
    elements: int = 0
    header_bytes: int = 0
    inflated: bool = False
    endian: str = "<"
    max_pixels: int = 0


class _Buffer:
    """The file's own bytes from ``pos``."""

    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = memoryview(data), pos

    def peek(self, n: int) -> bytes:
        return bytes(self.data[self.pos : self.pos + n])

    def read(self, n: int) -> bytes:
        out = self.peek(n)
        self.pos += len(out)
        return out

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise Refused(f"damaged DICOM: an element declares {n:,} bytes, more than the file holds")
        self.pos += n


class _Inflating:
    """The inflated data set of a Deflated file, produced as it is read and never held whole."""

    def __init__(self, data: bytes, pos: int, limit: int):
        self.zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        self.tail: bytes | memoryview = memoryview(data)[pos:]
        self.buf = b""
        self.pos = 0
        self.limit = limit

    def _inflate(self, n: int) -> bytes:
        if self.zlib.eof:
            return b""
        try:
            out = self.zlib.decompress(self.tail, n)
        except zlib.error:
            raise Refused("damaged DICOM: the deflated data set cannot be inflated") from None
        self.tail = self.zlib.unconsumed_tail
        if self.pos + len(self.buf) + len(out) > self.limit:
            raise Refused(f"DICOM inflates to more than {self.limit:,} bytes (a possible decompression bomb)")
        return out

    def peek(self, n: int) -> bytes:
        while len(self.buf) < n:
            more = self._inflate(max(n - len(self.buf), 4096))
            if not more:
                break
            self.buf += more
        return self.buf[:n]

    def read(self, n: int) -> bytes:
        out = self.peek(n)
        self.buf = self.buf[len(out) :]
        self.pos += len(out)
        return out

    def skip(self, n: int) -> None:
        n -= len(self.read(min(n, len(self.buf))))
        while n > 0:
            more = self._inflate(min(n, CHUNK))
            if not more:
                raise Refused("damaged DICOM: an element declares more bytes than the data set holds")
            n -= len(more)
            self.pos += len(more)


def _meta(data: bytes) -> tuple[str, int]:
    """The transfer syntax in the file meta group (always explicit VR little endian) and where
    the data set starts."""
    pos, syntax = 132, ""
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        elem, vr = struct.unpack_from("<H2s", data, pos + 2)
        if vr in LONG_VRS:
            (length,), head = struct.unpack_from("<I", data, pos + 8), 12
        else:
            (length,), head = struct.unpack_from("<H", data, pos + 6), 8
        if length == UNDEFINED or pos + head + length > len(data):
            raise Refused("damaged DICOM: the file meta information is truncated")
        if elem == 0x0010:
            syntax = data[pos + head : pos + head + length].decode("ascii", "replace").strip("\0 ")
        pos += head + length
    return syntax, pos


def check_structure(data: bytes, max_pixels: int) -> Layout:
    """Walk every element header of a DICOM file (inflating a deflated one as a stream) and
    refuse what no slice needs: too many elements or levels, lengths beyond the data, and for a
    deflated file, more inflated bytes than its pixels and a bounded header take."""
    syntax, start = _meta(data)
    endian = ">" if syntax == EXPLICIT_BE else "<"
    out = Layout(syntax, inflated=syntax == DEFLATED, endian=endian, max_pixels=max_pixels)
    if out.inflated:
        reader: _Buffer | _Inflating = _Inflating(data, start, MAX_HEADER_BYTES + MAX_BYTES_PER_PIXEL * max_pixels)
    else:
        reader = _Buffer(data, start)
    _walk(reader, syntax == IMPLICIT_LE, out, depth=0, end=None)
    return out


def _count(out: Layout, depth: int) -> None:
    out.elements += 1
    if out.elements > MAX_ELEMENTS:
        raise Refused(f"DICOM declares more than {MAX_ELEMENTS:,} elements (a slice has a few hundred)")
    if depth > MAX_DEPTH:
        raise Refused(f"DICOM nests sequences more than {MAX_DEPTH} deep")


def _header(reader, implicit: bool, endian: str) -> tuple[int, bytes | None, int] | None:
    """(tag, VR or None, length) of the next element, or None at the end of the data."""
    head = reader.read(8)
    if len(head) < 8:
        return None
    group, elem = struct.unpack(endian + "HH", head[:4])
    tag = group << 16 | elem
    vr = head[4:6]
    if implicit or group == 0xFFFE or not (b"AA" <= vr <= b"ZZ"):  # items; implicit VR (or a switch to it)
        return tag, None, struct.unpack(endian + "I", head[4:])[0]
    if vr in LONG_VRS:
        more = reader.read(4)
        if len(more) < 4:
            return None
        return tag, vr, struct.unpack(endian + "I", more)[0]
    return tag, vr, struct.unpack(endian + "H", head[6:])[0]


def _walk(reader, implicit: bool, out: Layout, depth: int, end: int | None) -> None:
    """The elements of one data set: to the end of the data, to ``end`` (a defined-length
    item) or to an item delimiter (an undefined-length item). As pydicom does, the first
    element's VR says whether the data set is implicit VR, whatever the transfer syntax says
    (in a sequence it may only switch to implicit)."""
    first = reader.peek(6)
    if len(first) == 6:
        found_implicit = not (0x40 < first[4] < 0x5B and 0x40 < first[5] < 0x5B)
        implicit = found_implicit if depth == 0 else implicit or found_implicit
    while end is None or reader.pos < end:
        found = _header(reader, implicit, out.endian)
        if found is None:
            if end is not None or depth > 0:
                raise Refused("damaged DICOM: the data ends inside a sequence")
            return
        tag, vr, length = found
        if tag == ITEM_END:
            return
        _count(out, depth)
        if length == UNDEFINED:
            contents = tag not in PIXEL_TAGS and vr not in (b"OB", b"OW")  # else: encapsulated fragments
            _sequence(reader, implicit or vr == b"UN", out, depth + 1, None, contents)
            continue
        if end is not None and reader.pos + length > end:
            raise Refused("damaged DICOM: an element is longer than the item that holds it")
        if depth == 0 and tag in PIXEL_TAGS:
            _pixels(reader, out, tag, length)
        elif depth == 0 and tag in LUT_SEQUENCES:  # the only defined-length sequences pydicom will parse
            _sequence(reader, implicit, out, depth + 1, reader.pos + length, True)
        elif depth == 0 and (tag in GEOMETRY or tag == FRAMES) and length <= 16:
            _geometry(out, tag, reader.read(length))
        else:
            _account(out, length)
            reader.skip(length)


def _sequence(reader, implicit: bool, out: Layout, depth: int, end: int | None, contents: bool) -> None:
    """Items to ``end`` or to the sequence delimiter; ``contents``: the items hold data sets
    (a sequence), else opaque fragments (encapsulated pixel data)."""
    while end is None or reader.pos < end:
        found = _header(reader, True, out.endian)
        if found is None:
            raise Refused("damaged DICOM: the data ends inside a sequence")
        tag, _, length = found
        if tag == SEQUENCE_END:
            return
        _count(out, depth)  # pydicom reads any other tag here as an item too
        if length == UNDEFINED and contents:
            _walk(reader, implicit, out, depth, None)
        elif length == UNDEFINED:
            raise Refused("damaged DICOM: a pixel data fragment of undefined length")
        elif contents:
            _walk(reader, implicit, out, depth, reader.pos + length)
        else:
            reader.skip(length)


def _account(out: Layout, length: int) -> None:
    if out.inflated:
        out.header_bytes += length
        if out.header_bytes > MAX_HEADER_BYTES:
            raise Refused(
                f"DICOM inflates to more than {MAX_HEADER_BYTES // 2**20} MB besides its pixels "
                "(a possible decompression bomb)"
            )


def _geometry(out: Layout, tag: int, value: bytes) -> None:
    try:
        if tag == FRAMES:
            out.frames = max(1, int(value.decode("ascii").strip("\0 ") or 1))
        elif len(value) == 2:
            setattr(out, GEOMETRY[tag], struct.unpack(out.endian + "H", value)[0])
    except ValueError:
        pass  # pydicom reports an unusable value when the pixels are decoded


def _pixels(reader, out: Layout, tag: int, length: int) -> None:
    """Native pixel data: in a deflated file it must be no more than its geometry needs."""
    if out.inflated:
        if not (out.rows and out.columns and out.bits):
            raise Refused("damaged DICOM: pixel data without Rows, Columns and Bits Allocated before it")
        pixels = out.rows * out.columns
        if pixels > out.max_pixels:
            raise Refused(f"image too large: {out.columns}x{out.rows} pixels (limit {out.max_pixels:,})")
        bits = {0x7FE00008: 32, 0x7FE00009: 64}.get(tag, out.bits)
        needed = (pixels * out.frames * (out.samples or 1) * bits + 7) // 8
        if length > needed + 2:  # one byte pads an odd length
            raise Refused(
                f"DICOM pixel data declares {length:,} bytes; {out.frames} frame(s) of "
                f"{out.columns}x{out.rows} pixels need {needed:,} (a possible decompression bomb)"
            )
        if length > MAX_BYTES_PER_PIXEL * out.max_pixels:
            raise Refused(f"DICOM pixel data inflates to {length:,} bytes, more than {out.max_pixels:,} pixels take")
    reader.skip(length)


def check_frame(syntax: str, frame: bytes, rows: int, columns: int, samples: int, bits: int) -> None:
    """A compressed frame must decode to the Rows x Columns its header declares, and no more:
    JPEG and JPEG 2000 streams state their own size, RLE segments are counted without decoding."""
    if syntax == RLE:
        _check_rle(frame, rows * columns, samples * ((bits + 7) // 8))
        return
    kind = syntax[len(JPEG_PREFIX) :] if syntax.startswith(JPEG_PREFIX) else ""
    if kind in JPEG:
        size = _jpeg_size(frame)
    elif kind in J2K:
        size = _j2k_size(frame)
    else:
        raise Refused(f"compressed DICOM pixel data ({syntax or 'unknown transfer syntax'}) is not supported")
    if size is None:
        raise Refused("damaged DICOM: a compressed frame without a readable size")
    if size != (columns, rows):
        raise Refused(
            f"damaged DICOM: a compressed frame of {size[0]}x{size[1]} pixels in an image of {columns}x{rows}"
        )


def _jpeg_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from the first start-of-frame marker (JPEG, lossless JPEG, JPEG-LS)."""
    pos = 2 if frame[:2] == b"\xff\xd8" else -1
    while 0 <= pos and pos + 9 <= len(frame):
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            height, width = struct.unpack_from(">HH", frame, pos + 5)
            return width, height
        pos += 2 + struct.unpack_from(">H", frame, pos + 2)[0]
    return None


def _j2k_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000 codestream's SIZ marker (bare or inside a JP2 box)."""
    pos = frame.find(b"\xff\x4f\xff\x51", 0, 4096)
    if pos < 0 or pos + 24 > len(frame):
        return None
    xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", frame, pos + 8)
    return xsiz - xo, ysiz - yo


def _check_rle(frame: bytes, pixels: int, segments_needed: int) -> None:
    """Each RLE segment expands to one byte plane of the frame (pydicom accepts padding after it,
    so a segment could expand 64-fold): counted here, never decoded."""
    if len(frame) < 64:
        raise Refused("damaged DICOM: an RLE frame without its header")
    header = struct.unpack_from("<16I", frame)
    count, offsets = header[0], list(header[1 : 1 + min(header[0], 15)])
    if count != segments_needed or count > 15:
        raise Refused(f"damaged DICOM: an RLE frame of {count} segments where {segments_needed} belong")
    for start, stop in zip(offsets, [*offsets[1:], len(frame)], strict=True):
        segment = memoryview(frame)[start:stop]
        pos, produced = 0, 0
        while pos < len(segment) and produced <= pixels + RLE_PADDING:
            control = segment[pos]
            if control < 128:
                produced += control + 1
                pos += control + 2
            else:
                produced += 257 - control if control > 128 else 0
                pos += 2 if control > 128 else 1
        if produced > pixels + RLE_PADDING:
            raise Refused(f"damaged DICOM: an RLE segment expands beyond its {pixels:,} pixels")
