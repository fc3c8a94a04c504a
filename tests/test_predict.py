"""brainmri predict: real slices from the shared dataset, every input format, bad input."""

from __future__ import annotations

import csv
import io
import json
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FOLDERS, dicom_bytes, real_images
from PIL import Image

from brainmri.cli.command import main
from brainmri.inference.predictor import Predictor, predict_paths
from brainmri.io.images import read_gray
from brainmri.io.paths import expand_paths
from brainmri.io.preprocess import to_array
from brainmri.models.build import build_model
from brainmri.models.card import make_card
from brainmri.models.checkpoint import read_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def real_files(sartaj) -> list[Path]:
    """Two test-side slices of each class folder."""
    return [p for folder in FOLDERS for p in real_images(sartaj, folder, 2, split="Testing")]


def huge_png(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A valid 8-bit grayscale PNG of zeros, streamed through zlib so that the 400 MP image is
    never held in memory (the file is ~400 kB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_table_csv_json_with_corrupt_files(predictor, model_path, real_files, tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    for f in real_files:
        (good / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(real_files[0].read_bytes()[:2000])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "missing.jpg"
    out_csv, out_json = tmp_path / "pred.csv", tmp_path / "pred.json"

    args = ["predict", str(model_path), str(good), str(truncated), str(text), str(missing), "--batch-size", "3"]
    assert main([*args, "--output", str(out_csv)]) == 1
    captured = capsys.readouterr()
    table = captured.out.splitlines()
    # The last column says "error / warning" when the input check also flags a slice.
    assert table[0].split()[: len(predictor.classes) + 3] == ["file", "predicted", *predictor.classes, "error"]
    assert len(table) == 1 + len(real_files) + 3
    assert "3 of 11 files could not be read" in captured.err

    rows = read_csv(out_csv)
    assert list(rows[0]) == ["file", "predicted", *predictor.classes, "error", "input_warning", "frame", "frames"]
    by_name = {Path(r["file"]).name: r for r in rows}
    assert "corrupt" in by_name["truncated.jpg"]["error"]
    assert "not an image" in by_name["notes.png"]["error"]
    assert "no such file" in by_name["missing.jpg"]["error"]
    for name in ("truncated.jpg", "notes.png", "missing.jpg"):
        assert by_name[name]["predicted"] == "" and all(by_name[name][c] == "" for c in predictor.classes)

    # Good rows: the same probabilities as the Python API on the same files, argmax = predicted.
    expected = {Path(p.name).name: p for p in predictor.predict_sources(sorted(good.iterdir()))}
    assert len(expected) == len(real_files)
    for name, pred in expected.items():
        row = by_name[name]
        probs = np.array([float(row[c]) for c in predictor.classes])
        assert row["error"] == "" and row["predicted"] == pred.label == predictor.classes[int(probs.argmax())]
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(probs, [pred.probabilities[c] for c in predictor.classes], atol=2e-6)
        assert any(line.startswith(row["file"]) and pred.label in line for line in table)

    assert main([*args, "--output", str(out_json), "--quiet"]) == 1
    doc = json.loads(out_json.read_text())
    assert doc["classes"] == predictor.classes and "not a medical device" in doc["notice"].lower()
    preds = {Path(p["name"]).name: p for p in doc["predictions"]}
    assert preds.keys() == by_name.keys()
    assert preds["notes.png"]["label"] is None and "not an image" in preds["notes.png"]["error"]
    for name, pred in expected.items():
        assert preds[name]["label"] == pred.label and preds[name]["error"] is None
        assert preds[name]["probabilities"] == pytest.approx(pred.probabilities, abs=1e-6)
    assert capsys.readouterr().out == ""


def test_every_format_gives_the_same_prediction(predictor, real_files, tmp_path):
    gray = read_gray(real_files[4])
    gray = np.round((gray - gray.min()) * (255.0 / (gray.max() - gray.min()))).astype(np.uint8)  # full range
    sources = []
    for fmt, suffix in (("PNG", ".png"), ("TIFF", ".tif"), ("BMP", ".bmp")):
        sources.append(tmp_path / f"slice{suffix}")
        Image.fromarray(gray).save(sources[-1], fmt)
    sources.append(tmp_path / "slice.dcm")
    # A 12-bit DICOM, stretched back to 0..255 on decode.
    sources[-1].write_bytes(dicom_bytes(gray.astype(np.uint16) * 16, bits_stored=12))
    rows = predict_paths(predictor, [str(tmp_path / "slice.*")])
    assert sorted(Path(r.name).suffix for r in rows) == [".bmp", ".dcm", ".png", ".tif"]
    reference = predictor.predict_arrays([to_array(gray, predictor.image_size)])[0]
    for row in rows:
        assert row.ok, row.error
        assert np.allclose([row.probabilities[c] for c in predictor.classes], reference, atol=1e-6), row.name


def test_the_model_input_is_each_grey_level_over_255():
    """Every path feeds the model ``to_input``'s floats: the same as PyTorch's own division
    (what recorded runs were trained on), for each of the 256 grey levels, also from a strided
    batch, in a new tensor that callers may change in place."""
    from brainmri.io.preprocess import to_input

    levels = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
    original = levels.clone()
    for batch in (levels, levels.flip(-1), levels[:, :, ::2, 1::3]):
        x = to_input(batch)
        assert x.dtype == torch.float32 and x.shape == batch.shape
        assert torch.equal(x, batch.to(torch.float32) / 255.0)
        x.mul_(2)  # the caller's copy, not the slices'
    assert torch.equal(levels, original)
    assert torch.equal(to_input(levels), levels.double().div(255).float())  # correctly rounded
    assert to_input(torch.full((1, 1, 2, 2), 0.5)).dtype == torch.float32  # floats pass through


def test_batched_equals_one_by_one_and_thread_safe(predictor, real_files):
    arrays = [to_array(f, predictor.image_size) for f in real_files]
    together = predictor.predict_arrays(arrays)
    alone = np.concatenate([predictor.predict_arrays([a]) for a in arrays])
    assert together.shape == (len(arrays), len(predictor.classes))
    assert np.allclose(together, alone, atol=1e-5)
    results: list[np.ndarray] = [None] * 3  # type: ignore[list-item]

    def work(i: int) -> None:
        results[i] = predictor.predict_arrays(arrays[i:4] + arrays[:i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, res in enumerate(results):
        assert np.allclose(res, np.roll(together[:4], -i, axis=0), atol=1e-5)


def test_expand_paths(real_files, tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "x.JPG").write_bytes(real_files[0].read_bytes())
    (tmp_path / "a" / "y.png").write_bytes(b"")
    (tmp_path / "a" / "readme.txt").write_text("skip me")
    assert [p.name for p in expand_paths([tmp_path / "a"])] == ["x.JPG", "y.png"]
    assert [p.name for p in expand_paths([str(tmp_path / "a" / "**" / "*.JPG")])] == ["x.JPG"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no images"):
        expand_paths([tmp_path / "empty"])
    with pytest.raises(Exception, match="no files match"):
        expand_paths([str(tmp_path / "*.dcm")])


def test_bad_input_is_one_clear_line(model_path, real_files, tmp_path, capsys):
    def run(*args: str) -> tuple[int, str]:
        code = main(list(args))
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err
        return code, err

    (tmp_path / "empty").mkdir()
    code, err = run("predict", str(model_path), str(tmp_path / "empty"))
    assert code == 2 and err.count("\n") == 0 and "no images" in err

    notckpt = tmp_path / "model.pt"
    notckpt.write_text("hello")
    code, err = run("predict", str(notckpt), str(real_files[0]))
    assert code == 2 and err.count("\n") == 0 and "not a brainmri checkpoint" in err

    # A checkpoint whose card names another architecture than its weights.
    ckpt = read_checkpoint(model_path)
    model = torch.nn.Linear(1, 1)
    other = tmp_path / "other.pt"
    save_checkpoint(other, model, dict(ckpt["card"], arch="resnet34"))
    code, err = run("predict", str(other), str(real_files[0]))
    assert code == 2 and err.count("\n") == 0 and "do not match architecture 'resnet34'" in err

    code, err = run("predict", str(model_path), str(real_files[0]), "--output", str(tmp_path / "x.xlsx"))
    assert code == 2 and ".csv or .json" in err
    code, err = run("predict", str(model_path), str(real_files[0]), "--device", "tpu")
    assert code == 2 and err == "brainmri: error: unknown device 'tpu'; use auto, cpu, cuda or cuda:N"
    torch.save([1, 2, 3], tmp_path / "list.pt", pickle_protocol=4)  # torch warns about such files
    code, err = run("predict", str(tmp_path / "list.pt"), str(real_files[0]))
    assert code == 2 and err.count("\n") == 0 and "not a brainmri checkpoint" in err

    # Outputs that cannot be written: a file where a folder should be.
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("a file")
    for flag, target in (("--output", blocker / "x.csv"), ("--explain", blocker)):
        code, err = run("predict", str(model_path), str(real_files[0]), "-q", flag, str(target))
        assert code == 2 and err.count("\n") == 0 and str(blocker) in err, (flag, err)
    code, err = run("export", str(model_path), "--output", str(blocker / "m.onnx"))
    assert code == 2 and err == f"brainmri: error: cannot write {blocker / 'm.onnx'}: {blocker} is a file, not a folder"

    # A file name that is not valid UTF-8 is written back to the CSV as its own bytes.
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / b"x\xff.jpg".decode("utf-8", "surrogateescape")).write_bytes(real_files[0].read_bytes())
    assert main(["predict", str(model_path), str(odd), "-q", "--output", str(tmp_path / "odd.csv")]) == 0
    assert b"x\xff.jpg" in (tmp_path / "odd.csv").read_bytes()

    big = tmp_path / "huge.png"
    huge_png(big)
    assert big.stat().st_size < 2_000_000 and struct.unpack(">II", big.read_bytes()[16:24]) == (20000, 20000)
    code = main(["predict", str(model_path), str(big), str(real_files[0]), "--output", str(tmp_path / "r.csv")])
    assert code == 1
    rows = {Path(r["file"]).name: r for r in read_csv(tmp_path / "r.csv")}
    assert "image too large" in rows["huge.png"]["error"]
    assert rows[real_files[0].name]["predicted"] in Predictor(model_path).classes


def test_predict_sources_bytes(predictor, real_files):
    data = real_files[0].read_bytes()
    rows = predictor.predict_sources([data, b"junk", io.BytesIO(data).getvalue()], names=["a", "b", "c"])
    assert [r.name for r in rows] == ["a", "b", "c"]
    assert rows[0].ok and not rows[1].ok and rows[2].probabilities == rows[0].probabilities


def test_inference_resizes_through_the_prepared_size_exactly_as_training_did(tiny_checkpoint, small_raw, tmp_path):
    """A model trained at 64 px from data prepared at 128 px saw original -> 128 -> 64; a
    one-step resize would differ by a few grey levels. The predictor reproduces the two steps."""
    from brainmri.data.prepare import prepare
    from brainmri.data.prepared import load_split, read_manifest
    from brainmri.data.splits import split

    prepared = tmp_path / "prepared"
    prepare(small_raw, prepared, size=128, workers=1, progress=False)
    split_file = split(prepared, tmp_path / "split.csv", test_size=0.25, seed=0)
    images, _, paths = load_split(prepared, split_file, "train", size=64)  # what training sees
    source = {r["output_path"]: r["source_path"] for r in read_manifest(prepared)}
    ckpt = read_checkpoint(tiny_checkpoint)
    card = make_card("resnet18", 64, "none", list(ckpt["card"]["classes"]), [0.5] * 3, [0.25] * 3, prepared_size=128)
    model_path = tmp_path / "m.pt"
    model = build_model("resnet18", weights="none").eval()
    model.load_state_dict(ckpt["model_state"])
    save_checkpoint(model_path, model, card)
    predictor = Predictor(model_path)
    assert "128x128 (the prepared data), then 64x64" in predictor.card["preprocessing"]["resize"]
    one_step_differs = False
    for i in range(4):
        original = small_raw / source[paths[i]]
        assert np.array_equal(predictor.to_array(original), images[i, 0].numpy())
        one_step_differs |= not np.array_equal(to_array(original, 64), images[i, 0].numpy())
    assert one_step_differs  # otherwise this test would not show anything


def test_the_frame_used_of_a_multi_frame_file_is_said(predictor, real_files, tmp_path, capsys):
    """A multi-frame DICOM, a GIF and a multi-page TIFF used to be reduced to one frame silently;
    the table, CSV and JSON now say which frame was classified and how many there were, and the
    prediction is that of that frame."""
    from test_images import dicom_file

    slices = [read_gray(f) for f in real_files[:3]]
    side = min(min(s.shape) for s in slices)
    frames = [np.asarray(Image.fromarray(s).resize((side, side))) for s in slices]
    gif, tif = tmp_path / "cine.gif", tmp_path / "pages.tif"
    Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    Image.fromarray(frames[0]).save(tif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    dcm = tmp_path / "series.dcm"
    dcm.write_bytes(dicom_file(np.stack(frames).astype(np.uint16), "1.2.840.10008.1.2.1", frames=3))
    single = tmp_path / "single.png"
    Image.fromarray(frames[0]).save(single)
    out = tmp_path / "pred.json"
    files = [str(f) for f in (gif, tif, dcm, single)]  # named: a folder search skips .gif
    assert main(["predict", str(predictor.model_path), *files, "-o", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "frame" in table[0].split()
    notes = {line.split()[0]: line for line in table[1:]}
    assert "frame 1 of 3" in notes[str(gif)] and "frame 1 of 3" in notes[str(tif)]
    assert "frame 2 of 3" in notes[str(dcm)] and "frame" not in notes[str(single)].split(str(single))[1]
    rows = {Path(r["name"]).name: r for r in json.loads(out.read_text())["predictions"]}
    got = {name: (r["frame"], r["frames"]) for name, r in rows.items()}
    assert got == {"cine.gif": (1, 3), "pages.tif": (1, 3), "series.dcm": (2, 3), "single.png": (None, None)}
    alone = predictor.predict_sources([_png_bytes(frames[1])])[0]
    assert rows["series.dcm"]["probabilities"] == pytest.approx(alone.probabilities, abs=1e-5)
    assert main(["predict", str(predictor.model_path), str(gif), "-q", "-o", str(tmp_path / "p.csv")]) == 0
    (row,) = read_csv(tmp_path / "p.csv")
    assert (row["frame"], row["frames"]) == ("1", "3")


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()
