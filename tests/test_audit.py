"""The dataset audit on folders the tests build from real slices: copies across Training/ and
Testing/ counted as leaked, recompressed copies caught, label conflicts, unreadable files,
datasets that share an image, the report files, and bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import real_images
from PIL import Image

from brainmri.cli.command import main
from brainmri.data import audit as audit_mod
from brainmri.data import prepare as preparation
from brainmri.data.audit_report import audit


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def sources(sartaj, tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    """Dataset ``a`` (Training/ and Testing/) and dataset ``b`` (class folders only), made of
    distinct real slices plus the cases the audit must find."""
    root = tmp_path_factory.mktemp("audit_src")
    a, b = root / "a", root / "b"
    glioma = real_images(sartaj, "glioma_tumor", 5)
    meningioma = real_images(sartaj, "meningioma_tumor", 3)
    for folder in ("Training/glioma", "Training/meningioma", "Testing/glioma", "Testing/meningioma"):
        (a / folder).mkdir(parents=True)
    for folder in ("Testing/notumor", "Testing/pituitary"):
        (a / folder).mkdir(parents=True)
    for f in glioma[:3]:
        shutil.copy2(f, a / "Training/glioma" / f.name)
    for f in meningioma[:2]:
        shutil.copy2(f, a / "Training/meningioma" / f.name)
    shutil.copy2(glioma[0], a / "Training/glioma/again.jpg")  # a copy within one folder
    shutil.copy2(glioma[0], a / "Testing/glioma/copy.jpg")  # leaked: an exact copy
    Image.open(glioma[1]).convert("RGB").save(a / "Testing/glioma/recompressed.jpg", quality=60)  # leaked: near
    shutil.copy2(glioma[3], a / "Testing/glioma/new.jpg")  # not leaked
    shutil.copy2(meningioma[2], a / "Testing/meningioma/new.jpg")  # not leaked
    shutil.copy2(meningioma[0], a / "Testing/notumor/conflict.jpg")  # leaked, and labelled otherwise
    jpeg = glioma[4].read_bytes()
    (a / "Testing/pituitary/truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (a / "Testing/pituitary/text.jpg").write_text("this is not an image\n")
    for folder in ("glioma_tumor", "meningioma_tumor"):
        (b / folder).mkdir(parents=True)
    shutil.copy2(glioma[2], b / "glioma_tumor" / "shared.jpg")  # the one image the two datasets share
    shutil.copy2(real_images(sartaj, "meningioma_tumor", 4)[3], b / "meningioma_tumor" / "own.jpg")
    return a, b, {"glioma0": glioma[0], "glioma1": glioma[1], "meningioma0": meningioma[0], "glioma2": glioma[2]}


@pytest.fixture(scope="module")
def audited(sources, tmp_path_factory) -> tuple[dict, Path]:
    a, b, _ = sources
    before = _snapshot(a.parent)
    out = tmp_path_factory.mktemp("audit_out") / "audit"
    result = audit([a, b], out, workers=2, progress=False)
    assert _snapshot(a.parent) == before, "the audit must only read its sources"
    return result, out


def _group_of(result: dict, dataset: str, path: str) -> dict:
    return next(
        g for g in result["duplicate_groups"] if any((m["dataset"], m["path"]) == (dataset, path) for m in g["members"])
    )


def test_a_copy_in_training_and_testing_counts_as_leaked(audited, sources):
    result = audited[0]
    leak = result["test_images_leaked"]
    assert (leak["images"], leak["leaked"]) == (5, 3)  # 5 readable test images: copy, recompressed, conflict leak
    assert leak["per_class"]["glioma_tumor"] == {"images": 3, "leaked": 2, "fraction": round(2 / 3, 4)}
    assert leak["per_class"]["meningioma_tumor"]["leaked"] == 0
    assert leak["per_class"]["normal"] == {"images": 1, "leaked": 1, "fraction": 1.0}
    (folder,) = leak["folders"]
    assert folder["folder"] == "a/Testing" and folder["copies_in"] == {"a/Training": 3}
    copy = _group_of(result, "a", "Testing/glioma/copy.jpg")
    assert copy["exact"] and copy["crosses_folders"] and copy["id"] in result["cross_folder_groups"]
    assert copy["size"] == 3  # with the copy inside Training/ itself
    training = next(f for f in result["folders"] if f["folder"] == "a/Training")
    assert (training["duplicate_groups"], training["exact_copies"], training["near_copies"]) == (1, 1, 0)


def test_a_recompressed_copy_is_a_near_duplicate(audited, sources):
    result, name = audited[0], sources[2]["glioma1"].name
    group = _group_of(result, "a", "Testing/glioma/recompressed.jpg")
    members = {m["path"]: m for m in group["members"]}
    assert set(members) == {f"Training/glioma/{name}", "Testing/glioma/recompressed.jpg"}
    near = members["Testing/glioma/recompressed.jpg"]
    assert not near["exact"] and 0 <= near["phash_distance"] <= result["settings"]["phash_threshold"]
    assert group["members"][0]["path"].startswith("Training/")  # the training copy first, as prepare keeps it


def test_a_label_conflict_is_reported(audited, sources):
    result = audited[0]
    (gid,) = result["label_conflicts"]
    group = next(g for g in result["duplicate_groups"] if g["id"] == gid)
    assert group["labels"] == ["meningioma_tumor", "normal"]
    assert {m["path"] for m in group["members"]} == {
        f"Training/meningioma/{sources[2]['meningioma0'].name}",
        "Testing/notumor/conflict.jpg",
    }


def test_unreadable_files_are_listed_with_their_reasons(audited):
    result = audited[0]
    reasons = {u["path"]: u["reason"] for u in result["unreadable"]}
    assert set(reasons) == {"Testing/pituitary/truncated.jpg", "Testing/pituitary/text.jpg"}
    assert reasons["Testing/pituitary/truncated.jpg"].startswith("corrupt image")
    assert reasons["Testing/pituitary/text.jpg"].startswith("not an image file")
    assert result["images"]["unreadable"] == 2 and result["images"]["files"] == 15


def test_two_datasets_that_share_an_image_report_one_cross_dataset_group(audited, sources):
    result = audited[0]
    (gid,) = result["cross_dataset_groups"]
    group = next(g for g in result["duplicate_groups"] if g["id"] == gid)
    assert group["datasets"] == ["a", "b"] and group["folders"] == ["a/Training", "b"]
    assert {m["path"] for m in group["members"]} == {
        f"Training/glioma/{sources[2]['glioma2'].name}",
        "glioma_tumor/shared.jpg",
    }
    assert [d["name"] for d in result["datasets"]] == ["a", "b"]
    assert {f["folder"]: f["role"] for f in result["folders"]} == {
        "a/Testing": "test",
        "a/Training": "training",
        "b": "unsplit",
    }


def test_the_audit_writes_json_markdown_and_a_self_contained_html(audited):
    result, out = audited
    record = json.loads((out / "audit.json").read_text())
    for key in ("datasets", "folders", "images", "duplicate_groups", "cross_folder_groups", "cross_dataset_groups"):
        assert key in record
    for key in ("label_conflicts", "test_images_leaked", "unreadable"):
        assert key in record
    assert record["test_images_leaked"] == result["test_images_leaked"]
    md, page = (out / "audit.md").read_text(), (out / "audit.html").read_text()
    assert "(duplicate_pairs.png)" in md and "(leakage_per_class.png)" in md and "2/3 (66.7%)" in md
    sources = re.findall(r'<img[^>]*src="([^"]{0,30})', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    pairs = result["examples"]
    assert pairs and all(p["a"]["folder"] != p["b"]["folder"] for p in pairs)
    assert any(p["a"]["label"] != p["b"]["label"] for p in pairs)  # the conflict is among the examples
    assert Image.open(out / "duplicate_pairs.png").size[0] > 300
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_the_audit_hashes_as_prepare_does(sources, tmp_path):
    """The same groups as prepare's manifest on the same folder: one hashing code, one grouping."""
    from brainmri.data import prepared as data

    a = sources[0]
    preparation.prepare(a, tmp_path / "prep", size=256, workers=1, progress=False)
    manifest = {r["source_path"]: r for r in data.read_manifest(tmp_path / "prep")}
    result = audit_mod.run_audit([a], workers=1, progress=False)
    for g in result["duplicate_groups"]:
        assert {manifest[m["path"]]["group"] for m in g["members"]} == {g["id"]}
    assert (
        len(result["duplicate_groups"])
        == json.loads((tmp_path / "prep" / "prepare.json").read_text())["duplicate_groups"]
    )


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_cli_prints_a_summary_and_replaces_an_audit_only_with_overwrite(sources, tmp_path, capsys):
    a, b, _ = sources
    out = tmp_path / "audit"
    code, printed, _ = _cli(capsys, "data", "audit", str(a), str(b), "--out", str(out), "--no-progress")
    assert code == 0 and "a/Testing" in printed and "3/5 (60.0%)" in printed and "1 cross datasets" in printed
    first = (out / "audit.json").read_bytes()
    code, _, err = _cli(capsys, "data", "audit", str(a), "--out", str(out))
    assert code == 2 and "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "audit.json").read_bytes() == first
    code, _, _ = _cli(capsys, "data", "audit", str(a), "--out", str(out), "--overwrite", "--no-progress")
    assert code == 0 and json.loads((out / "audit.json").read_text())["datasets"][0]["name"] == "a"


def test_bad_input_is_one_line_and_writes_nothing(sources, tmp_path, capsys):
    a, _, _ = sources
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    before = _snapshot(a)
    cases = [
        ([str(tmp_path / "missing")], tmp_path / "o", "source folder not found"),
        ([str(tmp_path / "empty")], tmp_path / "o", "no image files"),
        ([str(a)], a / "audit", "must lie outside the source folder"),
        ([str(a), str(a / "Training")], tmp_path / "o", "overlap"),
        ([str(a)], tmp_path / "notes", "already exists; pass --overwrite"),
        ([str(a), "--overwrite"], tmp_path / "notes", "not an audit folder"),
        ([str(a), "--phash-threshold", "65"], tmp_path / "o", "--phash-threshold must be -1"),
    ]
    for args, out, message in cases:
        code, printed, err = _cli(capsys, "data", "audit", *args, "--out", str(out), "--no-progress")
        assert code == 2 and message in err and len(err.splitlines()) == 1 and not printed, (args, err)
    assert not (tmp_path / "o").exists() and not (a / "audit").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "notes"]  # no partial folders either
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine" and list((tmp_path / "empty").iterdir()) == []
    assert _snapshot(a) == before
