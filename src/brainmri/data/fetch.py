"""Download the public dataset (Bhuvaji et al.) into a local cache, once.

The archive is checked (zip integrity, expected ``Training/`` and ``Testing/`` class folders,
optionally a SHA-256) before it is unpacked into a temporary sibling folder that is renamed
into place; ``fetch.json`` is written last, so a cache folder without it is incomplete.

The default download is pinned twice: the URL names one commit of the dataset's repository,
not a branch that can move, and the unpacked images must have the content digest
``DATASET_SHA256`` (see ``content_digest``). The digest is of the images, not of the zip:
GitHub builds its archives on request and does not promise the same bytes each time, so a
pin on the archive's SHA-256 could fail on an unchanged dataset, while a pin on the content
fails only when an image is added, removed, renamed or changed.

``fetch.json`` is also the marker that a folder is this tool's download: it names the tool and
lists the folder's top-level entries. ``force`` replaces only such a folder, and only while it
holds nothing the download did not bring; any other non-empty folder is left alone.

The download and the checksum are pooch's (``HTTPDownloader``, ``file_hash``); a ``file://``
URL, which pooch has no downloader for, is a plain copy. The unpacking stays here: pooch's
``Unzip`` has none of the layout, size and member-path checks made before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from brainmri.errors import BrainMRIError
from brainmri.files import file_sha256, publish_dir, shown, staging_dir

#: One commit of the dataset's repository, so that the default download cannot move under a run.
DATASET_COMMIT = "18d3626fff7003930bce69cf1b42a42bb15c67e4"
DEFAULT_URL = f"https://github.com/SartajBhuvaji/Brain-Tumor-Classification-DataSet/archive/{DATASET_COMMIT}.zip"
#: ``content_digest`` of the dataset's 3,264 images (Training/ and Testing/), as published.
DATASET_SHA256 = "0dc374618afd0235a38fbac8e505f98afab64fc72f8620da578d246537bb7962"
DATASET_NAME = "brain-tumor-mri-sartaj"
MARKER = "fetch.json"
#: Written into the marker, so that a stray ``fetch.json`` of another program is not taken for ours.
TOOL = "brainmri data fetch"
URL_SCHEMES = ("http", "https", "file")
EXPECTED_SPLITS = ("Training", "Testing")
#: The dataset unpacks to under 100 MB; anything near this is not it (or is a zip bomb).
MAX_UNPACKED_BYTES = 2 * 2**30


def cache_home() -> Path:
    """``$BRAINMRI_HOME``, default ``~/.cache/brainmri``."""
    return Path(os.environ.get("BRAINMRI_HOME") or Path.home() / ".cache" / "brainmri")


def default_dest() -> Path:
    return cache_home() / "datasets" / DATASET_NAME


def _download(url: str, path: Path, progress: bool) -> None:
    """``url`` into ``path``: pooch's HTTP downloader (requests, streamed, a tqdm bar) for
    http(s); a plain copy for file://, which pooch has no downloader for (local copies and
    offline use). Every failure becomes one line that says what to do."""
    import pooch
    import requests

    if urllib.parse.urlsplit(url).scheme.lower() == "file":
        source = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        if not source.is_file():
            raise BrainMRIError(f"cannot download {url}: no such file; check --url")
        shutil.copyfile(source, path)
        return
    try:
        pooch.HTTPDownloader(progressbar=progress, timeout=30)(url, str(path), None)
    except requests.HTTPError as exc:
        response = exc.response
        status = f"HTTP {response.status_code} {response.reason}" if response is not None else "HTTP error"
        raise BrainMRIError(f"cannot download {url}: {status}; check --url") from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
        raise BrainMRIError(f"download of {url} broke off ({type(exc).__name__}); run again") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        reason = type(exc).__name__
        raise BrainMRIError(
            f"cannot download {url} ({reason}); if offline, pass a local copy of the dataset with --data DIR "
            "(or run 'brainmri data prepare DIR OUT' on it)"
        ) from None


def _archive_root(zf: zipfile.ZipFile) -> str:
    """Check the archive and return its top-level folder (GitHub archives have one)."""
    names = [n for n in zf.namelist() if not n.startswith("__MACOSX/")]
    for n in names:
        p = PurePosixPath(n)
        if p.is_absolute() or ".." in p.parts:
            raise BrainMRIError(f"refusing archive with unsafe member path {n!r}")
    tops = {PurePosixPath(n).parts[0] for n in names if n.strip("/")}
    if len(tops) != 1:
        raise BrainMRIError(f"unexpected archive layout: {len(tops)} top-level entries, expected one folder")
    root = tops.pop()
    for split in EXPECTED_SPLITS:
        classes = {
            PurePosixPath(n).parts[2] for n in names if PurePosixPath(n).parts[1:2] == (split,) and n.count("/") > 2
        }
        if len(classes) < 2:
            raise BrainMRIError(f"archive lacks {root}/{split}/<class>/ folders; is it the Bhuvaji et al. dataset?")
    unpacked = sum(info.file_size for info in zf.infolist())
    if unpacked > MAX_UNPACKED_BYTES:
        raise BrainMRIError(
            f"archive would unpack to {unpacked / 2**30:.1f} GB (limit {MAX_UNPACKED_BYTES / 2**30:.0f} GB); refusing"
        )
    try:
        bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BrainMRIError(f"archive is corrupt ({exc}); run again") from None
    if bad is not None:
        raise BrainMRIError(f"archive is corrupt (bad CRC in {bad}); run again")
    return root


def content_digest(folder: str | Path) -> str:
    """The SHA-256 of a dataset's content: of the sorted lines ``relative/path<TAB>file SHA-256``,
    one per file under ``Training/`` and ``Testing/``. It names the images themselves, whatever
    archive or copy they came from, so a local copy can be checked against the pinned dataset."""
    folder = Path(folder)
    lines = []
    for split in EXPECTED_SPLITS:
        for path in (folder / split).rglob("*"):  # the lines are sorted below
            if path.is_file():
                lines.append(f"{path.relative_to(folder).as_posix()}\t{file_sha256(path)}\n")
    return hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()


def check_url(url: str) -> str:
    """``url`` if it is an http(s):// or file:// URL, else one clear error (before any work)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in URL_SCHEMES or (parts.scheme.lower() != "file" and not parts.netloc):
        raise BrainMRIError(f"--url must be an http://, https:// or file:// URL, got {url!r}")
    return url


