"""File helpers: atomic writes, JSON records, folders that appear only when complete.

Everything a run, a preparation or a download writes goes through here, so that an
interrupted command never leaves a half-written file, or a folder, that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from brainmri.errors import BrainMRIError


def current_umask() -> int:
    """The process umask. mkstemp/mkdtemp create owner-only files and folders; callers give
    them the permissions an ordinary open()/mkdir() would, so results can be shared as usual."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_dir(dest: str | Path) -> Path:
    """A new hidden folder beside ``dest`` in which to build it, so that ``dest`` appears only
    complete, by one rename at the end, and an interrupted build leaves nothing that looks
    finished."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    except OSError as exc:
        raise BrainMRIError(f"cannot write to {dest.parent}: {exc.strerror or exc}") from None


class FileRefused(BrainMRIError):
    """A path that is not read: not a regular file, too large, missing or unreadable. The message
    is the reason alone (callers name the file), e.g. ``not a regular file (a FIFO)``."""


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def check_regular(path: str | Path) -> int:
    """The size of ``path`` if it is a regular file (after symlinks), else :class:`FileRefused`:
    for files handed whole to a library (``torch.load``, ``onnx.load``), which would wait on a
    FIFO forever or read a device without end."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileRefused("no such file") from None
    except OSError as exc:
        raise FileRefused(f"cannot read file: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileRefused("is a folder")
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"not a regular file ({_kind(info.st_mode)})")
    return info.st_size


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, else :class:`FileRefused`.

    Devices, FIFOs and sockets are refused from ``stat`` before they are opened (a symlink to
    ``/dev/zero`` would never end, a FIFO would wait for a writer forever, and opening some
    devices has effects), then checked again on the open descriptor, which is opened
    non-blocking so that a FIFO swapped in meanwhile cannot hang the open. The read itself stops
    at ``limit + 1`` bytes, so a file that grows while it is read cannot exceed the limit either.
    """
    size = check_regular(path)
    if size > limit:
        raise FileRefused(f"file too large ({size:,} bytes; limit {limit:,})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileRefused(f"cannot read file: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileRefused(f"not a regular file ({_kind(mode)})")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        try:
            while size <= limit and (chunk := fh.read(min(1 << 20, limit + 1 - size))):
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise FileRefused(f"cannot read file: {exc.strerror or exc}") from None
    if size > limit:
        raise FileRefused(f"file too large (more than {limit:,} bytes)")
    return b"".join(chunks)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place, so that a crash
    never leaves a half-written file that looks complete. A path that cannot be written
    (a file where a folder should be, no permission, a full disk) is one clear error."""
    atomic_write_with(path, lambda fh: fh.write(data))


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """:func:`atomic_write_bytes` for a writer that streams into the open file (``torch.save``):
    nothing is built in memory first, which for a 1 GB checkpoint took three times as long as
    writing it (docs/results/quick-end-of-run)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocking} is a file, not a folder" if blocking else exc.strerror or exc
        raise BrainMRIError(f"cannot write {path}: {reason}") from None
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BrainMRIError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    # surrogateescape: file names that are not valid UTF-8 are written back as their own bytes.
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    """A JSON record, ``default`` when the file does not exist, one clear error when it is damaged."""
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BrainMRIError(f"{path} is not valid JSON: {exc}") from None


def publish_dir(staged: Path, dest: Path) -> None:
    """Move a folder built by :func:`staging_dir` into place, replacing ``dest`` if it exists,
    with renames only, so that ``dest`` is at every moment either the old or the new folder."""
    os.chmod(staged, 0o777 & ~current_umask())
    if dest.exists():
        trash = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
        dest.rename(trash / "old")
        staged.rename(dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staged.rename(dest)


class FolderLock:
    """An exclusive lock on a folder (``flock`` on the folder itself, so it leaves no file
    behind), held while one process writes into it; a second process that asks is refused at
    once, and the kernel drops the lock when its holder ends, however it ends. Advisory: only
    processes that ask for it are kept out. Without ``fcntl`` (Windows) nothing is locked."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.path: Path | None = None

    def acquire(self, path: str | Path, busy: str) -> None:
        """Lock ``path`` (releasing a lock this object holds on another folder); ``busy`` is the
        error message when another process holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not Linux/macOS
            return
        self.release()
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BrainMRIError(busy) from None
        self.fd, self.path = fd, Path(path)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = self.path = None


def shown(name: str | Path) -> str:
    """A file name as tables and messages show it: as it is when every character is printable,
    else quoted like ``repr`` (a newline becomes ``\\n``), so that one odd name can neither
    split a table row or a one-line message nor fail to print (undecodable bytes)."""
    text = str(name)
    return text if text.isprintable() else repr(text)


#: Longest excerpt of a value (from a config file, a model card ...) quoted in an error line.
MAX_SHOWN_CHARS = 120


def brief(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters (ending ``...``), so that an error about a huge value
    stays one short line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8 for a record read back as UTF-8 (a manifest): a file name whose
    bytes are not UTF-8 (held by Python as surrogate escapes) gets each such byte written as
    ``\\xNN`` (``caf\\xe9.jpg``), instead of making the whole write fail."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def one_line(text: str) -> str:
    """``text`` with every unprintable character escaped, for messages that must stay one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def plain_name(name: str, flag: str) -> str:
    """``name`` if it is a single plain folder name (no separator, not ``.``/``..``, printable);
    otherwise one clear error, so that a name cannot place an output outside its parent folder."""
    bad = (
        not name
        or name in (".", "..")
        or "/" in name
        or (os.altsep is not None and os.altsep in name)
        or os.sep in name
        or not name.isprintable()
    )
    if bad:
        raise BrainMRIError(f"{flag} must be a plain folder name (no '/', not '.' or '..'), got {shown(name)}")
    return name


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output file that exists (unless ``overwrite``) or that could
    not be written (a file where a folder should be, no permission, a read-only place), so that
    a long job never fails at its last step and nothing is replaced unasked."""
    path = Path(path)
    if path.is_dir():
        raise BrainMRIError(f"cannot write {shown(path)}: it is a folder")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise BrainMRIError(f"{shown(path)} already exists; pass --overwrite to replace it")
    existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise BrainMRIError(f"cannot write {shown(path)}: {shown(existing)} is a file, not a folder")
    try:  # the only reliable test (root passes os.access everywhere, /proc refuses new files)
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".brainmri-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BrainMRIError(f"cannot write {shown(path)}: {exc.strerror or exc}") from None
    return path


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks: what records and annexes name a file by."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
