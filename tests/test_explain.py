"""Grad-CAM: heatmaps of the image's size that are not constant, overlays, panels, --explain."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import FOLDERS, real_images
from PIL import Image

from brainmri.cli import main
from brainmri.explain import grad_cam, target_layer
from brainmri.models import build_model
from brainmri.preprocess import stack, to_array, to_input


@pytest.fixture(scope="module")
def slices(sartaj, predictor) -> list[np.ndarray]:
    return [to_array(f, predictor.image_size) for folder in FOLDERS for f in real_images(sartaj, folder, 1, "Testing")]


def test_heatmap_has_image_size_and_is_not_constant(predictor, slices):
    size = predictor.image_size
    for arr in slices[:2]:
        heat, over = predictor.explain(arr)
        assert heat.shape == (size, size) and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        assert heat.std() > 0.01 and heat.max() - heat.min() > 0.5  # a map, not a constant
        assert over.shape == (size, size, 3) and over.dtype == np.uint8
        assert not np.array_equal(over[..., 0], over[..., 2])  # coloured, not the gray slice
    # Different target classes weight the feature maps differently.
    # The predicted class is the default target; another class gives another map.
    probs = predictor.predict_arrays([slices[0]])[0]
    predicted, least = predictor.classes[int(probs.argmax())], predictor.classes[int(probs.argmin())]
    default = predictor.explain(slices[0])[0]
    assert np.allclose(default, predictor.explain(slices[0], predicted)[0], atol=1e-5)
    assert not np.allclose(default, predictor.explain(slices[0], least)[0], atol=1e-3)
    with pytest.raises(Exception, match="unknown target class"):
        predictor.explain(slices[0], "astrocytoma")


def test_explain_does_not_disturb_concurrent_predictions(predictor, slices):
    reference = predictor.predict_arrays(slices)
    expected_heat = [predictor.explain(a)[0] for a in slices[:2]]
    errors: list[str] = []

    def predict_loop() -> None:
        for _ in range(5):
            if not np.allclose(predictor.predict_arrays(slices), reference, atol=1e-5):
                errors.append("prediction changed")

    def explain_loop(i: int) -> None:
        for _ in range(2):
            if not np.allclose(predictor.explain(slices[i])[0], expected_heat[i], atol=1e-4):
                errors.append(f"heatmap {i} changed")

    threads = [threading.Thread(target=predict_loop)] + [
        threading.Thread(target=explain_loop, args=(i,)) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_generic_target_layer_for_other_families():
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", weights="none").eval()
    layer = target_layer(model, 64)
    assert layer is not model.backbone and any(layer is m for m in model.backbone.modules())
    x = to_input(stack([np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))]))
    heat = grad_cam(model, layer, x, 0)
    assert heat.shape == (64, 64)


def test_cli_explain_writes_one_panel_per_readable_image(model_path, sartaj, tmp_path, predictor):
    files = [real_images(sartaj, "glioma_tumor", 2, "Testing")[1], real_images(sartaj, "no_tumor", 1, "Testing")[0]]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "cams"
    code = main(["predict", str(model_path), *map(str, files), str(bad), "--explain", str(out), "-q"])
    assert code == 1
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{f.stem}_gradcam.png" for f in files)
    for name in written:
        img = Image.open(out / name)
        assert img.width > 2 * predictor.image_size and img.height > predictor.image_size
        assert np.asarray(img.convert("RGB")).std() > 10
    target = tmp_path / "cams_target"
    assert main(["predict", str(model_path), str(files[0]), "--explain", str(target), "--target-class", "normal"]) == 0
    assert (target / f"{files[0].stem}_gradcam.png").is_file()
    other = tmp_path / "cams_other"  # a fresh folder: target already holds this panel
    assert main(["predict", str(model_path), str(files[0]), "--explain", str(other), "--target-class", "x"]) == 2
