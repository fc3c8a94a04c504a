"""A bounded load test for ``brainmri serve``: N requests, C at a time, on loopback only.

``python -m brainmri.bench.loadtest http://127.0.0.1:8000 --requests 200 --concurrency 8 --image slice.jpg``
prints the median and 95th-percentile latency and the number of errors, and exits 1 if
any request failed. Standard library only, so it runs wherever brainmri is installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from brainmri.errors import BrainMRIError
from brainmri.files import FileRefused, one_line, read_regular
from brainmri.netutil import is_loopback

#: Largest image file sent (as ``brainmri predict`` reads at most, ``images.MAX_FILE_BYTES``).
MAX_IMAGE_BYTES = 256 * 2**20

# Loopback only, so never through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def encode_multipart(files: list[tuple[str, bytes]], field: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body with the given files, and its Content-Type."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, data in files:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        chunks.append(data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _one_request(url: str, body: bytes, content_type: str, token: str | None, timeout: float) -> tuple[float, str]:
    """(latency in seconds, error or '') for one POST /api/predict."""
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    start = time.perf_counter()
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        elapsed = time.perf_counter() - start
    except urllib.error.HTTPError as exc:
        return time.perf_counter() - start, f"HTTP {exc.code}: {exc.read()[:200].decode('utf-8', 'replace')}"
    except (OSError, ValueError) as exc:
        return time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
    bad = [r.get("error", "?") for r in payload.get("results", []) if not r.get("ok")]
    if not payload.get("results") or bad:
        return elapsed, f"prediction failed: {bad or 'no results'}"
    return elapsed, ""


def run(
    base_url: str,
    image: bytes,
    requests: int = 200,
    concurrency: int = 8,
    token: str | None = None,
    overlay: bool = False,
    timeout: float = 60.0,
) -> dict:
    """Send ``requests`` predictions, ``concurrency`` at a time; latencies in milliseconds."""
    host = urlsplit(base_url).hostname or ""
    if not is_loopback(host):
        raise BrainMRIError(f"the load test only targets loopback addresses, not {host!r}")
    if requests < 1 or concurrency < 1:
        raise BrainMRIError("--requests and --concurrency must be at least 1")
    url = base_url.rstrip("/") + "/api/predict" + ("?overlay=1" if overlay else "")
    body, content_type = encode_multipart([("slice", image)])
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(lambda _: _one_request(url, body, content_type, token, timeout), range(requests)))
    wall = time.perf_counter() - start
    latencies = sorted(1000 * t for t, err in outcomes if not err)
    errors = [err for _, err in outcomes if err]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "median_ms": statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": statistics.quantiles(latencies, n=20, method="inclusive")[18] if len(latencies) > 1 else float("nan"),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "wall_s": wall,
        "requests_per_second": requests / wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brainmri.bench.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="base URL of a running 'brainmri serve', e.g. http://127.0.0.1:8000")
    parser.add_argument("--image", required=True, type=Path, help="image file sent with every request")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--token", default=None, help="token of a server started with --token")
    parser.add_argument("--overlay", action="store_true", help="also ask for Grad-CAM overlays")
    args = parser.parse_args(argv)
    try:
        image = read_regular(args.image, MAX_IMAGE_BYTES)
    except FileRefused as exc:
        print(f"loadtest: error: cannot read {one_line(str(args.image))}: {exc}", file=sys.stderr)
        return 2
    try:
        stats = run(args.url, image, args.requests, args.concurrency, args.token, args.overlay)
    except BrainMRIError as exc:
        print(f"loadtest: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    print(
        f"{stats['requests']} requests, {stats['concurrency']} at a time: {stats['errors']} errors; "
        f"latency median {stats['median_ms']:.1f} ms, p95 {stats['p95_ms']:.1f} ms, max {stats['max_ms']:.1f} ms; "
        f"{stats['requests_per_second']:.1f} requests/s"
    )
    if stats["errors"]:
        print(f"first error: {one_line(stats['first_error'])}", file=sys.stderr)  # the server's words
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
