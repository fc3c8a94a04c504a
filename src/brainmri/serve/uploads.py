"""Reading uploads for the web API: a multipart body parsed from the request stream into
memory, with the size and count limits enforced while it is read, so that nothing uploaded
touches the disk and an oversized upload is refused after ``max_bytes``, not after it has
been read in full (a chunked body, which announces no length, included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

#: Small form fields (``overlay=1``) are all we accept besides files.
MAX_FIELD_BYTES = 1024
#: Non-file form fields accepted per request (the API reads only a few options).
MAX_FIELDS = 16
#: Multipart overhead allowed per part when checking Content-Length up front.
PART_OVERHEAD = 16 * 1024


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with an HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    name: str
    data: bytearray = field(default_factory=bytearray)


class _Parts:
    """The callbacks of python-multipart's streaming parser: they collect files and small
    fields part by part, and refuse a part as soon as it passes its limit."""

    def __init__(self, max_bytes: int, max_files: int):
        self.max_bytes, self.max_files = max_bytes, max_files
        self.uploads: list[Upload] = []
        self.fields: dict[str, str] = {}
        self.part: dict[str, Any] = {}

    def callbacks(self) -> dict[str, Any]:
        names = ("part_begin", "header_field", "header_value", "header_end", "headers_finished", "part_data")
        return {f"on_{n}": getattr(self, n) for n in (*names, "part_end")}

    def part_begin(self) -> None:
        self.part = {"headers": {}, "field": b"", "value": b"", "upload": None, "data": bytearray()}

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.part["field"] += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.part["value"] += data[start:end]

    def header_end(self) -> None:
        self.part["headers"][self.part["field"].lower()] = self.part["value"]
        self.part["field"], self.part["value"] = b"", b""

    def headers_finished(self) -> None:
        part = self.part
        _, disp = parse_options_header(part["headers"].get(b"content-disposition", b""))
        part["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disp:
            if len(self.uploads) >= self.max_files:
                raise ApiError(413, f"too many files in one request (limit {self.max_files})")
            name = os.path.basename(disp[b"filename"].decode("utf-8", "replace").replace("\\", "/"))[:200]
            part["unnamed"] = not name
            part["upload"] = Upload(name or f"file-{len(self.uploads) + 1}")
            self.uploads.append(part["upload"])

    def part_data(self, data: bytes, start: int, end: int) -> None:
        upload: Upload | None = self.part["upload"]
        buf = upload.data if upload is not None else self.part["data"]
        buf += data[start:end]
        if upload is not None and len(buf) > self.max_bytes:
            raise ApiError(413, f"{upload.name}: file too large (limit {self.max_bytes / 2**20:g} MB a file)")
        if upload is None and len(buf) > MAX_FIELD_BYTES:
            raise ApiError(413, f"form field {self.part['name']!r} too large")

    def part_end(self) -> None:
        upload: Upload | None = self.part["upload"]
        if upload is None:
            if len(self.fields) >= MAX_FIELDS and self.part["name"] not in self.fields:
                raise ApiError(413, f"too many form fields in one request (limit {MAX_FIELDS})")
            self.fields[self.part["name"]] = self.part["data"].decode("utf-8", "replace")
        elif not upload.data and self.part["unnamed"]:
            self.uploads.remove(upload)  # an empty file input submitted by a form: no file chosen


async def read_uploads(request: Any, max_bytes: int, max_files: int) -> tuple[list[Upload], dict[str, str]]:
    """Parse a multipart body from the stream into memory, enforcing limits while reading."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(400, "send the images as multipart/form-data, one or more files in the field 'files'")
    # The most a valid request can hold; checked against Content-Length up front and against
    # the bytes actually read, so a chunked body cannot get round it.
    limit = max_files * (max_bytes + PART_OVERHEAD) + MAX_FIELDS * 2 * MAX_FIELD_BYTES
    too_large = f"request too large (limit {max_files} files of {max_bytes:,} bytes)"
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"{too_large}: {int(length):,} bytes")
    parts = _Parts(max_bytes, max_files)
    try:  # python-multipart refuses a boundary over 256 bytes (RFC 2046 allows 70) when built
        parser = MultipartParser(params[b"boundary"], parts.callbacks())
    except Exception as exc:
        raise ApiError(400, f"invalid multipart boundary: {exc}") from None
    try:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise ApiError(413, too_large)
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # python-multipart raises several types for malformed bodies
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    return parts.uploads, parts.fields
