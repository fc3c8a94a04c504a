"""Where a training step's time goes: torch.profiler over real training steps of the scratch
recipe (augmentation, forward, loss, backward, AdamW, EMA), at each image size asked for.

    python scripts/profile_step.py --sizes 64,128 --arch resnet50 --out docs/results/profile

Writes ``profile.md`` (the share of each kind of work and the top operators per size) and
``profile.json``. The categories: convolutions (forward and backward), batch-norm, other
tensor work of the network (activations, pooling, the head, the loss), augmentation
(affine_grid, grid_sample), the optimiser and the weight average (foreach and AdamW kernels),
and what no operator accounts for: the Python and dispatch overhead between operators.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from brainmri.config import TrainConfig
from brainmri.experiments.reproduce import PRESETS
from brainmri.models.build import build_model
from brainmri.runtime import resolve_precision
from brainmri.training.loop import build_parts, train_step

CATEGORIES = (
    ("convolution", ("conv", "mkldnn_convolution")),
    ("batch-norm", ("batch_norm",)),
    ("augmentation", ("grid_sampler", "affine_grid", "grid_sample")),
    ("optimiser and EMA", ("_foreach", "adam", "lerp", "addcdiv")),
)


def category(name: str) -> str:
    low = name.lower()
    for label, keys in CATEGORIES:
        if any(k in low for k in keys):
            return label
    return "other network work"


def profile_size(arch: str, size: int, batch: int, steps: int) -> dict:
    # one size throughout: the preset's progressive resizing would change it between epochs
    config = TrainConfig.from_dict({**PRESETS["scratch"], "image_size": size, "progressive": "", "arch": arch,
                                    "batch_size": batch, "device": "cpu"})  # fmt: skip
    device = torch.device("cpu")
    precision = resolve_precision(config.precision, device)
    model = build_model(arch, "none", 4)
    labels = torch.randint(0, 4, (batch,))
    parts = build_parts(model, config.loop_section(), labels.repeat(64), precision, device)
    images = torch.randint(0, 255, (batch, 1, size, size), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):  # warm-up: oneDNN picks its kernels
        train_step(parts, parts.augment(images, generator=gen), labels)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            with record_function("augment"):
                x = parts.augment(images, generator=gen)
            train_step(parts, x, labels)
        wall = time.perf_counter() - start
    events = [e for e in prof.key_averages() if not e.key.startswith("augment")]
    shares: dict[str, float] = {}
    for e in events:
        shares[category(e.key)] = shares.get(category(e.key), 0.0) + e.self_cpu_time_total / 1e6
    accounted = sum(shares.values())
    shares["Python and dispatch overhead"] = max(wall - accounted, 0.0)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    return {
        "size": size,
        "arch": arch,
        "batch": batch,
        "steps": steps,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "wall_seconds": wall,
        "images_per_second": steps * batch / wall,
        "shares": {k: v / wall for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
        "top": [{"op": e.key, "self_seconds": e.self_cpu_time_total / 1e6, "calls": e.count} for e in top],
    }


def markdown(results: list[dict]) -> str:
    lines = ["# Where a training step's time goes", ""]
    for r in results:
        lines += [
            f"## {r['arch']}, {r['size']} px, batch {r['batch']}, {r['precision']}, {r['threads']} threads",
            "",
            f"{r['steps']} steps in {r['wall_seconds']:.1f} s: {r['images_per_second']:.1f} images/s.",
            "",
            "| work | share of the step |",
            "|---|---|",
            *[f"| {k} | {v:.1%} |" for k, v in r["shares"].items()],
            "",
            "| operator (self time) | seconds | calls |",
            "|---|---|---|",
            *[f"| `{t['op']}` | {t['self_seconds']:.2f} | {t['calls']} |" for t in r["top"]],
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default="profile")
    args = parser.parse_args()
    results = [profile_size(args.arch, int(s), args.batch, args.steps) for s in args.sizes.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "profile.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
