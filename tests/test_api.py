"""The front door: ``import brainmri`` is cheap and offers the workflow; the README's Python
example uses that one import and runs; a model in memory predicts like its checkpoint."""

from __future__ import annotations

import ast
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, dicom_bytes, real_images

import brainmri


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S).group(1)


def test_importing_brainmri_loads_no_heavy_library():
    code = (
        "import sys, brainmri; print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'torch', 'numpy', 'matplotlib', 'torchvision', 'fastapi', 'onnx'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_public_name_resolves():
    for name in ("prepare", "split", "audit", "TrainConfig", "train", "evaluate", "compare", "reproduce",
                 "Predictor", "load_model"):  # fmt: skip
        assert name in brainmri.__all__ and name in dir(brainmri)
    for name in brainmri.__all__:
        assert getattr(brainmri, name) is not None
    assert set(brainmri.__all__) == {"BrainMRIError", "CLASSES", "__version__", *brainmri._LAZY}
    assert brainmri.evaluate.__name__ == "evaluate_run"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = brainmri.nope


def test_the_readme_example_has_one_import_and_every_call_fits_its_function():
    """Each call of the example names a function or method of the front door and passes
    arguments it accepts, so that the example cannot drift from the code it shows."""
    tree = ast.parse(_readme_example())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [ast.unparse(n) for n in imports] == ["import brainmri"]
    instances: dict[str, type] = {}  # a name bound to brainmri.Predictor(...) or .from_model(...)

    def resolve(node: ast.expr) -> tuple[object | None, bool]:
        """The function a call's ``func`` names, and whether it is a method of an instance."""
        if isinstance(node, ast.Name):
            if node.id in instances:
                return instances[node.id], True
            return (brainmri, False) if node.id == "brainmri" else (None, False)
        if isinstance(node, ast.Attribute):
            owner, bound = resolve(node.value)
            return (getattr(owner, node.attr), bound) if owner is not None else (None, False)
        if isinstance(node, ast.Call):  # brainmri.Predictor(run).predict_sources: looked up on the class
            owner, _ = resolve(node.func)
            return (owner, True) if isinstance(owner, type) else (None, False)
        return None, False

    checked = 0
    for stmt in tree.body:
        for call in (n for n in ast.walk(stmt) if isinstance(n, ast.Call)):
            target, bound = resolve(call.func)
            if target is None or not callable(target):
                continue
            kwargs = {k.arg: None for k in call.keywords if k.arg}
            inspect.signature(target).bind(*([None] * (len(call.args) + bound)), **kwargs)
            checked += 1
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
            made, _ = resolve(stmt.value.func)
            if made is brainmri.Predictor or getattr(made, "__qualname__", "") == "Predictor.from_model":
                instances[stmt.targets[0].id] = brainmri.Predictor
    assert checked >= 14


@pytest.fixture
def gray_slices() -> list[np.ndarray]:
    """Two made slices (no dataset needed): a smooth blob and a noisy one."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    blob = (255 * np.exp(-((yy - 48) ** 2 + (xx - 40) ** 2) / 600)).astype(np.uint8)
    return [blob, rng.integers(0, 256, (96, 96), dtype=np.uint8)]


def test_a_model_in_memory_predicts_like_its_checkpoint(tiny_checkpoint, gray_slices):
    """``Predictor.from_model`` on the checkpoint's own model and card gives the same
    probabilities as ``Predictor(path)``: one inference path, whichever way the model came."""
    model, card = brainmri.load_model(tiny_checkpoint)
    in_memory = brainmri.Predictor.from_model(model, card)
    from_file = brainmri.Predictor(tiny_checkpoint)
    arrays = [in_memory.to_array(a) for a in gray_slices]
    proba = in_memory.predict_arrays(arrays)
    assert proba.shape == (2, len(brainmri.CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(proba, from_file.predict_arrays(arrays), rtol=1e-5, atol=1e-7)
    assert "no fitted statistics" in in_memory.input_check.status
    assert in_memory.model_path is None and in_memory.classes == list(brainmri.CLASSES)


def test_a_model_built_in_memory_needs_no_file():
    model = brainmri.build_model("resnet18", weights="none")
    card = brainmri.make_card("resnet18", 64, "none", brainmri.CLASSES, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    rows = brainmri.Predictor.from_model(model, card).predict_sources([np.zeros((80, 80), np.uint8).tobytes()])
    assert len(rows) == 1 and rows[0].error  # raw bytes that are no image: one row that says so
    with pytest.raises(brainmri.BrainMRIError, match="damaged model card"):
        brainmri.Predictor.from_model(model, {**card, "image_size": 0})


#: The README's settings, shrunk: the same calls on a tiny model (resnet18 at 64 px, 1 epoch).
TINY = {"arch": "resnet18", "image_size": 64, "epochs": 1, "batch_size": 8, "limit_per_class": 6, "device": "cpu"}


class _Tiny:
    """``brainmri`` as the README uses it, with every call that trains made tiny."""

    def __getattr__(self, name: str):
        return getattr(brainmri, name)

    @staticmethod
    def TrainConfig(**kwargs):  # noqa: N802 (the README's name)
        return brainmri.TrainConfig(**{**kwargs, **TINY, "deterministic": True})

    @staticmethod
    def audit(sources, out, **kwargs):
        return brainmri.audit(sources, out, **{**kwargs, "size": 64, "workers": 1, "progress": False})

    @staticmethod
    def prepare(src, out, **kwargs):
        return brainmri.prepare(src, out, **{**kwargs, "size": 64, "workers": 1, "progress": False})

    @staticmethod
    def train(config, run_dir, **kwargs):
        return brainmri.train(config, run_dir, **{**kwargs, "progress": False})

    @staticmethod
    def evaluate(run_dir, **kwargs):
        return brainmri.evaluate(run_dir, **{**kwargs, "n_bootstrap": 50})

    @staticmethod
    def compare(prepared, out, config, **kwargs):
        kwargs.update(archs=["resnet18"], n_bootstrap=50, progress=False, log=lambda *a, **k: None)
        return brainmri.compare(prepared, out, config, **kwargs)

    @staticmethod
    def reproduce(*args, **kwargs):  # the whole paper pipeline (test_reproduce runs it): bound only
        inspect.signature(brainmri.reproduce).bind(*args, **kwargs)
        return None


@pytest.mark.slow
def test_the_readme_example_runs(sartaj, small_raw, tmp_path, monkeypatch):
    from PIL import Image

    shutil.copytree(small_raw, tmp_path / "raw")
    gray = np.asarray(Image.open(real_images(sartaj, "glioma_tumor", 1, "Testing")[0]).convert("L"))
    (tmp_path / "slice.dcm").write_bytes(dicom_bytes(gray.astype(np.uint16) * 16))
    monkeypatch.chdir(tmp_path)
    code = _readme_example().replace("import brainmri\n", "", 1)
    scope: dict = {"brainmri": _Tiny()}
    exec(compile(code, "README.md", "exec"), scope)

    assert (tmp_path / "audit" / "audit.json").is_file() and (tmp_path / "prepared" / "prepare.json").is_file()
    assert scope["run"] == Path("runs/r50") and (tmp_path / "runs/r50/metrics.json").is_file()
    assert scope["metrics"]["n"] > 0
    assert scope["rows"][0].ok and scope["rows"][0].label in brainmri.CLASSES
    assert scope["proba"].shape == (1, len(brainmri.CLASSES))
    label = brainmri.CLASSES[int(np.argmax(scope["proba"][0]))]
    assert label == scope["rows"][0].label  # the file and the array in memory: one answer
    assert (tmp_path / "comparison" / "report.html").is_file()
