"""A local web app and REST API to try a trained model on MRI slices.

``brainmri serve MODEL`` loads the model once, then serves a page (``static/``, no external
resources) and a small JSON API:

* ``POST /api/predict`` -- multipart, one or more files; per-file probabilities and, with
  ``?overlay=1`` (or a form field ``overlay=1``), the Grad-CAM overlay and the slice the
  model saw, as base64 PNG.
* ``GET /api/model`` -- the model card; ``GET /health`` -- liveness and upload limits;
  ``/docs`` -- OpenAPI docs.

Uploads are parsed from the request stream into memory with a per-file size limit
(:mod:`brainmri.serve.uploads`), so nothing uploaded touches the disk. Formats are recognised by
content (``images.read_gray``).
Decoding and inference run in a bounded thread pool; the model is shared by all requests
(``predict.Predictor`` is thread-safe). Requests from pages of other sites are refused, and
connections are guarded below the app (read timeouts, caps, JSON errors: :mod:`brainmri.serve.guard`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import logging
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path

from brainmri import __version__
from brainmri.errors import BrainMRIError
from brainmri.io.images import MAX_FILE_BYTES, ImageError
from brainmri.netutil import LOOPBACK_NAMES, is_loopback
from brainmri.serve.guard import Limits, cross_origin_reason, server_config
from brainmri.serve.uploads import ApiError, Upload, read_uploads

if TYPE_CHECKING:  # the app loads the model (and torch) only when it is created
    from brainmri.inference.predictor import Predictor

log = logging.getLogger("brainmri.serve")

STATIC = Path(__file__).with_name("static")
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_FILES = 16
TOKEN_ENV = "BRAINMRI_SERVE_TOKEN"

# The page loads nothing from elsewhere; results are data: URLs.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the model beyond this machine without a token."""
    if token is not None and not token.strip():
        raise BrainMRIError("--token must not be empty")
    if not is_loopback(host) and not token:
        raise BrainMRIError(
            f"binding to {host} makes the service reachable from other machines; "
            f"pass --token (or set {TOKEN_ENV}) so that every API call needs it, or use --host 127.0.0.1"
        )


def _png_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _host_name(host: str) -> str:
    """``Host`` header without the port: ``127.0.0.1:8000`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def predict_uploads(predictor: Predictor, uploads: list[Upload], overlay: bool) -> list[dict[str, Any]]:
    """Decode, classify and (optionally) explain a batch; a bad file fails alone. An image
    unlike the training images keeps its prediction and gets ``input_warning`` (else null).
    ``frame`` and ``frames`` say which frame of a multi-frame file was classified (else null)."""
    results: list[dict[str, Any]] = []  # the JSON rows, one per upload
    decoded: list[tuple[dict[str, Any], np.ndarray]] = []  # the row of each decoded upload, and its slice
    reasons: list[list[str]] = []
    for up in uploads:
        try:
            arr, why, frame = predictor.load_frame(bytes(up.data))
        except ImageError as exc:
            results.append({"name": up.name, "ok": False, "error": str(exc)})
            continue
        used, count = frame if frame else (None, None)
        results.append({"name": up.name, "ok": True, "frame": used, "frames": count})
        decoded.append((results[-1], arr))
        reasons.append(why)
    probs, warnings = predictor.predict_checked([arr for _, arr in decoded], reasons)
    for (res, arr), p, warning in zip(decoded, probs, warnings, strict=True):
        best = int(np.argmax(p))
        res["label"] = predictor.classes[best]
        res["probability"] = float(p[best])
        res["probabilities"] = {c: float(v) for c, v in zip(predictor.classes, p, strict=True)}
        res["input_warning"] = warning
        if overlay:
            res["slice_png"] = _png_b64(arr)
            try:
                _, over = predictor.explain(arr, target_class=best)
            except BrainMRIError as exc:  # e.g. an .onnx model: no Grad-CAM without PyTorch weights
                res["overlay_error"] = str(exc)
            else:
                res["overlay_png"] = _png_b64(over)
    return results


def create_app(
    model_path: str | Path,
    token: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    workers: int = 2,
    device: str = "cpu",
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """Load the model (a bad path raises BrainMRIError here, before any server starts).

    ``allowed_hosts`` (host names without port) limits the ``Host`` header the app answers;
    ``serve`` sets it to the loopback names when bound to loopback.
    """
    from brainmri.inference.predictor import Predictor

    if max_bytes < 1 or max_files < 1 or workers < 1:
        raise BrainMRIError("size limit, file limit and workers must be at least 1")
    if max_bytes > MAX_FILE_BYTES:  # an upload is held in memory whole; predict reads no more either
        raise BrainMRIError(f"size limit must be at most {MAX_FILE_BYTES:,} bytes, got {max_bytes:,}")
    predictor = Predictor(model_path, device=device)

    # One bounded pool for the app's lifetime: at most ``workers`` decodes/inferences at once,
    # however many servers or test clients run the app. Idle threads end with the process.
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="brainmri-infer")

    app = FastAPI(
        title="brainmri",
        version=__version__,
        description="Try a brain-tumour MRI classifier on single slices. "
        "Research software, not a medical device: not for clinical use.",
        docs_url=None,  # served below from the packaged Swagger UI: FastAPI's default loads it from a CDN
        redoc_url=None,
    )
    app.state.predictor = predictor
    app.state.executor = executor
    _add_error_handlers(app)
    _add_guards(app, allowed_hosts)
    _add_page_and_docs(app)
    _add_api(app, predictor, executor, token, max_bytes, max_files)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error the app sends is JSON: ours, Starlette's, validation errors and bugs."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 413:
            headers = {"Connection": "close"}  # the rest of the body is not read
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {msg}"}, status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("error while serving %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal server error (details are in the server log)"}, status_code=500)


def _add_guards(app: FastAPI, allowed_hosts: list[str] | None) -> None:
    """Host check (DNS rebinding), cross-origin refusal for the API, security headers.

    The Host check is ours, not Starlette's ``TrustedHostMiddleware``: that one answers in
    plain text (every error of this server is JSON, and the page and clients read it so) and
    compares an IPv6 host with its brackets (``[::1]``), where ``LOOPBACK_NAMES`` has ``::1``."""

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
        if allowed_hosts is not None and _host_name(request.headers.get("host", "")) not in allowed_hosts:
            # A page on another site cannot reach a loopback service through DNS rebinding.
            return JSONResponse({"error": "invalid Host header"}, status_code=400)
        if request.url.path.startswith("/api/") and (refused := cross_origin_reason(request.headers)):
            return JSONResponse({"error": refused}, status_code=403)  # another site's page driving the API
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        if request.url.path == "/" or request.url.path.startswith("/static/"):
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        return response


def _add_page_and_docs(app: FastAPI) -> None:
    """The page and the interactive API docs, both offline (no CDN)."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # The interactive API docs work offline, like the page: scripts come from the
        # swagger-ui-bundle package, not from a CDN.
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="brainmri API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="data:,",
        )


