"""``brainmri predict``, ``export`` and ``info``: using a trained model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from brainmri.cli.args import cpu_count
from brainmri.errors import BrainMRIError


def add_predict_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify MRI slices (files, folders, globs) with a trained model",
        description="Classify JPEG, PNG, TIFF, BMP and DICOM slices with the preprocessing used in training. "
        "Prints a table; a file that cannot be read gets its own row with the reason, and the exit status is 1 "
        "if any file failed. Research software, not a medical device.",
    )
    p.add_argument(
        "model", help="checkpoint (.pt), run folder (uses checkpoints/best.pt), folder export or .onnx export"
    )
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
        type=cpu_count,
        default=None,
        help="CPU threads for inference (default and most: the CPUs this process may use)",
    )
    p.add_argument(
        "--explain",
        metavar="DIR",
        default=None,
        help="write an explanation panel per image into DIR (the method the model card names, chosen by 'evaluate "
        "--boxes'; else gradcam@layer4)",
    )
    p.add_argument(
        "--explain-method",
        metavar="METHOD",
        default=None,
        help="with --explain: another method, e.g. 'layercam@layer3' or 'gradcam@layer4 x2' (methods gradcam, "
        "gradcam++, layercam, hirescam; layers layer4, layer3, layer2; x2 enlarges the input first)",
    )
    p.add_argument(
        "--target-class", default=None, help="with --explain: class to explain (default: the predicted class)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="do not print the table")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file or --explain panels")
    p.set_defaults(func=_run_predict)

    e = sub.add_parser(
        "export",
        help="export a model to ONNX with its model card embedded, or to a folder (safetensors and JSON)",
        description="Export a checkpoint to ONNX (input 'image' float32 (N,1,H,W) in [0,1], outputs 'logits' and "
        "'probabilities', dynamic batch), with the model card as JSON in the metadata (key brainmri_card); or, with "
        "--format folder, to a folder of config.json (the model card), model.safetensors (the weights) and "
        "README.md, which predict and serve take as the model and which loads without unpickling anything.",
    )
    e.add_argument("model", help="checkpoint (.pt) or run folder")
    e.add_argument("--format", default="onnx", choices=("onnx", "folder"), help="export format (default: onnx)")
    e.add_argument(
        "--output",
        "--out",
        "-o",
        default=None,
        help="output file (default: beside the checkpoint, .onnx); with --format folder the folder (required)",
    )
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
    i.add_argument("model", help="checkpoint (.pt), run folder, folder export or .onnx export")
    i.add_argument("--json", action="store_true", help="print the card as JSON")
    i.set_defaults(func=_run_info)


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainmri.files import check_output
    from brainmri.inference.predictor import Predictor, format_table, iter_predictions, write_predictions
    from brainmri.io.paths import expand_paths

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
    if args.explain_method is not None and args.explain is None:
        raise BrainMRIError("--explain-method only makes sense with --explain DIR")
    method = None
    if args.explain_method is not None:
        from brainmri.inference.explain import Explainer

        method = Explainer.parse(args.explain_method)  # a bad name is one line, before any model is loaded
    predictor = Predictor(args.model, device=args.device, backend=args.backend, threads=args.threads)
    if method is not None:
        predictor.explainer = method
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
    from brainmri.files import one_line
    from brainmri.inference.export import default_output, export_model, load_calibration, load_onnx, quantize_int8
    from brainmri.io.paths import expand_paths

    if args.format == "folder" and args.quantize:
        raise BrainMRIError("--quantize int8 is for --format onnx")
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
            warn=lambda message: print(f"brainmri: {one_line(message)}", file=sys.stderr),
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

    from brainmri.inference.export import format_card, read_card

    card = read_card(args.model)
    print(json.dumps(card, indent=2, sort_keys=True) if args.json else format_card(card))
    return 0
