"""``brainmri train``, ``evaluate``, ``compare``, ``reproduce`` and ``calibrate``: the
experiments, as thin layers over :mod:`brainmri.training.run`, :mod:`brainmri.evaluation.evaluate` and
:mod:`brainmri.experiments.compare`."""

from __future__ import annotations

import argparse

from brainmri.cli.args import add_training_flags, arch_list, int_at_least, train_config_from_args
from brainmri.errors import BrainMRIError


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

    config = train_config_from_args(args)
    if args.resume and not args.name:
        raise BrainMRIError("--resume needs --name of the run to continue")
    if args.name is not None:  # a name is one folder inside --runs-dir, never a path out of it
        plain_name(args.name, "--name")
    # PyTorch and the models only once the settings hold: a mistake is a line at once.
    from brainmri.training.records import default_run_name
    from brainmri.training.run import train

    run_dir = Path(args.runs_dir) / (args.name or default_run_name(config))
    run_dir = train(config, run_dir, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":
        print(run_dir)
    return 0


def add_evaluate_parsers(sub: argparse._SubParsersAction) -> None:
    """``evaluate``, then ``compare`` and ``reproduce``, in the order ``--help`` lists them."""
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
        "--boxes",
        metavar="CSV",
        help="with --data: tumour boxes of that folder (file,label,x_center,y_center,width,height,half); scores where "
        "the explanations point (pointing game, energy in the box) for several methods, chooses one on the 'select' "
        "half and stores it with its 'report'-half score in the model card",
    )
    ev.add_argument(
        "--keep-overlap",
        action="store_true",
        help="with --data: keep images that duplicate the run's training data (they are left out by default)",
    )
    ev.add_argument(
        "--bootstrap",
        type=int_at_least(0),
        default=1000,
        help="bootstrap resamples for the 95%% CIs (default: 1000; 0: no CIs)",
    )
    ev.add_argument("--batch-size", type=int, default=64, help="images per inference batch (default: 64)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    ev.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation's outputs")
    ev.set_defaults(func=_run_evaluate)
    add_compare_parser(sub)
    add_reproduce_parser(sub)


def _add_finished_only(parser: argparse.ArgumentParser) -> None:
    """``--finished-only``, the same for compare and reproduce."""
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing: write the report from the runs that have finished, naming those left out",
    )


def _add_jobs(parser: argparse.ArgumentParser, default: int | None = 1, more: str = "") -> None:
    parser.add_argument(
        "--jobs",
        type=int,
        default=default,
        help="trainings at once on a CPU machine, each with an equal share of the cores, largest architectures "
        f"first; on 2 cores 2 finish a grid of small images sooner (default: {more or default})",
    )


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
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
    cmp.add_argument(
        "--seeds",
        type=int,
        help="train each architecture N times on the one split, with seeds --seed, --seed+1, ...; the report gives "
        "mean and SD and the paired differences between architectures",
    )
    _add_finished_only(cmp)
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
    cmp.add_argument(
        "--boxes",
        metavar="CSV",
        help="tumour boxes of an --external folder (its boxes.csv): every run's explanations are scored against them",
    )
    cmp.add_argument("--bootstrap", type=int_at_least(0), default=1000, help="bootstrap resamples (default: 1000)")
    _add_jobs(cmp)
    cmp.add_argument("--no-progress", action="store_true", help="no progress bars")
    cmp.set_defaults(func=_run_compare)


def add_reproduce_parser(sub: argparse._SubParsersAction) -> None:
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
    rep.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    rep.add_argument(
        "--progressive",
        metavar="SPEC",
        help="smaller images in the first epochs, SIZE:FRACTION,... (default: the preset's; none: every epoch at "
        "the preset's size, as the scratch preset trained before it adopted 64:0.35,96:0.3)",
    )
    rep.add_argument(
        "--fused-optimizer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the optimiser's update in one fused kernel: faster, rounded differently (default: the preset's)",
    )
    rep.add_argument("--cv", type=int, help="stratified group K-fold cross-validation instead of one split")
    rep.add_argument(
        "--seeds",
        type=int,
        help="train each architecture N times on the one split (seeds --seed, --seed+1, ...); mean, SD and paired "
        "differences in the report",
    )
    _add_finished_only(rep)
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
        help="also run the controlled leakage study: a duplicate-aware arm and a random arm (duplicates kept) with "
        "the same training size, class mix and steps, scored on one common copy-free test set and the external "
        "folders",
    )
    rep.add_argument("--leakage-archs", help="architecture of the leakage study (default: the first of --archs)")
    rep.add_argument(
        "--leakage-seeds", type=int, help="seeds of each arm of the leakage study (default: --seeds, else 3)"
    )
    rep.add_argument(
        "--boxes",
        metavar="CSV",
        help="tumour boxes of an --external folder (its boxes.csv): every run's explanations are scored against them",
    )
    rep.add_argument("--bootstrap", type=int_at_least(0), default=1000, help="bootstrap resamples (default: 1000)")
    _add_jobs(rep, None, "2 for the quick preset on a CPU with 2 cores or more, else 1")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    rep.set_defaults(func=_run_reproduce)


def _run_evaluate(args: argparse.Namespace) -> int:
    from brainmri.evaluation.evaluate import evaluate_run, format_table

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
        boxes=args.boxes,
    )
    print(format_table(metrics))
    where = metrics["figures"]["confusion_matrix.png"].rsplit("/", 1)[0] if metrics.get("figures") else args.run
    print(f"\nmetrics.json, predictions.csv and figures written to {where}")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from brainmri.experiments.compare import compare

    config = train_config_from_args(args)
    report = compare(
        args.data,
        args.out,
        config,
        archs=arch_list(args.archs) or (),  # --archs has a default: never None here
        cv=args.cv,
        seeds=args.seeds,
        boxes=args.boxes,
        finished_only=args.finished_only,
        n_bootstrap=args.bootstrap,
        progress=not args.no_progress,
        meta={"n_bootstrap": args.bootstrap},
        externals=args.external,
        jobs=args.jobs,
    )
    print(report.with_name("report.md"))
    print(report)
    return 0


def _run_reproduce(args: argparse.Namespace) -> int:
    from brainmri.experiments.reproduce import reproduce

    report = reproduce(
        data=args.data,
        preset=args.preset,
        out=args.out,
        archs=arch_list(args.archs),
        cv=args.cv,
        seeds=args.seeds,
        boxes=args.boxes,
        n_bootstrap=args.bootstrap,
        progress=not args.no_progress,
        externals=args.external,
        leakage=args.leakage,
        leakage_archs=arch_list(args.leakage_archs),
        leakage_seeds=args.leakage_seeds,
        finished_only=args.finished_only,
        jobs=args.jobs,
        weights=args.weights,
        epochs=args.epochs,
        image_size=args.image_size,
        limit_per_class=args.limit_per_class,
        batch_size=args.batch_size,
        lr=args.lr,
        progressive=args.progressive,
        fused_optimizer=args.fused_optimizer,
        seed=args.seed,
        device=args.device,
    )
    print(report.with_name("report.md"))
    print(report)
    return 0


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
    from brainmri.inference.export import read_card
    from brainmri.inference.input_check import calibrate_input_check

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
            f"{entry['threshold']:.2f} (percentile {entry['percentile']:g} of cross-fitted training scores); "
            f"image statistics threshold {entry['image_statistics']['threshold']:.2f}"
        )
    if args.measure is not None:
        from brainmri.evaluation.input_check_measure import format_measure, measure_input_check

        device = "cpu" if args.device == "auto" else args.device
        print(format_measure(measure_input_check(args.run, args.measure, device=device)))
    return 0
