"""Preparing a dataset folder (formats, duplicates, conflicts, broken files), splitting it
without leakage, loading splits, and the errors users see."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import dicom_bytes, real_images
from PIL import Image

from brainmri.cli.command import main
from brainmri.data import hashing, splitfile, splits
from brainmri.data import prepare as preparation
from brainmri.data import prepared as data
from brainmri.data import scan as dataset
from brainmri.errors import BrainMRIError
from brainmri.labels import CLASSES

SIZE = 64


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def raw(sartaj, tmp_path_factory) -> Path:
    """A dataset in the Training/Testing layout with alias folder names, 5 real slices per class
    and the troublemakers the issue names."""
    root = tmp_path_factory.mktemp("raw")
    folders = {"glioma_tumor": "glioma", "meningioma_tumor": "Meningioma Tumor", "no_tumor": "notumor"}
    folders["pituitary_tumor"] = "pituitary"
    for src_folder, name in folders.items():
        (root / "Training" / name).mkdir(parents=True)
        for f in real_images(sartaj, src_folder, 5):
            shutil.copy2(f, root / "Training" / name / f.name)
    test = root / "Testing"
    for name in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"):
        (test / name).mkdir(parents=True)
    original = real_images(sartaj, "glioma_tumor", 1)[0]
    Image.open(original).convert("RGB").save(test / "glioma_tumor" / "recompressed.jpg", quality=60)
    shutil.copy2(real_images(sartaj, "pituitary_tumor", 2)[1], test / "no_tumor" / "conflict.jpg")
    jpeg = real_images(sartaj, "glioma_tumor", 6)[5].read_bytes()
    (test / "glioma_tumor" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (test / "glioma_tumor" / "text.jpg").write_text("this is not an image\n")
    gray = np.asarray(Image.open(real_images(sartaj, "pituitary_tumor", 1, "Testing")[0]).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 200).save(test / "pituitary_tumor" / "wide.png")
    gray = np.asarray(Image.open(real_images(sartaj, "meningioma_tumor", 1, "Testing")[0]).convert("L"))
    (test / "meningioma_tumor" / "slice.dcm").write_bytes(dicom_bytes(gray.astype(np.uint16) * 4, 500, 1000))
    (root / "README.txt").write_text("ignored: not an image suffix")
    return root


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> tuple[Path, dict, dict[str, str], dict[str, dict[str, str]]]:
    before = _snapshot(raw)
    out = tmp_path_factory.mktemp("prep") / "out"
    summary = preparation.prepare(raw, out, size=SIZE, workers=2, progress=False)
    assert _snapshot(raw) == before, "the source folder must never be modified"
    rows = {r["source_path"]: r for r in data.read_manifest(out)}
    return out, summary, before, rows


def test_prepare_writes_manifest_and_pngs(prepared, raw):
    out, summary, before, rows = prepared
    with (out / "manifest.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[:10] == "source_path,label,output_path,width,height,mode,pixel_hash,phash,group,status".split(",")
    sources = {k for k in before if Path(k).suffix in (".jpg", ".png", ".dcm")}
    assert set(rows) == sources  # one row per source file, nothing silently dropped
    assert {r["label"] for k, r in rows.items() if k.startswith("Training/Meningioma Tumor/")} == {"meningioma_tumor"}
    kept = [r for r in rows.values() if r["status"] == "kept"]
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == sorted(r["output_path"] for r in kept)
    for r in kept:
        img = Image.open(out / r["output_path"])
        assert img.size == (SIZE, SIZE) and img.mode == "L"
        assert r["output_path"].startswith(r["label"] + "/")
    for r in rows.values():
        assert r["status"] == "kept" or r["output_path"] == ""
    assert summary["kept"] == len(kept) and summary["files"] == len(rows)
    assert sum(summary["removed"].values()) + summary["kept"] == summary["files"]
    assert data.prepared_size(out) == SIZE
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no partial folders left


def test_formats_and_original_sizes(prepared):
    rows = prepared[3]
    wide, dcm = rows["Testing/pituitary_tumor/wide.png"], rows["Testing/meningioma_tumor/slice.dcm"]
    assert wide["status"] == "kept" and wide["mode"].startswith("I")
    assert dcm["status"] == "kept" and dcm["mode"] == "DICOM" and dcm["label"] == "meningioma_tumor"
    jpeg = next(r for k, r in rows.items() if k.startswith("Training/glioma/"))
    assert (jpeg["width"], jpeg["height"], jpeg["mode"]) == ("512", "512", "RGB")


def test_broken_files_reported_as_unreadable(prepared):
    rows, summary = prepared[3], prepared[1]
    assert rows["Testing/glioma_tumor/truncated.jpg"]["status"].startswith("unreadable: corrupt")
    assert rows["Testing/glioma_tumor/text.jpg"]["status"].startswith("unreadable: not an image")
    assert summary["removed"]["unreadable"] == 2


def test_recompressed_copy_is_near_duplicate(prepared, sartaj):
    rows = prepared[3]
    original = "Training/glioma/" + real_images(sartaj, "glioma_tumor", 1)[0].name
    copy = rows["Testing/glioma_tumor/recompressed.jpg"]
    assert copy["pixel_hash"] != rows[original]["pixel_hash"]
    assert copy["status"] == "duplicate" and copy["duplicate_of"] == original  # Training copy kept
    assert copy["group"] == rows[original]["group"] and rows[original]["status"] == "kept"
    assert prepared[1]["removed"]["near_duplicate"] >= 1


def test_label_conflict_excluded(prepared, sartaj):
    rows = prepared[3]
    original = rows["Training/pituitary/" + real_images(sartaj, "pituitary_tumor", 2)[1].name]
    conflict = rows["Testing/no_tumor/conflict.jpg"]
    assert conflict["label"] == "normal" and original["label"] == "pituitary_tumor"
    assert conflict["status"] == original["status"] == "label_conflict"
    assert conflict["group"] == original["group"]
    assert prepared[1]["label_conflict_groups"] >= 1


def test_exact_only_threshold_keeps_recompressed_copy(raw, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(raw / "Training" / "glioma", src / "glioma")
    shutil.copy2(raw / "Testing/glioma_tumor/recompressed.jpg", src / "glioma")
    preparation.prepare(src, tmp_path / "p", size=SIZE, phash_threshold=-1, workers=1, progress=False)
    rows = {r["source_path"]: r for r in data.read_manifest(tmp_path / "p")}
    assert rows["glioma/recompressed.jpg"]["status"] == "kept"


def _with_groups(prepared_dir: Path, tmp_path: Path) -> Path:
    """A copy of the prepared manifest in which kept images share groups of three, as if a user
    had kept duplicates, so that group-awareness of the split is actually exercised."""
    dst = tmp_path / "grouped"
    shutil.copytree(prepared_dir, dst)
    rows = data.read_manifest(dst)
    kept = [r for r in rows if r["status"] == "kept"]
    for i, r in enumerate(sorted(kept, key=lambda r: (r["label"], r["output_path"]))):
        r["group"] = f"{r['label']}-{i // 3}"
    with (dst / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dst


def test_split_is_stratified_group_aware_and_reproducible(prepared, tmp_path):
    grouped = _with_groups(prepared[0], tmp_path)
    rows = splits.make_split(grouped, test_size=0.3, seed=7)
    sides: dict[str, set[str]] = {}
    for r in rows:
        sides.setdefault(r["group"], set()).add(r["side"])
    assert all(len(s) == 1 for s in sides.values()), "a duplicate group crosses the split"
    assert {r["side"] for r in rows} == {"train", "test"}
    assert {r["label"] for r in rows if r["side"] == "test"} == set(CLASSES)  # stratified
    assert splits.make_split(grouped, test_size=0.3, seed=7) == rows
    assert any(splits.make_split(grouped, test_size=0.3, seed=s) != rows for s in (1, 2, 3))
    path = splitfile.write_split(rows, tmp_path / "split.csv")
    assert splitfile.read_split(path) == rows
    assert path.read_text().splitlines()[0] == "path,label,group,side"


def test_validation_side_is_carved_from_training_by_whole_groups(prepared, tmp_path):
    grouped = _with_groups(prepared[0], tmp_path)
    split = splits.make_split(grouped, test_size=0.3, seed=7)
    rows = splits.carve_validation(split, val_size=0.3, seed=7)
    assert [(r["path"], r["side"] == "test") for r in rows] == [(r["path"], r["side"] == "test") for r in split]
    was_train = {r["path"] for r in split if r["side"] == "train"}
    val = [r for r in rows if r["side"] == "val"]
    assert val and {r["path"] for r in val} < was_train and any(r["side"] == "train" for r in rows)
    sides: dict[str, set[str]] = {}
    for r in rows:
        sides.setdefault(r["group"], set()).add(r["side"])
    assert all(len(s) == 1 for s in sides.values()), "a duplicate group crosses train/val/test"
    assert splits.carve_validation(rows, val_size=0.3, seed=7) == rows  # re-carving a carved split changes nothing
    path = splitfile.write_split(rows, tmp_path / "split.csv")
    _, _, val_paths = data.load_split(grouped, path, "val")
    assert val_paths == [r["path"] for r in val]
    with pytest.raises(BrainMRIError, match="val-size"):
        splits.carve_validation(split, val_size=1.0)
    folds = splits.make_kfold(grouped, k=2, seed=0)
    with pytest.raises(BrainMRIError, match="no val side"):
        splitfile.select_split(folds, "val", fold=0)


def test_kfold_groups_stay_in_one_fold(prepared, tmp_path):
    grouped = _with_groups(prepared[0], tmp_path)
    rows = splits.make_kfold(grouped, k=3, seed=0)
    folds: dict[str, set[str]] = {}
    for r in rows:
        folds.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds.values())
    assert sorted({r["fold"] for r in rows}) == ["0", "1", "2"]
    assert splits.make_kfold(grouped, k=3, seed=0) == rows


def test_load_split(prepared, tmp_path):
    out = prepared[0]
    path = splits.split(out, tmp_path / "s.csv", test_size=0.25, seed=1)
    rows = splitfile.read_split(path)
    x, y, paths = data.load_split(out, path, "test")
    test = [r for r in rows if r["side"] == "test"]
    assert x.shape == (len(test), 1, SIZE, SIZE) and str(x.dtype) == "torch.uint8"
    assert paths == [r["path"] for r in test]
    assert y.tolist() == [CLASSES.index(r["label"]) for r in test]
    assert np.array_equal(x[0, 0].numpy(), np.asarray(Image.open(out / paths[0])))
    small, _, _ = data.load_split(out, path, "train", size=32)
    assert small.shape[1:] == (1, 32, 32) and len(small) == len(rows) - len(test)
    folds = splits.split(out, tmp_path / "k.csv", k=2)
    xa, _, pa = data.load_split(out, folds, "test", fold=0)
    xb, _, pb = data.load_split(out, folds, "train", fold=0)
    assert not set(pa) & set(pb) and len(pa) + len(pb) == len(rows)
    with pytest.raises(BrainMRIError, match="fold"):
        data.load_split(out, folds, "test")


def test_scan_layouts(tmp_path, sartaj):
    img = real_images(sartaj, "no_tumor", 1)[0]
    (tmp_path / "flat" / "healthy").mkdir(parents=True)
    shutil.copy2(img, tmp_path / "flat" / "healthy" / "a.jpg")
    (tmp_path / "deep" / "train" / "Glioma" / "patient1").mkdir(parents=True)
    shutil.copy2(img, tmp_path / "deep" / "train" / "Glioma" / "patient1" / "a.jpg")
    assert dataset.scan(tmp_path / "flat") == [
        {"source_path": "healthy/a.jpg", "label": "normal", "source_split": "", "class_folder": "healthy"}
    ]
    [row] = dataset.scan(tmp_path / "deep")
    assert (row["label"], row["source_split"]) == ("glioma_tumor", "train")
    (tmp_path / "flat" / "weird").mkdir()
    shutil.copy2(img, tmp_path / "flat" / "weird" / "b.jpg")
    with pytest.raises(BrainMRIError, match="--label-map"):
        dataset.scan(tmp_path / "flat")
    assert {r["label"] for r in dataset.scan(tmp_path / "flat", "weird=pituitary")} == {"normal", "pituitary_tumor"}


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_bad_input_one_line(tmp_path, capsys, sartaj):
    src = tmp_path / "src"
    (src / "glioma").mkdir(parents=True)
    shutil.copy2(real_images(sartaj, "glioma_tumor", 1)[0], src / "glioma")
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "allbad" / "glioma").mkdir(parents=True)
    (tmp_path / "allbad" / "glioma" / "x.jpg").write_text("not an image")
    cases = [
        (
            ["data", "prepare", str(tmp_path / "allbad"), str(tmp_path / "o"), "--no-progress"],
            "glioma/x.jpg: unreadable: not an image",
        ),
        (["data", "prepare", str(src), str(tmp_path / "o"), "--phash-threshold", "65"], "-1 (exact duplicates only)"),
        (["data", "prepare", str(src), str(tmp_path / "o"), "--size", "abc"], "invalid int value: 'abc'"),
        (["data", "split", str(tmp_path / "empty"), "--k", "0"], "--k must be at least 2, got 0"),
        (["data", "prepare", str(tmp_path / "missing"), str(tmp_path / "o")], "source folder not found"),
        (["data", "prepare", str(tmp_path / "empty"), str(tmp_path / "o")], "no image files"),
        (["data", "prepare", str(src), str(tmp_path / "afile" / "o")], "cannot write"),
        (["data", "prepare", str(src), str(src / "o")], "outside the source"),
        (["data", "split", str(tmp_path / "empty")], "no manifest.csv"),
    ]
    for argv, message in cases:
        code, err = _cli(capsys, *argv)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "o").exists() and list((tmp_path / "empty").iterdir()) == []

    out = tmp_path / "prep"
    assert main(["data", "prepare", str(src), str(out), "--size", "32", "--no-progress", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "glioma_tumor" in printed and "removed:" in printed
    code, err = _cli(capsys, "data", "prepare", str(src), str(out))
    assert code == 2 and "--overwrite" in err
    argv = ["data", "prepare", str(src), str(out), "--size", "16", "--overwrite", "--no-progress", "--workers", "1"]
    assert main(argv) == 0
    assert data.prepared_size(out) == 16
    code, err = _cli(capsys, "data", "prepare", str(src), str(tmp_path / "afile"), "--overwrite")
    assert code == 2 and "not a prepared folder" in err and (tmp_path / "afile").read_text() == "x"


def test_interrupted_prepare_leaves_nothing(tmp_path, sartaj, monkeypatch):
    src = tmp_path / "src"
    (src / "glioma").mkdir(parents=True)
    shutil.copy2(real_images(sartaj, "glioma_tumor", 1)[0], src / "glioma")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(preparation, "_deduplicate", boom)
    with pytest.raises(KeyboardInterrupt):
        preparation.prepare(src, tmp_path / "out", size=SIZE, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_cli_split(prepared, tmp_path, capsys):
    out = prepared[0]
    assert main(["data", "split", str(out), "--out", str(tmp_path / "a.csv"), "--seed", "3"]) == 0
    assert main(["data", "split", str(out), "--out", str(tmp_path / "b.csv"), "--seed", "3"]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert "train" in capsys.readouterr().out
    code, err = _cli(capsys, "data", "split", str(out), "--test-size", "1.5")
    assert code == 2 and "--test-size" in err


# --- patient groups (--groups) ---------------------------------------------------------


@pytest.fixture(scope="module")
def patients(sartaj, tmp_path_factory) -> tuple[Path, Path, Path, dict[str, str]]:
    """A dataset of 6 distinct real slices per class, a made-up patient CSV (3 patients of 2
    slices per class) and one copy that joins two patients: P-glioma_tumor-0's first slice
    saved again as a slice of P-glioma_tumor-1. Returns (source, prepared, CSV, file -> patient)."""
    root = tmp_path_factory.mktemp("patients")
    src, groups = root / "src", {}
    for folder in CLASSES:
        (src / "Training" / folder).mkdir(parents=True)
        source = "no_tumor" if folder == "normal" else folder
        for i, f in enumerate(real_images(sartaj, source, 6)):
            shutil.copy2(f, src / "Training" / folder / f.name)
            groups[f"Training/{folder}/{f.name}"] = f"P-{folder}-{i // 2}"
    first = real_images(sartaj, "glioma_tumor", 1)[0]
    shutil.copy2(first, src / "Training" / "glioma_tumor" / "link.jpg")
    groups["Training/glioma_tumor/link.jpg"] = "P-glioma_tumor-1"
    csv_path = root / "patients.csv"
    csv_path.write_text("file,group\n" + "".join(f"{f},{g}\n" for f, g in groups.items()))
    preparation.prepare(src, root / "prep", size=SIZE, workers=1, progress=False)
    return src, root / "prep", csv_path, groups


def _patient_sides(rows, prepared: Path, groups: dict[str, str], key: str = "side") -> dict[str, set[str]]:
    source_of = {r["output_path"]: r["source_path"] for r in data.read_manifest(prepared) if r["output_path"]}
    sides: dict[str, set[str]] = {}
    for r in rows:
        sides.setdefault(groups[source_of[r["path"]]], set()).add(r[key])
    return sides


def test_split_with_groups_keeps_every_patient_and_duplicate_group_on_one_side(patients):
    from brainmri.config import TrainConfig
    from brainmri.data.splits import effective_split, split_level

    _, prepared, csv_path, groups = patients
    crossed = False
    for seed in range(6):
        rows = splits.make_split(prepared, test_size=0.3, seed=seed, groups=csv_path)
        sides = _patient_sides(rows, prepared, groups)
        assert all(len(s) == 1 for s in sides.values()), (seed, sides)
        assert sides["P-glioma_tumor-0"] == sides["P-glioma_tumor-1"]  # joined by the duplicate
        assert {r["side"] for r in rows} == {"train", "test"}
        plain = splits.make_split(prepared, test_size=0.3, seed=seed)
        crossed |= any(len(s) > 1 for s in _patient_sides(plain, prepared, groups).values())
        folds = splits.make_kfold(prepared, k=2, seed=seed, groups=csv_path)
        assert all(len(s) == 1 for s in _patient_sides(folds, prepared, groups, "fold").values())
    assert crossed, "without --groups the split does not know the patients (else this test proves nothing)"
    config = TrainConfig(data=str(prepared), groups=str(csv_path), val_size=0.3, test_size=0.3, seed=3)
    rows = effective_split(config)
    assert {r["side"] for r in rows} == {"train", "val", "test"}
    assert all(len(s) == 1 for s in _patient_sides(rows, prepared, groups).values())
    assert split_level(config, rows) == "patient"
    assert split_level(config.replace(groups=None), effective_split(config.replace(groups=None))) == "duplicate group"
    random = config.replace(groups=None, split_policy="random", val_size=0.0)
    assert split_level(random, effective_split(random)) == "image"


def test_a_given_split_file_is_checked_against_the_groups(patients, tmp_path):
    from brainmri.config import TrainConfig
    from brainmri.data.splits import effective_split

    _, prepared, csv_path, groups = patients
    seed = next(
        s
        for s in range(20)
        if any(len(v) > 1 for v in _patient_sides(splits.make_split(prepared, 0.3, s), prepared, groups).values())
    )
    path = splitfile.write_split(splits.make_split(prepared, 0.3, seed), tmp_path / "plain.csv")
    with pytest.raises(BrainMRIError, match="groups on more than one side"):
        effective_split(TrainConfig(data=str(prepared), split=str(path), groups=str(csv_path)))
    good = splits.split(prepared, tmp_path / "good.csv", test_size=0.3, seed=seed, groups=csv_path)
    rows = effective_split(TrainConfig(data=str(prepared), split=str(good), groups=str(csv_path)))
    assert all(r["group"].startswith("patient:") for r in rows)
    # an outside copy of a training image is still found through the patient-level split file
    train_png = next(r["path"] for r in rows if r["side"] == "train")
    arr = np.asarray(Image.open(prepared / train_png))
    (match,) = data.training_overlap(prepared, good, [hashing.image_hashes(arr)])
    assert match is not None and match["exact"]


def test_prepare_records_the_groups_for_every_later_split(patients, tmp_path, capsys):
    src, _, csv_path, groups = patients
    prep = tmp_path / "prep"
    argv = ["data", "prepare", str(src), str(prep), "--size", "32", "--workers", "1", "--no-progress"]
    assert main([*argv, "--groups", str(csv_path)]) == 0
    manifest = data.read_manifest(prep)
    assert all(r["patient"] == groups[r["source_path"]] for r in manifest)
    info = __import__("json").loads((prep / "prepare.json").read_text())
    assert info["settings"]["groups"] == str(csv_path.resolve()) and info["patient_groups"] == 12
    capsys.readouterr()
    for seed in range(4):
        assert main(["data", "split", str(prep), "--seed", str(seed), "--test-size", "0.3", "--overwrite"]) == 0
        assert "split level: patient" in capsys.readouterr().out
        sides = _patient_sides(splitfile.read_split(prep / "split.csv"), prep, groups)
        assert all(len(s) == 1 for s in sides.values())


def test_groups_csv_errors_are_one_line_and_write_nothing(patients, tmp_path, capsys):
    src, prepared, csv_path, groups = patients
    no_columns = tmp_path / "bad.csv"
    no_columns.write_text("path,patient\nTraining/glioma_tumor/link.jpg,P1\n")
    lines = csv_path.read_text().splitlines()
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(lines[:-4]) + "\n")  # the last 4 files missing
    missing = sorted(list(groups)[-4:])
    out = tmp_path / "o"
    cases = [
        (["data", "prepare", str(src), str(out), "--groups", str(no_columns)], "needs the columns file,group"),
        (["data", "split", str(prepared), "--out", str(out), "--groups", str(no_columns)], "needs the columns"),
        (["data", "prepare", str(src), str(out), "--groups", str(partial)], "4 of the 25 files"),
        (["data", "split", str(prepared), "--out", str(out), "--groups", str(partial)], "4 of the 25 files"),
        (["data", "split", str(prepared), "--out", str(out), "--groups", str(tmp_path / "nope.csv")], "not found"),
        (["train", "--data", str(prepared), "--groups", str(partial), "--runs-dir", str(out)], "--groups-missing"),
        (["train", "--data", str(prepared), "--groups", str(csv_path), "--split-policy", "random"], "choose one"),
    ]
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "partial.csv"]
    code = main(["data", "split", str(prepared), "--out", str(out), "--groups", str(partial)])
    err = capsys.readouterr().err
    shown = [f for f in missing if f in err]
    assert code == 2 and len(shown) == 3 and "and 1 more" in err  # the first few named, then the count
    argv = ["data", "split", str(prepared), "--out", str(out), "--groups", str(partial), "--test-size", "0.3"]
    assert main([*argv, "--groups-missing", "singleton"]) == 0
    assert out.is_file()


def test_split_units_need_no_prepare_json(patients, tmp_path):
    """A hand-made prepared folder (a manifest, no prepare.json) can still be split by patient."""
    from brainmri.data.splits import units_by_path

    _, prepared, csv_path, groups = patients
    bare = tmp_path / "bare"
    shutil.copytree(prepared, bare)
    (bare / "prepare.json").unlink()
    units = units_by_path(bare, csv_path)
    kept = [r for r in data.read_manifest(bare) if r["status"] == "kept"]
    assert {r["output_path"] for r in kept} <= set(units)
    assert units[kept[0]["output_path"]] == f"patient:{groups[kept[0]['source_path']]}"
