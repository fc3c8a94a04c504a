"""Shared fixtures. Real data comes from the shared dataset beside the project; nothing is
copied into the repository."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SARTAJ = Path(os.environ.get("BRAINMRI_TEST_DATA", ROOT.parent / "shared" / "datasets" / "brain-tumor-mri-sartaj"))
#: The labelled external folder (class folders and boxes.csv), beside the public dataset.
EXTERNAL = SARTAJ.parent / "brain-tumor-mri-external"
FOLDERS = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")
#: CI sets CI (to ``true`` or ``1``): there, a missing dataset is a failure, not a skip.
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need_dataset(path: Path, what: str) -> Path:
    """``path`` if it holds the shared dataset; otherwise the test skips, saying which data is
    missing and where it was looked for. In CI (``CI=1`` or ``CI=true``) a missing dataset fails instead: the
    tests that need it are part of what CI promises."""
    if path.is_dir() and any(path.iterdir()):
        return path
    message = f"the shared {what} is not at {path} (set BRAINMRI_TEST_DATA to the public dataset's folder)"
    if IN_CI:
        pytest.fail(f"{message}; in CI (CI={os.environ['CI']}) the tests that need it must run")
    pytest.skip(message)


@pytest.fixture(scope="session")
def sartaj() -> Path:
    """The raw public dataset (Training/ and Testing/ of class folders)."""
    need_dataset(SARTAJ / "Training", "public dataset (Bhuvaji et al.)")
    return SARTAJ


@pytest.fixture(scope="session")
def external() -> Path:
    """The labelled external folder (class folders, tumour boxes in boxes.csv)."""
    return need_dataset(EXTERNAL, "external dataset")


def real_images(sartaj: Path, folder: str, n: int, split: str = "Training") -> list[Path]:
    """The first ``n`` files (sorted, so every machine picks the same) of one class folder."""
    return sorted((sartaj / split / folder).iterdir())[:n]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """PyTorch's threads set to ``n`` inside the block, restored after: a run made here as a
    process side by side makes it (``usable_cpus() // jobs`` threads)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_external(external: Path, tmp_path_factory) -> Path:
    """The first 6 slices of each class of the external folder, under the folder's own name:
    for tests of a pipeline that evaluates on it, not of its score."""
    out = tmp_path_factory.mktemp("small_external") / external.name
    for folder in sorted(p for p in external.iterdir() if p.is_dir()):
        (out / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:6]:
            shutil.copy2(image, out / folder.name / image.name)
    return out


@pytest.fixture(scope="session")
def small_raw(sartaj: Path, tmp_path_factory) -> Path:
    """A temporary folder of class sub-folders with 12 real images per class."""
    out = tmp_path_factory.mktemp("small_raw")
    for folder in FOLDERS:
        (out / folder).mkdir()
        for f in real_images(sartaj, folder, 12):
            shutil.copy2(f, out / folder / f.name)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained resnet18 checkpoint at 64 px with a complete model card: for tests of
    code that only needs *a* model (loading, export, serving), not a trained one."""
    import torch

    from brainmri.labels import CLASSES
    from brainmri.models.build import IMAGENET_MEAN, IMAGENET_STD, build_model
    from brainmri.models.card import make_card
    from brainmri.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet18", weights="none")
    card = make_card("resnet18", 64, "none", CLASSES, IMAGENET_MEAN, IMAGENET_STD)
    path = tmp_path_factory.mktemp("tiny_ckpt") / "best.pt"
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="session")
def trained_run(small_raw: Path, tmp_path_factory) -> Path:
    """A real, tiny training run folder (resnet18 from scratch, 64 px, 2 epochs, about 10
    images per class) for tests of code that needs a trained run: evaluation, prediction,
    serving. Returns ``runs/<name>``; the prepared data is its config's ``data``."""
    from brainmri.config import TrainConfig
    from brainmri.data.prepare import prepare
    from brainmri.training.run import train

    base = tmp_path_factory.mktemp("trained_run")
    prepare(small_raw, base / "prepared", size=64, workers=1, progress=False)
    config = TrainConfig(
        data=str(base / "prepared"),
        arch="resnet18",
        weights="none",
        epochs=2,
        batch_size=8,
        image_size=64,
        limit_per_class=10,
        deterministic=True,
        device="cpu",
    )
    return train(config, base / "runs" / "resnet18", progress=False)


@pytest.fixture(scope="session")
def model_path(trained_run: Path) -> Path:
    """The trained run's best checkpoint: what a user passes to predict, export and serve."""
    return trained_run / "checkpoints" / "best.pt"


@pytest.fixture(scope="session")
def predictor(model_path: Path):
    from brainmri.inference.predictor import Predictor

    return Predictor(model_path)


def dicom_bytes(
    pixels,
    center: float | None = None,
    width: float | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
) -> bytes:
    """A 16-bit-allocated MR DICOM file of ``pixels`` (uint16 values), as scanners write them;
    ``center``/``width`` add a VOI window."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = np.asarray(pixels).astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@dataclass
class Measured:
    """A finished command: exit code, output, and its peak resident memory (MB) as the kernel
    counted it (``ru_maxrss`` from ``wait4``); ``killed`` names why the watchdog stopped it."""

    code: int
    out: str
    err: str
    peak_mb: float
    killed: str | None = None


def run_measured(argv: list, limit_mb: float = 2000, timeout: float = 300, cwd: Path | None = None) -> Measured:
    """Run ``python -m brainmri ARGV`` (this checkout's package) and measure its peak memory.

    A watchdog (psutil, sampled every 50 ms) kills it past ``limit_mb`` or ``timeout`` seconds,
    so that a regression (a read without end, a hang) fails the test instead of taking the
    machine; the peak reported is then at least the limit."""
    import psutil

    import brainmri

    env = {**os.environ, "PYTHONPATH": str(Path(brainmri.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "brainmri", *map(str, argv)], stdout=out, stderr=err, env=env, cwd=cwd
        )
        killed: list[str] = []
        done = threading.Event()

        def watch() -> None:
            me, started = psutil.Process(proc.pid), time.monotonic()
            while not done.wait(0.05):
                try:
                    rss = me.memory_info().rss
                except psutil.Error:
                    return
                if rss > limit_mb * 2**20 or time.monotonic() - started > timeout:
                    killed.append(f"memory over {limit_mb:g} MB" if rss > limit_mb * 2**20 else f"over {timeout:g} s")
                    proc.kill()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        watcher.join()
        out.seek(0)
        err.seek(0)
        text = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    return Measured(proc.returncode, *text, usage.ru_maxrss / 1024, killed[0] if killed else None)
