"""ONNX export: parity with PyTorch on real slices, dynamic batch, embedded card; brainmri info."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import FOLDERS, real_images

from brainmri.cli.command import main
from brainmri.inference.export import CARD_KEY, load_onnx
from brainmri.inference.predictor import Predictor
from brainmri.io.preprocess import to_array
from brainmri.models.card import NOTICE
from brainmri.models.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def onnx_path(model_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(model_path), "--format", "onnx", "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def real_files(sartaj) -> list[Path]:
    return [p for folder in FOLDERS for p in real_images(sartaj, folder, 3, split="Testing")]


def test_torch_and_onnxruntime_agree_on_real_images(model_path, onnx_path, real_files):
    torch_pred, onnx_pred = Predictor(model_path), Predictor(onnx_path)
    assert onnx_pred.backend == "onnx" and onnx_pred.session is not None and onnx_pred.model is None
    arrays = [to_array(f, torch_pred.image_size) for f in real_files]
    expected = torch_pred.predict_arrays(arrays)
    got = onnx_pred.predict_arrays(arrays)  # one batch of 12
    assert got.shape == expected.shape == (len(real_files), 4)
    assert np.abs(got - expected).max() < 1e-4
    single = np.concatenate([onnx_pred.predict_arrays([a]) for a in arrays[:3]])  # dynamic batch: 1
    assert np.abs(single - expected[:3]).max() < 1e-4
    # The graph's own softmax output agrees with the logits path.
    from brainmri.io.preprocess import stack, to_input

    probs = onnx_pred.session.run(["probabilities"], {"image": to_input(stack(arrays)).numpy()})[0]
    assert np.abs(probs - expected).max() < 1e-4


def test_card_is_embedded(model_path, onnx_path):
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["image"]
    # The trained run is calibrated: the input check's score travels in the graph.
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities", "ood_score"]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: dynamic batch
    card = json.loads({p.key: p.value for p in proto.metadata_props}[CARD_KEY])
    original = read_checkpoint(model_path)["card"]
    assert {k: v for k, v in card.items() if k != "export"} == original
    assert card["export"]["format"] == "onnx" and card["notice"] == NOTICE


def test_predict_with_onnx_backend_matches_torch(model_path, onnx_path, real_files, tmp_path):
    args = [*map(str, real_files[:4]), "-q"]
    assert main(["predict", str(model_path), *args, "--output", str(tmp_path / "t.csv")]) == 0
    assert main(["predict", str(onnx_path), *args, "--backend", "onnx", "--output", str(tmp_path / "o.csv")]) == 0
    with open(tmp_path / "t.csv") as a, open(tmp_path / "o.csv") as b:
        rows_t, rows_o = list(csv.DictReader(a)), list(csv.DictReader(b))
    classes = read_checkpoint(model_path)["card"]["classes"]
    assert [r["file"] for r in rows_t] == [r["file"] for r in rows_o] and len(rows_t) == 4
    for rt, ro in zip(rows_t, rows_o, strict=True):
        assert rt["predicted"] == ro["predicted"]
        assert max(abs(float(rt[c]) - float(ro[c])) for c in classes) < 1e-4


def test_info_prints_the_whole_card(model_path, onnx_path, capsys):
    card = read_checkpoint(model_path)["card"]
    assert main(["info", str(model_path)]) == 0
    text = capsys.readouterr().out
    for heading in ("Architecture", "Classes", "Image size", "Preprocessing", "Weights origin", "Training data"):
        assert f"\n{heading}" in text
    for heading in ("Split", "Metrics", "Intended use"):
        assert f"\n{heading}" in text
    assert card["arch"] in text and ", ".join(card["classes"]) in text and card["weights_origin"] in text
    assert card["intended_use"] in text and text.rstrip().endswith(NOTICE)
    assert main(["info", str(onnx_path), "--json"]) == 0
    from_onnx = json.loads(capsys.readouterr().out)
    assert from_onnx["classes"] == card["classes"] and from_onnx["export"]["opset"] == 18


def test_bad_models_are_one_clear_line(model_path, onnx_path, real_files, tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(onnx_path))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    cases = [
        (["info", str(junk)], "not an ONNX model"),
        (["predict", str(foreign), str(real_files[0])], "without a brainmri model card"),
        (["predict", str(onnx_path), str(real_files[0]), "--explain", str(tmp_path / "c")], "needs the PyTorch"),
        (["export", str(tmp_path / "missing.pt")], "not found"),
        (["export", str(onnx_path), "--output", str(tmp_path / "x.pb")], "must end in .onnx"),
        (["export", str(model_path), "--opset", "0", "-o", str(tmp_path / "o.onnx")], "--opset must be between 18"),
        (["export", str(model_path), "--opset", "99", "-o", str(tmp_path / "o.onnx")], "--opset must be between"),
        (["export", str(model_path), "--legacy", "--opset", "11", "--quantize", "int8", "--calibration", "x"], "13"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err
    assert load_onnx(onnx_path)[1]["image_size"] > 0


def test_damaged_cards_and_mismatched_graphs_are_one_clear_line(model_path, onnx_path, real_files, tmp_path, capsys):
    import torch

    ckpt = read_checkpoint(model_path)
    card = ckpt["card"]
    damaged = {
        "nocard": ({k: v for k, v in ckpt.items() if k != "card"}, "model card is missing"),
        "cardstr": ({**ckpt, "card": "resnet18"}, "model card is missing"),
        "nosize": ({**ckpt, "card": {k: v for k, v in card.items() if k != "image_size"}}, "invalid: image_size"),
        "sizestr": ({**ckpt, "card": {**card, "image_size": "64"}}, "invalid: image_size"),
        "classes": ({**ckpt, "card": {**card, "classes": "glioma"}}, "invalid: classes"),
        "noweights": ({k: v for k, v in ckpt.items() if k != "model_state"}, "no model weights"),
        "version": ({**ckpt, "version": "x"}, "format version"),
    }
    proto = onnx.load(str(onnx_path))

    def with_card(new_card) -> Path:
        out = tmp_path / f"onnx-{len(list(tmp_path.iterdir()))}.onnx"
        for prop in proto.metadata_props:
            if prop.key == CARD_KEY:
                prop.value = json.dumps(new_card)
        onnx.save(proto, str(out))
        return out

    cases = []
    for name, (obj, message) in damaged.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        cases += [(command, tmp_path / f"{name}.pt", message) for command in ("predict", "export", "info")]
    cases += [
        ("predict", with_card([1, 2]), "model card is missing"),
        ("info", with_card({k: v for k, v in card.items() if k != "classes"}), "invalid: classes"),
        ("predict", with_card({**card, "image_size": 2 * card["image_size"]}), "the graph takes"),
        ("predict", with_card({**card, "classes": card["classes"][:2]}), "outputs but its card names 2"),
    ]
    for command, path, message in cases:
        argv = [command, str(path)] + ([str(real_files[0])] if command == "predict" else [])
        if command == "export":
            argv += ["--output", str(tmp_path / "out.onnx")]
        assert main(argv) == 2, (argv, message)
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, (argv, err)


def test_int8_quantisation_reports_and_keeps_agreement(onnx_path, sartaj, real_files, tmp_path, capsys):
    from brainmri.inference.export import load_calibration, quantize_int8

    size = load_onnx(onnx_path)[1]["image_size"]
    calibration = load_calibration([str(sartaj / "Training" / f) for f in FOLDERS], size, limit=24)
    assert len(calibration) == 24
    out = tmp_path / "model.int8.onnx"
    check = quantize_int8(onnx_path, out, calibration)
    assert check["images"] == 12 and check["calibration_images"] == 12
    int8, fp32 = Predictor(out), Predictor(onnx_path)
    assert int8.card["export"]["int8_check"] == check and "int8" in int8.card["export"]["quantization"]
    nodes = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in nodes and "DequantizeLinear" in nodes
    arrays = [to_array(f, size) for f in real_files]  # Testing side: not used for calibration
    p8, p32 = int8.predict_arrays(arrays), fp32.predict_arrays(arrays)
    assert np.allclose(p8.sum(1), 1) and 0 < np.abs(p8 - p32).max() < 0.5  # quantised, not garbage
    # How close int8 stays depends on the CPU's int8 kernels (VNNI or not), so no agreement rate
    # is asserted; an image the float model is sure of keeps its label on any of them.
    top2 = np.sort(p32, axis=1)[:, -2:]
    sure = top2[:, 1] - top2[:, 0] > 0.3
    assert (p8.argmax(1)[sure] == p32.argmax(1)[sure]).all()
    assert main(["export", str(onnx_path), "--quantize", "int8"]) == 2
    assert "needs --calibration" in capsys.readouterr().err
    broken = tmp_path / "calib"
    broken.mkdir()
    (broken / "bad.jpg").write_bytes(b"not a jpeg")
    warnings: list[str] = []
    assert load_calibration([str(broken), str(real_files[0])], size, warn=warnings.append)
    assert len(warnings) == 1 and "bad.jpg" in warnings[0] and "not an image" in warnings[0]
