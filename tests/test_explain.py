"""Grad-CAM: heatmaps of the image's size that are not constant, overlays, panels, --explain."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import FOLDERS, real_images
from PIL import Image

from brainmri.cli.command import main
from brainmri.inference.explain import grad_cam, target_layer
from brainmri.io.preprocess import stack, to_array, to_input
from brainmri.models.build import build_model


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


def test_one_pass_maps_equal_the_library_method_by_method():
    """saliency_many captures every layer in one pass; each map must be exactly what
    pytorch-grad-cam's class for that method and layer computes on its own."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from brainmri.inference.explain import Explainer, saliency_many, stage_layer
    from brainmri.models.build import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", "none").eval()
    x, classes = torch.rand(3, 1, 64, 64), [0, 2, 3]
    kinds = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM, "hirescam": HiResCAM}
    explainers = [Explainer(m, layer, s) for m in kinds for layer in ("layer4", "layer3", "layer2") for s in (1, 2)]
    maps = saliency_many(model, x, classes, explainers)
    assert not any(p.requires_grad for p in model.parameters())  # the model is left as it was
    for ex in explainers:
        xin = x if ex.scale == 1 else F.interpolate(x, scale_factor=ex.scale, mode="bilinear", align_corners=False)
        model.requires_grad_(True)
        with kinds[ex.method](model=model, target_layers=[stage_layer(model, ex.layer, 64)]) as cam:
            ref = torch.from_numpy(cam(input_tensor=xin, targets=[ClassifierOutputTarget(c) for c in classes]))
        if ex.scale != 1:
            ref = F.adaptive_avg_pool2d(ref[:, None].float(), 64)[:, 0]
        assert maps[ex.name].shape == (3, 64, 64)
        np.testing.assert_allclose(maps[ex.name], ref.numpy(), atol=1e-6, err_msg=ex.name)


def test_explainer_names_round_trip_and_bad_ones_are_one_line():
    from brainmri.errors import BrainMRIError
    from brainmri.inference.explain import Explainer

    for text in ("gradcam@layer4", "layercam@layer3 x2", "gradcam++@layer2"):
        assert Explainer.parse(text).name == text
    for bad in ("magic@layer4", "gradcam@layer9", "gradcam@layer4 x7", "gradcam@layer4 xx"):
        with pytest.raises(BrainMRIError):
            Explainer.parse(bad)


def test_explanations_are_scored_against_boxes(model_path, tmp_path):
    """On slices whose boxes are made to sit where each map peaks, every method hits; on boxes
    moved to the far corner, none does. The record, table and figures are written."""
    import csv
    import json

    import numpy as np
    from PIL import Image

    from brainmri.evaluation.explanation_scores import score_explanations
    from brainmri.inference.explain import Explainer, saliency_many
    from brainmri.io.preprocess import stack, to_input
    from brainmri.metrics.localisation import peak
    from brainmri.models.checkpoint import load_model

    model, card = load_model(model_path)
    rng = np.random.default_rng(0)
    folder = tmp_path / "folder"
    (folder / "glioma").mkdir(parents=True)
    arrays = []
    for i in range(6):
        arr = (rng.random((64, 64)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / "glioma" / f"s{i}.png")
        arrays.append(arr)
    ex = Explainer("gradcam", "layer3")
    proba_classes = model(to_input(stack(arrays))).argmax(1).tolist()
    heat = saliency_many(model, to_input(stack(arrays)), proba_classes, [ex])[ex.name]
    rows = []
    for i, h in enumerate(heat):
        r, c = peak(h)
        rows.append([f"glioma/s{i}.png", "glioma", (c + 0.5) / 64, (r + 0.5) / 64, 0.1, 0.1,
                     "select" if i < 3 else "report"])  # fmt: skip
    boxes = tmp_path / "boxes.csv"
    with boxes.open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "label", "x_center", "y_center", "width", "height", "half"], *rows])
    out = tmp_path / "loc"
    record = score_explanations(model, card, folder, boxes, out, explainers=[ex], n_bootstrap=50)
    assert record["slices"] == 6 and record["chosen"] == ex.name
    assert record["chosen_on_report"]["pointing_0"]["mean"] == 1.0
    assert {"localisation.json", "localisation.md", "slices.csv", "misses.png", "examples.png"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "localisation.json").read_text())["occlusion"]["drop_box"]["n"] == 6
    corner = [[*r[:2], 0.02 if r[2] > 0.5 else 0.98, 0.02 if r[3] > 0.5 else 0.98, *r[4:]] for r in rows]
    with boxes.open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "label", "x_center", "y_center", "width", "height", "half"], *corner])
    far = score_explanations(model, card, folder, boxes, tmp_path / "far", explainers=[ex], n_bootstrap=50)
    assert far["chosen_on_report"]["pointing_0.1"]["mean"] == 0.0


