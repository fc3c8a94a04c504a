"""What made a result: the code's git commit (and any uncommitted change to it), the command
line, the package versions and the machine.

Every run and every comparison records this, so that a number in a report can be traced to
the exact code that produced it. A tree with uncommitted changes to the code is recorded as
dirty, with the SHA-256 of its diff, and the diff itself is kept in the run folder
(:data:`SOURCE_DIFF`), so that even such a run can be repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The paths of a checkout that are code: a change elsewhere (docs, results) leaves a run clean.
CODE_PATHS = ("src", "configs", "scripts", "pyproject.toml", "setup.sh")

#: The packages whose versions a run records (those that can change a number).
PACKAGES = (
    "brainmri",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "scikit-learn",
    "pillow",
    "pydicom",
    "imagehash",
    "onnxruntime",
    "grad-cam",
)

#: The uncommitted change of a dirty run, kept beside its record, named by its hash (a resumed
#: run may have run under two different changes).
SOURCE_DIFF = "source-{sha}.diff"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, timeout=30, check=False, env=_git_env()
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None


def _git_env() -> dict[str, str]:
    # A checkout owned by another user (CI runs as root) is still read: the commit is a fact.
    return {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}


def checkout_root() -> Path | None:
    """The git checkout that holds the running brainmri package, or None (an installed wheel)."""
    here = Path(__file__).resolve().parent
    top = _git(here, "rev-parse", "--show-toplevel")
    return Path(top.strip()) if top else None


def code_diff(root: Path) -> str:
    """The uncommitted change to the code paths: ``git diff HEAD`` plus untracked files."""
    paths = [p for p in CODE_PATHS if (root / p).exists()]
    diff = _git(root, "diff", "HEAD", "--binary", "--", *paths) or ""
    untracked = (_git(root, "ls-files", "--others", "--exclude-standard", "--", *paths) or "").split()
    for name in sorted(untracked):
        with contextlib.suppress(OSError):
            data = (root / name).read_bytes()
            diff += f"untracked {name} sha256 {hashlib.sha256(data).hexdigest()}\n"
    return diff


def code_version() -> dict[str, Any]:
    """The commit the code came from, whether its code paths had uncommitted changes, and the
    diff's SHA-256 if so. Outside a git checkout: the package version only."""
    from brainmri import __version__

    root = checkout_root()
    record: dict[str, Any] = {"version": __version__, "commit": None, "dirty": None, "diff_sha256": None}
    if root is None:
        record["note"] = "not run from a git checkout; the package version is all that is known"
        return record
    commit = _git(root, "rev-parse", "HEAD")
    record["commit"] = commit.strip() if commit else None
    diff = code_diff(root)
    record["dirty"] = bool(diff)
    record["diff_sha256"] = hashlib.sha256(diff.encode("utf-8")).hexdigest() if diff else None
    return record


def describe(code: dict[str, Any] | None) -> str:
    """One line for a report: ``commit 1a2b3c4 (clean)`` or with the diff's hash."""
    if not code or not code.get("commit"):
        return f"brainmri {code.get('version', '?') if code else '?'} (no git commit recorded)"
    text = f"commit {code['commit'][:10]}"
    if code.get("dirty"):
        kept = SOURCE_DIFF.format(sha=code["diff_sha256"][:12])
        return text + f" with uncommitted changes (diff sha256 {code['diff_sha256'][:12]}, kept as {kept})"
    return text + " (clean)"


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    """The processor and what it can do, which decides speed (and, for bf16, the arithmetic)."""
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": name,
        "cpu_count": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags.split(),
        "amx": "amx_bf16" in flags.split(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname_sha256": hashlib.sha256(platform.node().encode()).hexdigest()[:12],
    }


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    """The whole record: code, command line, packages, machine."""
    return {
        "code": code_version(),
        "command": list(sys.argv if command is None else command),
        "packages": package_versions(),
        "machine": machine(),
    }


def keep_diff(folder: Path, code: dict[str, Any]) -> Path | None:
    """Write the uncommitted change of a dirty record into ``folder`` (None when clean)."""
    root = checkout_root()
    if not code.get("dirty") or root is None:
        return None
    path = Path(folder) / SOURCE_DIFF.format(sha=code["diff_sha256"][:12])
    path.write_text(code_diff(root), encoding="utf-8")
    return path
