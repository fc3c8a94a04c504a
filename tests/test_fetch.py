"""Downloading the dataset archive, served by a local HTTP server that the test starts."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import real_images

from brainmri.cli.command import main
from brainmri.data.fetch import (
    DATASET_COMMIT,
    DATASET_SHA256,
    DEFAULT_URL,
    MARKER,
    content_digest,
    ensure_dataset,
    fetch,
)
from brainmri.errors import BrainMRIError

TOP = "Brain-Tumor-Classification-DataSet-master"


def _make_zip(path: Path, sartaj: Path, layout_ok: bool = True) -> Path:
    """A small archive with the GitHub archive's layout and two real slices per folder."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{TOP}/README.md", "dataset")
        for split in ("Training", "Testing") if layout_ok else ("Training",):
            for folder in ("glioma_tumor", "no_tumor"):
                for f in real_images(sartaj, folder, 2, split):
                    zf.write(f, f"{TOP}/{split}/{folder}/{f.name}")
    return path


@pytest.fixture()
def server(tmp_path):
    """Serve tmp_path over HTTP on 127.0.0.1; yields (base URL, list of requested paths)."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            if self.path == "/cut.zip":  # a connection that drops before Content-Length bytes came
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"PK\x03\x04" + b"\0" * 100)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_check_unpack_idempotent(tmp_path, sartaj, server, monkeypatch):
    base, requests = server
    archive = _make_zip(tmp_path / "master.zip", sartaj)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setenv("BRAINMRI_HOME", str(tmp_path / "home"))
    path = fetch(url=f"{base}/master.zip", sha256=digest, progress=False)
    assert path == tmp_path / "home" / "datasets" / "brain-tumor-mri-sartaj"
    assert sorted(p.name for p in (path / "Testing").iterdir()) == ["glioma_tumor", "no_tumor"]
    names = sorted(p.name for p in (path / "Training" / "glioma_tumor").iterdir())
    assert names == sorted(f.name for f in real_images(sartaj, "glioma_tumor", 2))
    assert (path / MARKER).is_file() and requests == ["/master.zip"]
    assert fetch(url=f"{base}/master.zip", progress=False) == path
    assert requests == ["/master.zip"], "a finished download must not be fetched again"
    assert ensure_dataset(None, url=f"{base}/master.zip", progress=False) == path
    fetch(url=f"{base}/master.zip", force=True, progress=False)
    assert len(requests) == 2
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_file_url_and_cli(tmp_path, sartaj, capsys):
    archive = _make_zip(tmp_path / "master.zip", sartaj)
    dest = tmp_path / "data"
    assert main(["data", "fetch", "--dest", str(dest), "--url", archive.as_uri()]) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    assert len(list((dest / "Training").rglob("*.jpg"))) == 4
    missing = (tmp_path / "nowhere.zip").as_uri()
    assert main(["data", "fetch", "--dest", str(tmp_path / "d2"), "--url", missing]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such file" in err and not (tmp_path / "d2").exists()


def test_bad_archives_rejected(tmp_path, sartaj, server):
    base, _ = server
    _make_zip(tmp_path / "half.zip", sartaj, layout_ok=False)
    (tmp_path / "page.zip").write_text("<html>not found</html>")
    good = _make_zip(tmp_path / "good.zip", sartaj)
    with pytest.raises(BrainMRIError, match="Testing"):
        fetch(tmp_path / "d1", url=f"{base}/half.zip", progress=False)
    with pytest.raises(BrainMRIError, match="not a zip"):
        fetch(tmp_path / "d2", url=f"{base}/page.zip", progress=False)
    with pytest.raises(BrainMRIError, match="SHA-256 mismatch"):
        fetch(tmp_path / "d3", url=f"{base}/good.zip", sha256="0" * 64, progress=False)
    with pytest.raises(BrainMRIError, match="404"):
        fetch(tmp_path / "d4", url=f"{base}/missing.zip", progress=False)
    with pytest.raises(BrainMRIError, match="download of .* (incomplete|broke off)"):
        fetch(tmp_path / "d5", url=f"{base}/cut.zip", progress=False)
    # Damaged compressed data inside an otherwise well-formed archive.
    deflated = tmp_path / "zipped.zip"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zf, zipfile.ZipFile(good) as src:
        for name in src.namelist():
            zf.writestr(name, src.read(name))
    data = bytearray(deflated.read_bytes())
    with zipfile.ZipFile(deflated) as zf:
        member = max(zf.infolist(), key=lambda i: i.compress_size)
    start = member.header_offset + 30 + len(member.filename)
    data[start + member.compress_size // 2 : start + member.compress_size // 2 + 64] = b"\xff" * 64
    (tmp_path / "broken.zip").write_bytes(bytes(data))
    with pytest.raises(BrainMRIError, match="archive is corrupt"):
        fetch(tmp_path / "d6", url=f"{base}/broken.zip", progress=False)
    # A finished download is reused only if it is the one asked for.
    done = fetch(tmp_path / "d7", url=f"{base}/good.zip", progress=False)
    with pytest.raises(BrainMRIError, match="not " + "1" * 64):
        fetch(done, url=f"{base}/good.zip", sha256="1" * 64, progress=False)
    shutil.rmtree(done)
    assert good.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".", "d"))]  # nothing half-written


def test_offline_says_how_to_use_local_copy(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens
    code = main(["data", "fetch", "--dest", str(tmp_path / "d"), "--url", f"http://127.0.0.1:{port}/x.zip"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--data DIR" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_ensure_dataset_with_local_copy(tmp_path):
    assert ensure_dataset(str(tmp_path)) == tmp_path
    with pytest.raises(BrainMRIError, match="not found"):
        ensure_dataset(str(tmp_path / "missing"))


def test_force_replaces_only_an_unchanged_download_of_this_tool(tmp_path, sartaj, capsys):
    archive = _make_zip(tmp_path / "master.zip", sartaj).as_uri()
    # A user's folder: never emptied, with or without --force, and the error does not suggest it.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("three years of work")
    for extra in ([], ["--force"]):
        assert main(["data", "fetch", "--dest", str(mine), "--url", archive, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a download of this tool" in err and "--force" not in err
    # A marker that this tool did not write does not count.
    (mine / MARKER).write_text('{"tool": "another program", "url": "x", "sha256": "y"}')
    with pytest.raises(BrainMRIError, match="not a download of this tool"):
        fetch(mine, url=archive, force=True, progress=False)
    (mine / MARKER).write_text("not json")
    with pytest.raises(BrainMRIError, match="not a download of this tool"):
        fetch(mine, url=archive, force=True, progress=False)
    assert (mine / "thesis.txt").read_text() == "three years of work"

    # Our own download, with a file added by the user afterwards: kept too.
    done = fetch(tmp_path / "data", url=archive, progress=False)
    marker = json.loads((done / MARKER).read_text())
    assert marker["tool"] == "brainmri data fetch" and {"Training", "Testing", "README.md"} <= set(marker["entries"])
    (done / "notes.txt").write_text("my notes")
    with pytest.raises(BrainMRIError, match=r"files the download did not bring \(notes.txt\)"):
        fetch(done, url=archive, force=True, progress=False)
    assert (done / "notes.txt").read_text() == "my notes"
    # Unchanged (files inside the class folders may differ: they are the download's), it is replaced.
    (done / "notes.txt").unlink()
    shutil.rmtree(done / "Testing" / "no_tumor")
    assert fetch(done, url=archive, force=True, progress=False) == done
    assert (done / "Testing" / "no_tumor").is_dir() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_url_that_is_not_one_is_one_line(tmp_path, capsys):
    for url in ("notaurl", "ftp://example.org/x.zip", "http://", "/some/path.zip"):
        assert main(["data", "fetch", "--dest", str(tmp_path / "d"), "--url", url]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--url must be an http://, https:// or file:// URL" in err
    assert list(tmp_path.iterdir()) == []


def test_default_download_is_pinned_to_the_published_images(sartaj):
    """The default URL names a commit, not a branch, and the pinned content digest is that of
    the dataset's images as published (the shared copy), so a changed dataset is refused."""
    assert DATASET_COMMIT in DEFAULT_URL and "refs/heads" not in DEFAULT_URL
    assert content_digest(sartaj) == DATASET_SHA256


def test_content_digest_refuses_other_images(tmp_path, sartaj, capsys):
    archive = _make_zip(tmp_path / "master.zip", sartaj)
    first = fetch(tmp_path / "a", url=archive.as_uri(), progress=False)
    recorded = json.loads((first / MARKER).read_text())["content_sha256"]
    assert recorded == content_digest(first) != DATASET_SHA256
    assert fetch(tmp_path / "b", url=archive.as_uri(), content_sha256=recorded, progress=False).is_dir()
    with pytest.raises(BrainMRIError, match="not the pinned dataset"):
        fetch(tmp_path / "c", url=archive.as_uri(), content_sha256=DATASET_SHA256, progress=False)
    assert not (tmp_path / "c").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial download is left"
    with pytest.raises(BrainMRIError, match="content digest"):
        fetch(tmp_path / "a", url=archive.as_uri(), content_sha256=DATASET_SHA256, progress=False)
    args = ["data", "fetch", "--dest", str(tmp_path / "d"), "--url", archive.as_uri(), "--content-sha256", "abc"]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "64 hexadecimal digits" in err and not (tmp_path / "d").exists()