def test_a_batch_of_maps_equals_the_maps_one_slice_at_a_time():
    """The failure gallery explains its slices in batches: in eval mode each map must depend on
    its own slice only, so a batch gives what one slice at a time gives."""
    from brainmri.inference.explain import DEFAULT_EXPLAINER, saliency

    torch.manual_seed(1)
    model = build_model("resnet18", "none").eval()
    x, classes = torch.rand(5, 1, 64, 64), [0, 1, 2, 3, 1]
    batch = saliency(model, x, classes, DEFAULT_EXPLAINER)
    alone = np.concatenate([saliency(model, x[i : i + 1], [c], DEFAULT_EXPLAINER) for i, c in enumerate(classes)])
    assert batch.shape == (5, 64, 64) and batch.std() > 0
    np.testing.assert_allclose(batch, alone, atol=1e-4)


def test_the_failure_grid_places_each_overlay_in_its_cell_under_its_caption_band(tmp_path):
    """The failure gallery draws one mosaic: overlay i sits in row i // 6, column i % 6, below
    a white band for its caption, and the figure is a PNG of that layout."""
    from brainmri.evaluation.gallery import COLUMNS, draw_grid, mosaic

    rng = np.random.default_rng(0)
    overlays = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(8)]
    grid, (side, cell_w, cell_h, band) = mosaic(overlays)
    assert side == 40 and band > 0 and cell_w > side and cell_h == side + band
    assert grid.shape == (2 * cell_h, COLUMNS * cell_w - (cell_w - side), 3)
    for i, over in enumerate(overlays):
        top, left = (i // COLUMNS) * cell_h + band, (i % COLUMNS) * cell_w
        assert np.array_equal(grid[top : top + side, left : left + side], over), i
        assert (grid[top - band : top, left : left + side] == 255).all(), i  # the caption band
    assert (grid[cell_h:, 2 * cell_w :] == 255).all()  # the second row holds two overlays only
    rows = [{"label": "glioma_tumor", "predicted": "normal", "probability": 0.9}] * 8
    path = draw_grid([(o[:, :, 0], o) for o in overlays], rows, "t", tmp_path / "failures.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > img.height


def test_the_maps_of_a_folded_model_are_those_of_the_model_as_trained():
    """Models loaded for inference have batch-norm folded into their convolutions: the same
    function, so every explanation of it is the map of the model as trained (BatchNorm kept)."""
    import copy

    from brainmri.inference.explain import METHODS, Explainer, saliency_many
    from brainmri.models.folding import fold_batch_norm

    torch.manual_seed(2)
    trained = build_model("resnet18", "none")
    with torch.no_grad():
        for _ in range(3):  # training mode: running statistics other than the initial 0 and 1
            trained(torch.rand(8, 1, 64, 64))
    trained.eval()
    folded = fold_batch_norm(copy.deepcopy(trained)).to(memory_format=torch.channels_last)
    x, classes = torch.rand(3, 1, 64, 64), [0, 2, 3]
    explainers = [Explainer(m, layer) for m in METHODS for layer in ("layer4", "layer3")]
    want, got = saliency_many(trained, x, classes, explainers), saliency_many(folded, x, classes, explainers)
    for ex in explainers:
        assert want[ex.name].std() > 0, ex.name
        np.testing.assert_allclose(got[ex.name], want[ex.name], atol=1e-4, err_msg=ex.name)
