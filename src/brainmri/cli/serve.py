"""``brainmri serve`` and ``brainmri bench``: the local web app and the speed measurements."""

from __future__ import annotations

import argparse
import sys

from brainmri.bench.budget import DEFAULT_BUDGET_MINUTES
from brainmri.cli.args import cpu_count, positive_mb
from brainmri.errors import BrainMRIError


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
    p.add_argument("--warmup", type=int, help="untimed training steps first (default: at most 2 on CPU, 10 on GPU)")
    p.add_argument("--steps", type=int, help="timed training steps per timing (default: at most 6 on CPU, 20 on GPU)")
    p.add_argument(
        "--pairs",
        type=int,
        help="timings of ours and the baseline, one right after the other; the ratio is their median (default: 3; "
        "--quick 1; at least 2 within the budget)",
    )
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=DEFAULT_BUDGET_MINUTES,
        help="the run's time budget: each depth's training timings are sized to fit it, lowering the timed "
        "steps, then the warm-up, then the pairs you did not set (default: %(default)s; 0: no budget)",
    )
    p.add_argument(
        "--baseline-workers", type=int, help="DataLoader workers of the baseline (default: 0 on CPU, up to 8 on GPU)"
    )
    p.add_argument("--infer-arch", default="resnet50", help="architecture for the inference timings")
    p.add_argument("--json", default="bench.json", help="where to write the results (default: %(default)s)")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from brainmri.bench.run import format_table, run_bench, write_json

    result = run_bench(
        data=args.data,
        device=args.device,
        quick=args.quick,
        archs=[a.strip() for a in args.archs.split(",") if a.strip()] if args.archs else None,
        image_size=args.image_size,
        batch_size=args.batch_size,
        warmup=args.warmup,
        pairs=args.pairs,
        steps=args.steps,
        budget_minutes=args.budget_minutes,
        baseline_workers=args.baseline_workers,
        infer_arch=args.infer_arch,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(format_table(result))
    print(f"wrote {write_json(result, args.json)}")
    return 0


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="local web app and REST API to try a model on MRI slices",
        description="Serve a web page and a JSON API (POST /api/predict, GET /api/model, GET /health, /docs) "
        "for one model, loaded once at start. Uploads are analysed in memory, never written to disk.",
    )
    p.add_argument("model", help="checkpoint (.pt), run folder with checkpoints/best.pt, folder export or .onnx export")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--token",
        default=None,
        help="require this token on every API call (Authorization: Bearer TOKEN); needed for any host but "
        "loopback; defaults to $BRAINMRI_SERVE_TOKEN",
    )
    p.add_argument("--max-mb", type=positive_mb, default=20.0, help="size limit per uploaded file in MB (default: 20)")
    p.add_argument("--max-files", type=int, default=16, help="files per request (default: 16)")
    p.add_argument("--workers", type=cpu_count, default=None, help="inference threads (default: 2, at most the CPUs)")
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

    from brainmri.netutil import LOOPBACK_NAMES, is_loopback
    from brainmri.runtime import usable_cpus
    from brainmri.serve.app import TOKEN_ENV, serve
    from brainmri.serve.guard import Limits

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
