"""The ``brainmri`` command: a thin argparse layer over the Python API.

Every user error surfaces as :class:`brainmri.errors.BrainMRIError`, printed here as one
line on stderr with a non-zero exit status; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from brainmri import __version__, preparation, splitfile, splits
from brainmri.errors import BrainMRIError
from brainmri.files import one_line

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line too, like every other user error (subcommands inherit this)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("brainmri").strip()
        prefix = f"{where}: " if where else ""
        self.exit(EXIT_USER_ERROR, f"brainmri: error: {prefix}{message} (see '{self.prog} -h')\n")


def _int_at_least(low: int):
    """An argparse type: an integer of at least ``low`` (a bad value is a usage error, one line)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _cpu_count(text: str) -> int:
    """An argparse type: a thread count between 1 and the CPUs this process may use."""
    from brainmri.runtime import usable_cpus

    value, limit = _int_at_least(1)(text), usable_cpus()
    if value > limit:
        raise argparse.ArgumentTypeError(f"must be between 1 and {limit} (the CPUs this process may use), got {value}")
    return value


def _positive_mb(text: str) -> float:
    """An argparse type: a finite size in MB above zero (nan and inf are not sizes)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MB, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of MB, got {text!r}")
    return value


# --- data (issue: data) --------------------------------------------------------------


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fetch, prepare and split the dataset")
    p.set_defaults(func=lambda a: p.print_help() or EXIT_USER_ERROR)  # an action is required
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    f = dsub.add_parser("fetch", help="download the public dataset (Bhuvaji et al.) into the cache")
    f.add_argument("--dest", help="folder to unpack into (default: $BRAINMRI_HOME/datasets/brain-tumor-mri-sartaj)")
    f.add_argument("--url", help="archive URL (http(s) or file://)")
    f.add_argument("--sha256", help="expected SHA-256 of the archive")
    f.add_argument(
        "--force",
        action="store_true",
        help="download again, replacing an earlier download of this tool in --dest (never any other folder)",
    )
    f.set_defaults(func=_run_data_fetch)

    pr = dsub.add_parser("prepare", help="grayscale, resize, remove duplicates; write PNGs and manifest.csv")
    pr.add_argument("src", metavar="SRC", help="folder of class folders, optionally under Training/ Testing/ ...")
    pr.add_argument("out", metavar="OUT", help="output folder (must not exist unless --overwrite)")
    pr.add_argument("--size", type=int, default=256, help="output size in pixels (default: 256, as in the paper)")
    pr.add_argument(
        "--phash-threshold",
        type=int,
        default=None,
        help="perceptual-hash Hamming distance at or under which images are near duplicates "
        "(default: 2; -1: exact duplicates only)",
    )
    pr.add_argument("--label-map", help="extra folder names, e.g. 'tumor_g=glioma_tumor,none=normal'")
    pr.add_argument(
        "--workers", type=_int_at_least(1), default=None, help="worker processes (default: all cores, at most 8)"
    )
    pr.add_argument("--overwrite", action="store_true", help="replace an existing prepared OUT")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_groups_flags(pr, "recorded in manifest.csv, so that every later split of OUT keeps each group on one side")
    pr.set_defaults(func=_run_data_prepare)

    sp = dsub.add_parser("split", help="stratified, duplicate-group-aware train/test split or k folds")
    sp.add_argument("prepared", metavar="PREPARED", help="folder made by 'brainmri data prepare'")
    sp.add_argument("--out", help="split file (default: PREPARED/split.csv, or PREPARED/folds_k<K>.csv)")
    sp.add_argument("--test-size", type=float, default=0.2, help="fraction for the test side (default: 0.2)")
    sp.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    sp.add_argument("--k", type=int, default=None, help="make K cross-validation folds instead")
    sp.add_argument(
        "--overwrite", action="store_true", help="replace an existing split file (never manifest.csv or prepare.json)"
    )
    _add_groups_flags(sp, "no group (with its duplicates) crosses the split; default: the groups prepare recorded")
    sp.set_defaults(func=_run_data_split)

    au = dsub.add_parser(
        "audit",
        help="find duplicates, label conflicts and train/test leakage in dataset folders (read-only)",
        description="Hash every image of one or more dataset folders as prepare does, group exact and near "
        "duplicates, and report duplicates within each folder, groups that cross split folders or datasets, "
        "label conflicts, how many test images have a copy in a training folder, and unreadable files. "
        "Writes OUT/audit.json, audit.md and a self-contained audit.html; the sources are only read.",
    )
    au.add_argument(
        "sources",
        nargs="+",
        metavar="SRC",
        help="dataset folder (class folders, optionally under Training/ Testing/ ...); each SRC is one dataset",
    )
    au.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the audit (must not exist unless --overwrite)"
    )
    au.add_argument("--size", type=int, default=256, help="size at which images are hashed (default: 256, as prepare)")
    au.add_argument(
        "--phash-threshold",
        type=int,
        default=None,
        help="perceptual-hash Hamming distance at or under which images are near duplicates "
        "(default: 2, as prepare; -1: exact duplicates only)",
    )
    au.add_argument("--label-map", help="extra folder names, e.g. 'tumor_g=glioma_tumor,none=normal'")
    au.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores, at most 8)")
    au.add_argument("--overwrite", action="store_true", help="replace an existing audit in DIR")
    au.add_argument("--no-progress", action="store_true", help="no progress bar")
    au.set_defaults(func=_run_data_audit)


def _add_groups_flags(p: argparse.ArgumentParser, what: str) -> None:
    from brainmri.config import GROUPS_MISSING

    p.add_argument(
        "--groups",
        metavar="FILE",
        help=f"CSV of file,group (e.g. a patient ID; file relative to SRC, as the manifest's source_path): {what}",
    )
    p.add_argument(
        "--groups-missing",
        choices=GROUPS_MISSING,
        default="error",
        help="files the --groups CSV lacks: error (default) or singleton (each its own group)",
    )


def _run_data_fetch(args: argparse.Namespace) -> int:
    from brainmri.fetch import DEFAULT_URL, fetch

    path = fetch(args.dest, url=args.url or DEFAULT_URL, force=args.force, sha256=args.sha256)
    print(path)
    return 0


def _run_data_prepare(args: argparse.Namespace) -> int:

    threshold = preparation.PHASH_THRESHOLD if args.phash_threshold is None else args.phash_threshold
    summary = preparation.prepare(
        args.src,
        args.out,
        size=args.size,
        phash_threshold=threshold,
        label_map=args.label_map,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        groups=args.groups,
        groups_missing=args.groups_missing,
    )
    print(preparation.format_summary(summary))
    print(f"wrote {args.out} in {summary['seconds']:.1f} s")
    return 0


def _run_data_split(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainmri import data

    path = splits.split(
        args.prepared,
        args.out,
        test_size=args.test_size,
        seed=args.seed,
        k=args.k,
        groups=args.groups,
        groups_missing=args.groups_missing,
        overwrite=args.overwrite,
    )
    rows = splitfile.read_split(path)
    if args.k is not None:
        counts = ", ".join(f"fold {i}: {sum(r['fold'] == str(i) for r in rows)}" for i in range(args.k))
    else:
        counts = f"train {sum(r['side'] == 'train' for r in rows)}, test {sum(r['side'] == 'test' for r in rows)}"
    level = "patient" if args.groups or data.has_patient_groups(args.prepared) else "duplicate group"
    print(f"wrote {Path(path)} ({counts}; split level: {level})")
    return 0


def _run_data_audit(args: argparse.Namespace) -> int:
    from brainmri.auditreport import audit, format_summary

    result = audit(
        args.sources,
        args.out,
        size=args.size,
        phash_threshold=preparation.PHASH_THRESHOLD if args.phash_threshold is None else args.phash_threshold,
        label_map=args.label_map,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(format_summary(result))
    print(f"wrote {args.out}/audit.json, audit.md and audit.html in {result['seconds']:.1f} s")
    return 0


# --- train -------------------------------------------------------------------------


def add_training_flags(p: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """One flag per :class:`TrainConfig` field, generated from its metadata (help, choices),
    so that ``train`` and ``compare`` cannot drift apart. Unset flags stay out of the
    namespace: flags > --config file > defaults."""
    import typing

    from brainmri.config import TrainConfig, cli_fields

    hints = typing.get_type_hints(TrainConfig)
    for f in cli_fields():
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        kind = next((k for k in typing.get_args(hints[f.name]) if k is not type(None)), hints[f.name])
        options: dict = {"default": argparse.SUPPRESS, "help": meta["help"]}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            if meta.get("choices"):
                options["choices"] = meta["choices"]
            if meta.get("metavar"):
                options["metavar"] = meta["metavar"]
        p.add_argument(flag, dest=f.name, **options)


def train_config_from_args(args: argparse.Namespace, base: dict | None = None):
    """TrainConfig from defaults (or ``base``, a preset), then the --config file, then the
    flags actually given."""
    from brainmri.config import TrainConfig, cli_fields, load_config_file

    values = TrainConfig().to_dict()
    values.update(base or {})
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    names = {f.name for f in cli_fields()}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return TrainConfig.from_dict(values)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a classifier (the paper's settings by default)",
        description="Train a ResNet (or any torchvision classifier) with the paper's head on a prepared folder. "
        "Settings: defaults < --config FILE < flags. Runs under torchrun for several processes/GPUs.",
    )
    p.add_argument("--config", metavar="FILE", help="JSON or YAML file of settings (see a run's config.json)")
    add_training_flags(p)
    p.add_argument("--runs-dir", default="runs", help="parent of run folders (runs)")
    p.add_argument("--name", help="run folder name (default: <arch>-<weights>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run --name from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from brainmri.files import plain_name
    from brainmri.train import default_run_name, train

    config = train_config_from_args(args)
    if args.resume and not args.name:
        raise BrainMRIError("--resume needs --name of the run to continue")
    if args.name is not None:  # a name is one folder inside --runs-dir, never a path out of it
        plain_name(args.name, "--name")
    run_dir = Path(args.runs_dir) / (args.name or default_run_name(config))
    run_dir = train(config, run_dir, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":
        print(run_dir)
    return 0


# --- evaluate, compare, reproduce ----------------------------------------------------


def add_evaluate_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="metrics, confidence intervals and figures for a trained run",
        description="Evaluate a run's best checkpoint on its held-out split, or on any labelled folder "
        "(read with the same label aliases and preprocessing as training). Writes metrics.json, "
        "predictions.csv and figures; prints the metrics as a table.",
    )
    ev.add_argument("run", metavar="RUN", help="run folder made by 'brainmri train'")
    ev.add_argument("--data", help="labelled folder of class folders to evaluate on instead of the held-out split")
    ev.add_argument("--label-map", help="extra folder names for --data, e.g. 'tumor_g=glioma_tumor,none=normal'")
    ev.add_argument("--name", help="name of the evaluation folder RUN/eval/NAME (default: the folder's name)")
    ev.add_argument(
        "--keep-overlap",
        action="store_true",
        help="with --data: keep images that duplicate the run's training data (they are left out by default)",
    )
    ev.add_argument(
        "--bootstrap",
        type=_int_at_least(0),
        default=1000,
        help="bootstrap resamples for the 95%% CIs (default: 1000; 0: no CIs)",
    )
    ev.add_argument("--batch-size", type=int, default=64, help="images per inference batch (default: 64)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    ev.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation's outputs")
    ev.set_defaults(func=_run_evaluate)

    cmp = sub.add_parser(
        "compare",
        help="train and evaluate several architectures on one split, write report.md/report.html",
        description="The paper's experiment: train several architectures on the same prepared data, split "
        "and settings, evaluate them and write a side-by-side report. Rerunning resumes.",
    )
    cmp.add_argument("--data", required=True, help="prepared folder (made by 'brainmri data prepare')")
    cmp.add_argument("--out", default="comparison", help="comparison folder (default: ./comparison)")
    cmp.add_argument("--archs", default="resnet50,resnet101,resnet152", help="comma-separated architectures")
    cmp.add_argument("--cv", type=int, help="stratified group K-fold cross-validation instead of one split")
    cmp.add_argument("--config", help="JSON/YAML file of training settings (flags override it)")
    add_training_flags(cmp, exclude=("data", "split", "fold", "arch"))
    cmp.add_argument(
        "--external",
        action="append",
        metavar="DIR",
        default=[],
        help="labelled folder from other sources on which every model is also evaluated (repeatable; never "
        "trained or tuned on)",
    )
    cmp.add_argument("--bootstrap", type=_int_at_least(0), default=1000, help="bootstrap resamples (default: 1000)")
    cmp.add_argument("--no-progress", action="store_true", help="no progress bars")
    cmp.set_defaults(func=_run_compare)

    rep = sub.add_parser(
        "reproduce",
        help="fetch, prepare and compare ResNet-50/101/152 as in the paper; prints the report's path",
        description="Reproduce the paper in one command: fetch the dataset (or use --data), prepare it, "
        "train and evaluate the architectures, and write a report. '--preset quick' finishes on a CPU "
        "in minutes; '--preset paper' (default) uses the published settings.",
    )
    rep.add_argument("--data", help="dataset folder of class folders (default: download the public dataset)")
    rep.add_argument(
        "--preset",
        default="paper",
        choices=("paper", "scratch", "quick"),
        help="paper (default: the published settings, ImageNet weights), scratch (ResNets from scratch with the "
        "recipe measured here, for machines without ImageNet weights) or quick (that recipe at a small size, "
        "minutes on a CPU)",
    )
    rep.add_argument("--out", default="reproduce", help="work folder (default: ./reproduce)")
    rep.add_argument("--archs", help="comma-separated architectures (default: resnet50,resnet101,resnet152)")
    rep.add_argument("--weights", help="imagenet, none (from scratch) or PATH (default: the preset's)")
    rep.add_argument("--epochs", type=int, help="epochs (default: the preset's)")
    rep.add_argument("--image-size", type=int, help="image size in pixels (default: the preset's)")
    rep.add_argument("--limit-per-class", type=int, help="images per class and side (default: the preset's)")
    rep.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    rep.add_argument("--cv", type=int, help="stratified group K-fold cross-validation instead of one split")
    rep.add_argument("--seed", type=int, help="seed of the split and training (default: 42)")
    rep.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    rep.add_argument(
        "--external",
        action="append",
        metavar="DIR",
        default=[],
        help="labelled folder from other sources on which every model is also evaluated (repeatable)",
    )
    rep.add_argument(
        "--leakage",
        action="store_true",
        help="also train on the paper's random split (duplicates kept) and report both side by side",
    )
    rep.add_argument("--leakage-archs", help="architectures of the random-split run (default: those of --archs)")
    rep.add_argument("--bootstrap", type=_int_at_least(0), default=1000, help="bootstrap resamples (default: 1000)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    rep.set_defaults(func=_run_reproduce)


def _archs(text: str | None) -> list[str] | None:
    if text is None:
        return None
    archs = [a.strip() for a in text.split(",") if a.strip()]
    if not archs:
        raise BrainMRIError("--archs is empty; give e.g. resnet50,resnet101,resnet152")
    return archs


def _run_evaluate(args: argparse.Namespace) -> int:
    from brainmri.evaluate import evaluate_run, format_table

    metrics = evaluate_run(
        args.run,
        data=args.data,
        label_map=args.label_map,
        name=args.name,
        n_bootstrap=args.bootstrap,
        batch_size=args.batch_size,
        device=args.device,
        keep_overlap=args.keep_overlap,
        overwrite=args.overwrite,
    )
    print(format_table(metrics))
    where = metrics["figures"]["confusion_matrix.png"].rsplit("/", 1)[0] if metrics.get("figures") else args.run
    print(f"\nmetrics.json, predictions.csv and figures written to {where}")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from brainmri.experiments import compare

    config = train_config_from_args(args)
    report = compare(
        args.data,
        args.out,
        config,
        archs=_archs(args.archs),
        cv=args.cv,
        n_bootstrap=args.bootstrap,
        progress=not args.no_progress,
        meta={"n_bootstrap": args.bootstrap},
        externals=args.external,
    )
    print(report.with_name("report.md"))
    print(report)
    return 0


def _run_reproduce(args: argparse.Namespace) -> int:
    from brainmri.experiments import reproduce

    report = reproduce(
        data=args.data,
        preset=args.preset,
        out=args.out,
        archs=_archs(args.archs),
        cv=args.cv,
        n_bootstrap=args.bootstrap,
        progress=not args.no_progress,
        externals=args.external,
        leakage=args.leakage,
        leakage_archs=_archs(args.leakage_archs),
        weights=args.weights,
        epochs=args.epochs,
        image_size=args.image_size,
        limit_per_class=args.limit_per_class,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
    )
    print(report.with_name("report.md"))
    print(report)
    return 0


# --- predict, export, info -----------------------------------------------------------


def add_predict_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify MRI slices (files, folders, globs) with a trained model",
        description="Classify JPEG, PNG, TIFF, BMP and DICOM slices with the preprocessing used in training. "
        "Prints a table; a file that cannot be read gets its own row with the reason, and the exit status is 1 "
        "if any file failed. Research software, not a medical device.",
    )
    p.add_argument("model", help="checkpoint (.pt), run folder (uses checkpoints/best.pt) or .onnx export")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("--output", "-o", default=None, help="also write the results to FILE.csv or FILE.json")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    p.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (default) or onnx (ONNX Runtime; an .onnx model always uses it)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--threads",
        type=_cpu_count,
        default=None,
        help="CPU threads for inference (default and most: the CPUs this process may use)",
    )
    p.add_argument("--explain", metavar="DIR", default=None, help="write a Grad-CAM panel per image into DIR")
    p.add_argument(
        "--target-class", default=None, help="with --explain: class to explain (default: the predicted class)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="do not print the table")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file or --explain panels")
    p.set_defaults(func=_run_predict)

    e = sub.add_parser(
        "export",
        help="export a model to ONNX with its model card embedded",
        description="Export a checkpoint to ONNX (input 'image' float32 (N,1,H,W) in [0,1], outputs 'logits' and "
        "'probabilities', dynamic batch), with the model card as JSON in the metadata (key brainmri_card).",
    )
    e.add_argument("model", help="checkpoint (.pt) or run folder")
    e.add_argument("--format", default="onnx", choices=("onnx",), help="export format (default: onnx)")
    e.add_argument("--output", "-o", default=None, help="output file (default: beside the checkpoint, .onnx)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file (and its .int8.onnx)")
    e.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    e.add_argument("--legacy", action="store_true", help="use the TorchScript exporter instead of the torch.export one")
    e.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="also write an int8 model (FILE.int8.onnx, static quantisation) and report its agreement with float32",
    )
    e.add_argument(
        "--calibration",
        nargs="+",
        metavar="PATH",
        default=None,
        help="with --quantize: real slices (files, folders, globs); half calibrate, half check agreement",
    )
    e.set_defaults(func=_run_export)

    i = sub.add_parser(
        "info",
        help="print a model's card",
        description="Print the model card of a checkpoint, run folder or .onnx export: classes, preprocessing, "
        "architecture, weights origin, training data, split, metrics, intended use and notice.",
    )
    i.add_argument("model", help="checkpoint (.pt), run folder or .onnx export")
    i.add_argument("--json", action="store_true", help="print the card as JSON")
    i.set_defaults(func=_run_info)


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainmri.files import check_output
    from brainmri.paths import expand_paths
    from brainmri.predict import Predictor, format_table, iter_predictions, write_predictions

    if args.output is not None and Path(args.output).suffix.lower() not in (".csv", ".json"):
        raise BrainMRIError(f"--output must end in .csv or .json, not {Path(args.output).name!r}")
    if args.batch_size < 1:
        raise BrainMRIError("--batch-size must be at least 1")
    if args.target_class is not None and args.explain is None:
        raise BrainMRIError("--target-class only makes sense with --explain DIR")
    paths = expand_paths(args.paths)
    # Every output is checked before the work: a bad or existing one must not cost a whole batch.
    if args.output is not None:
        check_output(args.output, args.overwrite)
    explain_dir = Path(args.explain) if args.explain is not None else None
    panels = _panel_names(paths) if explain_dir is not None else []
    if explain_dir is not None:
        _check_explain_dir(explain_dir, panels, args.overwrite)
    predictor = Predictor(args.model, device=args.device, backend=args.backend, threads=args.threads)
    if args.target_class is not None and args.target_class not in predictor.classes:
        raise BrainMRIError(f"unknown --target-class {args.target_class!r}; classes: {', '.join(predictor.classes)}")
    if explain_dir is not None and predictor.model is None:
        raise BrainMRIError("--explain needs the PyTorch checkpoint, not an .onnx file")
    if explain_dir is not None:
        try:
            explain_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BrainMRIError(f"cannot create --explain folder {explain_dir}: {exc.strerror or exc}") from None
    rows = []
    for i, (row, array) in enumerate(iter_predictions(predictor, paths, args.batch_size)):
        rows.append(row)
        if explain_dir is not None and array is not None:
            panel = predictor.explain_panel(array, args.target_class, title=Path(row.name).name)
            try:
                panel.save(explain_dir / panels[i])
            except OSError as exc:
                raise BrainMRIError(f"cannot write {explain_dir / panels[i]}: {exc.strerror or exc}") from None
    if not args.quiet:
        print(format_table(rows, predictor.classes))
    if args.output is not None:
        write_predictions(args.output, rows, predictor.classes, predictor.card)
    flagged = sum(bool(r.input_warning) for r in rows)
    if flagged:
        print(
            f"brainmri: {flagged} of {len(rows)} images are not like the training images (see the warnings)",
            file=sys.stderr,
        )
    failed = sum(not r.ok for r in rows)
    if failed:
        print(f"brainmri: {failed} of {len(rows)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


def _panel_names(paths: Sequence) -> list[str]:
    """One Grad-CAM panel name per input (``<stem>_gradcam.png``, numbered when stems repeat),
    fixed before the work so that existing panels can be checked up front."""
    used: set[str] = set()
    names = []
    for path in paths:
        stem = path.stem
        name, n = f"{stem}_gradcam.png", 1
        while name in used:
            n += 1
            name = f"{stem}_{n}_gradcam.png"
        used.add(name)
        names.append(name)
    return names


def _check_explain_dir(folder, panels: Sequence[str], overwrite: bool) -> None:
    """Refuse, before the work, panels that exist (unless ``overwrite``) or a folder that cannot be written."""
    from brainmri.files import check_output, shown

    existing = [name for name in panels if (folder / name).exists()] if folder.is_dir() else []
    if existing and not overwrite:
        raise BrainMRIError(
            f"--explain folder {shown(folder)} already holds {len(existing)} of these panels "
            f"({shown(existing[0])}{', ...' if len(existing) > 1 else ''}); pass --overwrite to replace them"
        )
    check_output(folder / panels[0], overwrite=True)  # can be created and written at all


def _run_export(args: argparse.Namespace) -> int:
    from brainmri.export import default_output, export_model, load_calibration, load_onnx, quantize_int8
    from brainmri.paths import expand_paths

    if args.quantize and not args.calibration:
        raise BrainMRIError("--quantize int8 needs --calibration PATH... (real slices, e.g. the training folder)")
    if args.calibration and not args.quantize:
        raise BrainMRIError("--calibration only makes sense with --quantize int8")
    if args.quantize and args.opset < 13:
        raise BrainMRIError(f"--quantize int8 needs --opset 13 or newer, got {args.opset}")
    if args.calibration:
        expand_paths(args.calibration)  # fail before the slow export
    if args.quantize:  # both outputs are checked before the slow export
        from brainmri.files import check_output

        target = args.output if args.output is not None else default_output(args.model)
        check_output(default_output(target, quantize=args.quantize), args.overwrite)
    out = export_model(
        args.model, args.output, fmt=args.format, opset=args.opset, dynamo=not args.legacy, overwrite=args.overwrite
    )
    print(out)
    if args.quantize:
        card = load_onnx(out)[1]
        arrays = load_calibration(
            args.calibration,
            int(card["image_size"]),
            via=card.get("prepared_size"),
            warn=lambda message: print(f"brainmri: {message}", file=sys.stderr),
        )
        qout = default_output(out, quantize=args.quantize)
        check = quantize_int8(out, qout, arrays, overwrite=args.overwrite)
        print(qout)
        print(
            f"int8 vs float32 on {check['images']} held-out calibration slices: top-1 agreement "
            f"{check['top1_agreement']:.1%}, largest probability difference "
            f"{check['max_abs_probability_difference']:.4f}"
        )
    return 0


def _run_info(args: argparse.Namespace) -> int:
    import json

    from brainmri.export import format_card, read_card

    card = read_card(args.model)
    print(json.dumps(card, indent=2, sort_keys=True) if args.json else format_card(card))
    return 0


# --- bench ---------------------------------------------------------------------------


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure training, data, preparation and inference speed against a naive baseline",
        description="Measure, in one run, training throughput of our pipeline and of a naive torchvision "
        "baseline, the data pipeline alone, the matmul peak and the fraction of it training reaches, "
        "inference latency/throughput (PyTorch and ONNX Runtime), prepare throughput and peak memory. "
        "Prints a table and writes JSON.",
    )
    p.add_argument(
        "--data",
        help="folder of class sub-folders of real slices (default: ../shared/datasets/brain-tumor-mri-sartaj "
        "if it exists)",
    )
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--quick", action="store_true", help="a reduced run of about a minute (resnet50, few steps)")
    p.add_argument("--archs", help="comma-separated architectures to train (default: resnet50,resnet101,resnet152)")
    p.add_argument("--image-size", type=int, default=256, help="image size in pixels (default: 256)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: 8 on CPU, 32 on GPU; --quick 4)")
    p.add_argument("--warmup", type=int, help="untimed training steps first (default: 1 on CPU, 10 on GPU)")
    p.add_argument("--steps", type=int, help="timed training steps (default: 4 on CPU, 40 on GPU)")
    p.add_argument(
        "--baseline-workers", type=int, help="DataLoader workers of the baseline (default: 0 on CPU, up to 8 on GPU)"
    )
    p.add_argument("--infer-arch", default="resnet50", help="architecture for the inference timings")
    p.add_argument("--json", default="bench.json", help="where to write the results (default: %(default)s)")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from brainmri.bench import format_table, run_bench, write_json

    result = run_bench(
        data=args.data,
        device=args.device,
        quick=args.quick,
        archs=[a.strip() for a in args.archs.split(",") if a.strip()] if args.archs else None,
        image_size=args.image_size,
        batch_size=args.batch_size,
        warmup=args.warmup,
        steps=args.steps,
        baseline_workers=args.baseline_workers,
        infer_arch=args.infer_arch,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(format_table(result))
    print(f"wrote {write_json(result, args.json)}")
    return 0


# --- serve ---------------------------------------------------------------------------


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="local web app and REST API to try a model on MRI slices",
        description="Serve a web page and a JSON API (POST /api/predict, GET /api/model, GET /health, /docs) "
        "for one model, loaded once at start. Uploads are analysed in memory, never written to disk.",
    )
    p.add_argument("model", help="checkpoint (.pt), run folder with checkpoints/best.pt, or .onnx export")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--token",
        default=None,
        help="require this token on every API call (Authorization: Bearer TOKEN); needed for any host but "
        "loopback; defaults to $BRAINMRI_SERVE_TOKEN",
    )
    p.add_argument("--max-mb", type=_positive_mb, default=20.0, help="size limit per uploaded file in MB (default: 20)")
    p.add_argument("--max-files", type=int, default=16, help="files per request (default: 16)")
    p.add_argument("--workers", type=_cpu_count, default=None, help="inference threads (default: 2, at most the CPUs)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a request's headers must arrive, and its body may pause, within this time (default: 10)",
    )
    p.add_argument("--max-connections", type=int, default=64, help="open connections at once (default: 64)")
    p.add_argument(
        "--max-per-client",
        type=int,
        default=16,
        help="open connections from one address (default: 16); at a cap, the longest-idle one makes room",
    )
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import os

    from brainmri.runtime import usable_cpus
    from brainmri.serve import LOOPBACK_NAMES, TOKEN_ENV, is_loopback, serve
    from brainmri.serve_guard import Limits

    if is_loopback(args.host) and args.host.strip("[]") not in LOOPBACK_NAMES:
        # The service answers only Host headers that name this machine's usual loopback names.
        raise BrainMRIError(
            f"--host {args.host}: on loopback the service answers requests to {', '.join(LOOPBACK_NAMES)} only; "
            "use one of those"
        )
    for flag, value in (("--max-connections", args.max_connections), ("--max-per-client", args.max_per_client)):
        if value < 1:
            raise BrainMRIError(f"{flag} must be at least 1, got {value}")
    if not 0 < args.read_timeout < float("inf"):  # also refuses nan
        raise BrainMRIError(f"--read-timeout must be a positive number of seconds, got {args.read_timeout}")
    limits = Limits(
        header_timeout=args.read_timeout,
        body_timeout=args.read_timeout,
        max_connections=args.max_connections,
        max_per_client=args.max_per_client,
    )
    serve(
        args.model,
        host=args.host,
        port=args.port,
        token=args.token if args.token is not None else os.environ.get(TOKEN_ENV),
        max_bytes=int(args.max_mb * 1024 * 1024),
        max_files=args.max_files,
        workers=args.workers if args.workers is not None else min(2, usable_cpus()),
        device=args.device,
        limits=limits,
    )
    return 0


# --- calibrate (the input check) ---------------------------------------------------------


def add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibrate the input check (is an image like the training images?) on a finished run",
        description="Fit the input check's statistics on a run's training side and set its threshold (a "
        "percentile of training-side scores); stores both in checkpoints/best.pt and its card. Training does "
        "this at its end; runs trained earlier get it here. --measure also counts the images flagged among "
        "non-MRI images (scikit-image's samples, made-up ones), the run's test side and an external folder.",
    )
    p.add_argument("run", metavar="RUN", help="run folder made by 'brainmri train'")
    p.add_argument("--data", help="the run's prepared folder, if it has moved since training")
    p.add_argument("--percentile", type=float, default=99.5, help="threshold percentile (default: 99.5)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    p.add_argument("--overwrite", action="store_true", help="calibrate again a run that is calibrated")
    p.add_argument("--measure", metavar="EXTERNAL", help="then measure the shares flagged, with this MRI folder")
    p.set_defaults(func=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from brainmri.export import read_card
    from brainmri.input_check import calibrate_input_check

    if args.measure is None or args.overwrite or not read_card(args.run).get("input_check"):
        entry = calibrate_input_check(
            args.run,
            data=args.data,
            device=args.device,
            batch_size=args.batch_size,
            percentile=args.percentile,
            overwrite=args.overwrite,
        )
        print(
            f"input check calibrated on {entry['calibrated_on']['images']} training images: threshold "
            f"{entry['threshold']:.2f} (percentile {entry['percentile']:g} of cross-fitted training scores)"
        )
    if args.measure is not None:
        from brainmri.input_check_measure import format_measure, measure_input_check

        device = "cpu" if args.device == "auto" else args.device
        print(format_measure(measure_input_check(args.run, args.measure, device=device)))
    return 0


# --- entry point ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="brainmri",
        description="Train, evaluate and deploy ResNet classifiers for brain tumours on MRI slices. "
        "Research software, not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"brainmri {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        add_data_parser,
        add_train_parser,
        add_evaluate_parsers,
        add_predict_parsers,
        add_bench_parser,
        add_serve_parser,
        add_calibrate_parser,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (one line, see _Parser), --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except BrainMRIError as exc:  # one line, whatever file names the message carries
        print(f"brainmri: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `brainmri info RUN | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the environment (permissions, a full disk), not a bug: one line too
        where = f": {exc.filename}" if exc.filename else ""
        print(f"brainmri: error: {one_line(f'{exc.strerror or exc}{where}')}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("brainmri: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