def _add_api(
    app: FastAPI,
    predictor: Predictor,
    executor: ThreadPoolExecutor,
    token: str | None,
    max_bytes: int,
    max_files: int,
) -> None:
    """``/health``, ``/api/model`` and ``/api/predict``; the API needs the token when one is set."""

    bearer = HTTPBearer(auto_error=False)
    x_token = APIKeyHeader(name="X-Token", auto_error=False)

    def require_token(
        cred: HTTPAuthorizationCredentials | None = Depends(bearer), header: str | None = Depends(x_token)
    ) -> None:
        if token is None:
            return
        given = cred.credentials if cred is not None else header
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>' or 'X-Token: <token>'")

    @app.get("/health", summary="Liveness and upload limits (no token needed)")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "token_required": token is not None,
            "limits": {"max_bytes": max_bytes, "max_files": max_files},
        }

    @app.get("/api/model", summary="The model card", dependencies=[Depends(require_token)])
    async def model_card() -> dict[str, Any]:
        return dict(predictor.card)

    upload_schema = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["files"],
                        "properties": {
                            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                            "overlay": {"type": "boolean", "description": "also return Grad-CAM overlays"},
                        },
                    }
                }
            },
        }
    }

    @app.post(
        "/api/predict",
        summary="Classify one or more slices (JPEG, PNG, TIFF, BMP or DICOM; recognised by content)",
        dependencies=[Depends(require_token)],
        openapi_extra=upload_schema,
    )
    async def predict(request: Request, overlay: bool = False) -> dict[str, Any]:
        uploads, fields = await read_uploads(request, max_bytes, max_files)
        if not uploads:
            raise ApiError(400, "no files in the request: send one or more images in the field 'files'")
        want_overlay = overlay or _truthy(fields.get("overlay"))
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(executor, predict_uploads, predictor, uploads, want_overlay)
        return {
            "model": predictor.card.get("name", ""),
            "classes": list(predictor.classes),
            "input_check": predictor.input_check.status,
            "results": results,
        }


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", limits: Limits | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread on a free loopback port; yields its URL.

    For notebooks, load tests and browser tests: the socket is bound before the server
    starts, so there is no race for the port, and the server stops when the block ends.
    ``limits``: the connection guard's timeouts and caps (``guard.Limits``).
    """
    import socket
    import threading
    import time

    import uvicorn

    if not is_loopback(host):
        raise BrainMRIError(f"running() binds loopback addresses only, not {host}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, limits, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def serve(
    model_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    workers: int = 2,
    device: str = "cpu",
    limits: Limits | None = None,
) -> None:
    """Check the bind address, load the model, then run uvicorn until interrupted.

    ``limits``: read timeouts and connection caps (``guard.Limits``; defaults: 10 s, 64
    connections, 16 from one address)."""
    import uvicorn

    check_bind(host, token)
    if not 0 <= port <= 65535:
        raise BrainMRIError(f"--port must be 0..65535, got {port}")
    sock = bind_socket(host, port)  # before the model loads: a busy port fails at once, in one line
    port = sock.getsockname()[1]
    app = create_app(
        model_path,
        token=token,
        max_bytes=max_bytes,
        max_files=max_files,
        workers=workers,
        device=device,
        allowed_hosts=list(LOOPBACK_NAMES) if is_loopback(host) else None,
    )
    shown = f"[{host}]" if ":" in host else host
    config = server_config(app, limits, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    print(f"brainmri: serving {model_path} on http://{shown}:{port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port``; a busy port or an unknown host is one error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise BrainMRIError(f"cannot resolve --host {host!r}: {exc.strerror or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BrainMRIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