def read_marker(dest: Path) -> dict | None:
    """The marker of an earlier download into ``dest``; None if there is none, or if it is not
    one this tool wrote (damaged, or without the URL and SHA-256 of the archive)."""
    try:
        done = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(done, dict) or not isinstance(done.get("url"), str) or not isinstance(done.get("sha256"), str):
        return None
    if done.get("tool", TOOL) != TOOL:
        return None
    return done


def _check_replaceable(dest: Path, done: dict | None, force: bool) -> None:
    """Refuse to replace a non-empty ``dest`` that is not an unchanged download of this tool."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise BrainMRIError(f"--dest {shown(dest)} is a file, not a folder")
    entries = {p.name for p in dest.iterdir()}
    if not entries:
        return
    if done is None:
        raise BrainMRIError(
            f"{shown(dest)} is not empty and is not a download of this tool (no valid {MARKER}); "
            "choose another --dest, or move its contents away yourself"
        )
    # Markers before the entry list was recorded name no entries: the marker alone identifies them.
    extra = sorted(entries - set(done.get("entries", entries)) - {MARKER})
    if extra:
        raise BrainMRIError(
            f"{shown(dest)} holds files the download did not bring ({', '.join(map(shown, extra[:5]))}); "
            "--force replaces only an unchanged download: move them away first"
        )


def fetch(
    dest: str | Path | None = None,
    url: str = DEFAULT_URL,
    force: bool = False,
    sha256: str | None = None,
    progress: bool = True,
    content_sha256: str | None = None,
) -> Path:
    """Download, check and unpack the dataset; return the folder holding ``Training/`` and
    ``Testing/``. A complete earlier download is reused unless ``force``; ``force`` replaces
    only a folder that this tool's marker shows to be an unchanged earlier download.

    ``sha256`` pins the archive's bytes, ``content_sha256`` the unpacked images
    (``content_digest``); the default URL is checked against ``DATASET_SHA256`` unless another
    content digest is given, so a changed dataset is refused rather than trained on."""
    import pooch

    check_url(url)
    for name, value in (("--sha256", sha256), ("--content-sha256", content_sha256)):
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise BrainMRIError(f"{name} must be 64 hexadecimal digits, got {value!r}")
    if content_sha256 is None and url == DEFAULT_URL:
        content_sha256 = DATASET_SHA256
    dest = Path(dest) if dest is not None else default_dest()
    done = read_marker(dest)
    if done is not None and not force:
        if sha256 and done.get("sha256", "").lower() != sha256.lower():
            raise BrainMRIError(f"{dest} holds a download with SHA-256 {done.get('sha256')}, not {sha256}; use --force")
        recorded = done.get("content_sha256")
        if content_sha256 and recorded and recorded != content_sha256.lower():
            raise BrainMRIError(
                f"{dest} holds images with content digest {recorded}, not {content_sha256}; use --force"
            )
        if url != DEFAULT_URL and done.get("url") != url:
            raise BrainMRIError(f"{dest} holds a download from {done.get('url')}, not {url}; use --force")
        return dest
    _check_replaceable(dest, done, force)
    work = staging_dir(dest)
    try:
        archive = work / "archive.zip"
        _download(url, archive, progress)
        digest = pooch.file_hash(str(archive), alg="sha256")
        if sha256 and digest.lower() != sha256.lower():
            raise BrainMRIError(f"SHA-256 mismatch for {url}: got {digest}, expected {sha256}")
        try:
            with zipfile.ZipFile(archive) as zf:
                root = _archive_root(zf)
                zf.extractall(work / "unpacked")
        except zipfile.BadZipFile:
            raise BrainMRIError(f"{url} is not a zip archive") from None
        data = work / "unpacked" / root
        content = content_digest(data)
        if content_sha256 and content != content_sha256.lower():
            raise BrainMRIError(
                f"the images from {url} are not the pinned dataset (content digest {content}, expected "
                f"{content_sha256}); nothing was kept. To use this version knowingly, pass --content-sha256 {content}"
            )
        counts = {split: sum(1 for p in (data / split).rglob("*") if p.is_file()) for split in EXPECTED_SPLITS}
        entries = sorted(p.name for p in data.iterdir())
        info = {
            "tool": TOOL,
            "url": url,
            "sha256": digest,
            "content_sha256": content,
            "files": counts,
            "entries": entries,
        }
        (data / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        publish_dir(data, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def ensure_dataset(data: str | Path | None, **kwargs) -> Path:
    """The dataset folder to use: ``data`` if given (it must exist), else the fetched copy."""
    if data is not None:
        path = Path(data)
        if not path.is_dir():
            raise BrainMRIError(f"dataset folder not found: {path}")
        return path
    return fetch(**kwargs)
