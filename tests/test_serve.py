"""The web app's API (FastAPI test client), its CLI checks, and a bounded load test against a
real uvicorn server on loopback. Uploads are real slices from the shared dataset, or files
made here from them (PNG, DICOM, truncated JPEG)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import dicom_bytes, real_images
from fastapi.testclient import TestClient
from PIL import Image
from starlette.requests import Request

from brainmri import cli
from brainmri.errors import BrainMRIError
from brainmri.images import read_gray
from brainmri.loadtest import encode_multipart
from brainmri.loadtest import run as loadtest_run
from brainmri.preprocess import to_array
from brainmri.serve import ApiError, check_bind, create_app, read_uploads, running


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    return create_app(tiny_checkpoint)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def slices(sartaj) -> list[Path]:
    """One real slice of each class."""
    return [
        real_images(sartaj, folder, 1, "Testing")[0]
        for folder in sorted(p.name for p in (sartaj / "Testing").iterdir())
    ]


def expected_probs(app, data: bytes) -> np.ndarray:
    """What the model says about an image through the shared preprocessing path, directly."""
    pred = app.state.predictor
    return pred.predict_arrays([to_array(data, pred.image_size)])[0]


def b64_image(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def test_page_model_card_health_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file-input"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Everything the page loads comes from the app itself.
    assert "http://" not in page.text.replace('href="/docs"', "") and "https://" not in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and "http" not in r.text
    card = client.get("/api/model").json()
    assert "Not a medical device" in card["notice"] and card["image_size"] == 64
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["limits"]["max_bytes"] == 20 * 1024 * 1024
    spec = client.get("/openapi.json").json()
    assert "multipart/form-data" in spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "https://" not in docs.text  # works offline
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert client.get(asset).status_code == 200
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}


def test_predict_real_slices_with_overlay(app, client, slices):
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in slices]
    r = client.post("/api/predict", params={"overlay": 1}, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["classes"] == list(app.state.predictor.classes)
    assert [res["name"] for res in body["results"]] == [p.name for p in slices]
    for path, res in zip(slices, body["results"], strict=True):
        assert res["ok"] and res["label"] in body["classes"]
        probs = np.array([res["probabilities"][c] for c in body["classes"]])
        np.testing.assert_allclose(probs, expected_probs(app, path.read_bytes()), atol=1e-5)
        assert res["label"] == body["classes"][int(np.argmax(probs))]
        assert b64_image(res["overlay_png"]).shape == (64, 64, 3)
        np.testing.assert_array_equal(b64_image(res["slice_png"]), to_array(path.read_bytes(), 64))


def test_overlay_only_on_request_and_as_form_field(client, slices):
    data = slices[0].read_bytes()
    plain = client.post("/api/predict", files={"files": ("a.jpg", data)}).json()["results"][0]
    assert plain["ok"] and "overlay_png" not in plain
    with_field = client.post("/api/predict", data={"overlay": "1"}, files={"files": ("a.jpg", data)}).json()
    assert "overlay_png" in with_field["results"][0]


def test_png_and_dicom_are_recognised_by_content(app, client, slices):
    gray = read_gray(slices[1])
    png = io.BytesIO()
    Image.fromarray(gray).save(png, format="PNG")
    dcm = dicom_bytes(gray.astype(np.uint16) * 16, bits_stored=12)
    # Names say nothing true about the content: the DICOM is called .jpg, the PNG has no suffix.
    files = [("files", ("scan.jpg", dcm, "image/jpeg")), ("files", ("slice", png.getvalue(), "text/plain"))]
    results = client.post("/api/predict", files=files).json()["results"]
    assert [r["ok"] for r in results] == [True, True]
    for res, data in zip(results, (dcm, png.getvalue()), strict=True):
        probs = [res["probabilities"][c] for c in app.state.predictor.classes]
        np.testing.assert_allclose(probs, expected_probs(app, data), atol=1e-5)


def test_bad_files_fail_alone_with_reasons(client, slices):
    good = slices[0].read_bytes()
    files = [
        ("files", ("good.jpg", good, "image/jpeg")),
        ("files", ("empty.jpg", b"", "image/jpeg")),
        ("files", ("notes.jpg", b"patient notes, not an image\n" * 20, "image/jpeg")),
        ("files", ("truncated.jpg", good[: len(good) // 2], "image/jpeg")),
    ]
    r = client.post("/api/predict", files=files)
    assert r.status_code == 200
    res = {x["name"]: x for x in r.json()["results"]}
    assert res["good.jpg"]["ok"]
    assert not res["empty.jpg"]["ok"] and res["empty.jpg"]["error"] == "empty file"
    assert not res["notes.jpg"]["ok"] and "not an image" in res["notes.jpg"]["error"]
    assert not res["truncated.jpg"]["ok"] and "corrupt image" in res["truncated.jpg"]["error"]


def test_request_errors_are_json(client):
    r = client.post("/api/predict", files={"overlay": (None, "1")})  # multipart, but no file part
    assert r.status_code == 400 and "no files" in r.json()["error"]
    r = client.post("/api/predict", data={"overlay": "1"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    r = client.post("/api/predict", params={"overlay": "maybe"}, files={"files": ("a.jpg", b"x")})
    assert r.status_code == 422 and r.json()["error"].startswith("invalid request: query.overlay")
    r = client.post("/api/predict", content=b"\xff\xd8 raw bytes", headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    r = client.post(
        "/api/predict", content=b"--xx\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=xx"}
    )
    assert r.status_code == 400 and "error" in r.json()


def test_size_and_count_limits(tiny_checkpoint, slices):
    data = slices[0].read_bytes()
    assert len(data) > 16 * 1024
    app = create_app(tiny_checkpoint, max_bytes=16 * 1024, max_files=3)
    with TestClient(app) as c:
        r = c.post("/api/predict", files={"files": ("big.jpg", data)})
        assert r.status_code == 413 and "big.jpg: file too large (limit 0.015625 MB a file)" == r.json()["error"]
        # A Content-Length beyond what the limits allow is refused before the body is read.
        r = c.post("/api/predict", files=[("files", (f"{i}.jpg", data)) for i in range(8)])
        assert r.status_code == 413 and r.json()["error"].startswith("request too large")
        small = io.BytesIO()
        Image.fromarray(to_array(data, 32)).save(small, format="PNG")
        files = [("files", (f"{i}.png", small.getvalue())) for i in range(4)]
        r = c.post("/api/predict", files=files)
        assert r.status_code == 413 and "too many files" in r.json()["error"]
        assert c.post("/api/predict", files=files[:3]).status_code == 200


def _read_streamed(body: bytes, ctype: str, chunk: int, **limits) -> tuple[ApiError, int]:
    """Feed ``body`` to read_uploads in chunks, as a client without Content-Length would; returns
    the error raised and how many bytes had been handed over by then."""
    received = []

    async def receive() -> dict:
        start = len(received) * chunk
        received.append(start)
        return {"type": "http.request", "body": body[start : start + chunk], "more_body": start + chunk < len(body)}

    scope = {"type": "http", "method": "POST", "path": "/api/predict", "headers": [(b"content-type", ctype.encode())]}
    with pytest.raises(ApiError) as err:
        asyncio.run(read_uploads(Request(scope, receive), **limits))
    return err.value, len(received) * chunk


def test_oversized_upload_is_refused_while_streaming():
    """The body is consumed only up to the limit: a huge upload is never read in full."""
    body, ctype = encode_multipart([("huge.jpg", b"\xff\xd8" + b"\0" * (8 * 1024 * 1024))])
    err, read = _read_streamed(body, ctype, 16 * 1024, max_bytes=64 * 1024, max_files=4)
    assert err.status == 413 and "huge.jpg: file too large" in err.message
    assert read <= 64 * 1024 + 2 * 16 * 1024


def test_many_small_fields_in_a_chunked_body_cannot_exhaust_memory():
    """Without Content-Length, the bytes read and the number of non-file fields are capped."""
    boundary = "b0undary"
    field = '--{b}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n{x}\r\n'
    parts = [field.format(b=boundary, i=i, x="x" * 1000) for i in range(4000)]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    ctype = f"multipart/form-data; boundary={boundary}"
    err, read = _read_streamed(body, ctype, 16 * 1024, max_bytes=64 * 1024, max_files=1)
    assert err.status == 413 and "too many form fields" in err.message
    assert read < len(body) // 10


def test_token_required_on_every_api_call(tiny_checkpoint, slices):
    app = create_app(tiny_checkpoint, token="s3cret-token", allowed_hosts=["testserver"])
    files = {"files": ("a.jpg", slices[0].read_bytes())}
    with TestClient(app) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Token": "s3cret"}):
            for r in (c.get("/api/model", headers=headers), c.post("/api/predict", files=files, headers=headers)):
                assert r.status_code == 401 and "token" in r.json()["error"]
        assert c.get("/api/model", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        r = c.post("/api/predict", files=files, headers={"X-Token": "s3cret-token"})
        assert r.status_code == 200 and r.json()["results"][0]["ok"]
        assert c.get("/health").json()["token_required"] is True
        r = c.get("/health", headers={"Host": "attacker.example:8000"})
        assert r.status_code == 400 and r.json() == {"error": "invalid Host header"}


def test_unexpected_errors_are_generic_json(app, slices, monkeypatch, caplog):
    def broken(arrays, reasons=None):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.state.predictor, "predict_checked", broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/api/predict", files={"files": ("a.jpg", slices[0].read_bytes())})
    assert r.status_code == 500
    assert r.json() == {"error": "internal server error (details are in the server log)"}
    assert "secret internal detail" in caplog.text  # logged on the server, not sent


def test_model_without_grad_cam_still_predicts(app, client, slices, monkeypatch):
    def no_cam(array, target_class=None):
        raise BrainMRIError("Grad-CAM needs the PyTorch checkpoint")

    monkeypatch.setattr(app.state.predictor, "explain", no_cam)
    res = client.post("/api/predict?overlay=1", files={"files": ("a.jpg", slices[0].read_bytes())}).json()["results"][0]
    assert res["ok"] and res["label"] and "overlay_png" not in res
    assert res["overlay_error"] == "Grad-CAM needs the PyTorch checkpoint"


def test_start_up_failures_are_one_line(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(BrainMRIError, match="not found"):
        create_app(tmp_path / "missing.pt")
    assert cli.main(["serve", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("brainmri: error:") and err.count("\n") == 1
    assert cli.main(["serve", str(tiny_checkpoint), "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", "tok")
    with pytest.raises(BrainMRIError):
        check_bind("192.168.1.5", None)
    with socket.socket() as busy:  # a port another program holds: refused before the model loads
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", str(tiny_checkpoint), "--port", str(port)]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"brainmri: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        assert "serving" not in captured.out


def _post(url: str, name: str, data: bytes) -> dict:
    body, ctype = encode_multipart([(name, data)])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url + "/api/predict?overlay=1", data=body, headers={"Content-Type": ctype})
    with opener.open(req, timeout=60) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_concurrent_requests_on_a_real_server(app, sartaj):
    """Different slices in flight at once each get their own answer, and a bounded load test passes."""
    paths = [p for folder in ("glioma_tumor", "no_tumor") for p in real_images(sartaj, folder, 4, "Testing")]
    expected = {f"{p.parent.name}-{p.name}": expected_probs(app, p.read_bytes()) for p in paths}
    with running(app) as url:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda p: _post(url, f"{p.parent.name}-{p.name}", p.read_bytes()), paths))
        for ans in answers:
            res = ans["results"][0]
            probs = [res["probabilities"][c] for c in ans["classes"]]
            np.testing.assert_allclose(probs, expected[res["name"]], atol=1e-5)
        stats = loadtest_run(url, paths[0].read_bytes(), requests=40, concurrency=8)
    assert stats["errors"] == 0, stats["first_error"]
    assert 0 < stats["median_ms"] <= stats["p95_ms"] <= stats["max_ms"]
