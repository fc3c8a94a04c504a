"""How well repeated ``brainmri bench`` runs agree: each headline figure's value in every run,
its median and its range as a percentage of the median, against a stated tolerance.

    python scripts/bench_agreement.py RUN1.json RUN2.json [...] [--tolerance 5] > agreement.md

The bench is meant to be steered by: two default runs on a quiet machine should agree within
the tolerance on every training ratio, and on the figures the goals are stated in.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

#: (label, path into bench.json); ``{arch}`` is filled with every architecture trained.
FIGURES = (
    ("training {arch}, ours (img/s)", ("train", "{arch}", "ours_ips")),
    ("training {arch}, baseline (img/s)", ("train", "{arch}", "baseline_ips")),
    ("training {arch}, ratio", ("train", "{arch}", "ratio")),
    ("ResNet-50 training, fraction of the matmul peak", ("flops", "fraction_of_peak")),
    ("matmul peak fp32 (GFLOP/s)", ("matmul", "fp32_gflops")),
    ("matmul peak bf16 (GFLOP/s)", ("matmul", "bf16_gflops")),
    ("data pipeline, ours (img/s)", ("data_pipeline", "ours_ips")),
    ("inference torch p50 (ms)", ("inference", "torch", "latency_ms_p50")),
    ("inference ONNX fp32 p50 (ms)", ("inference", "onnx", "latency_ms_p50")),
    ("inference ONNX int8 p50 (ms)", ("inference", "onnx_int8", "latency_ms_p50")),
)


def _get(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def agreement(results: list[dict[str, Any]], tolerance: float) -> list[dict[str, Any]]:
    """One row per figure present in every run: the values, median, range % and verdict."""
    archs = list(results[0].get("train", {}))
    rows = []
    for label, path in FIGURES:
        for arch in archs if "{arch}" in path else [None]:
            filled = tuple(str(arch) if part == "{arch}" else part for part in path)
            values = [_get(r, filled) for r in results]
            if any(v is None for v in values):
                continue
            numbers = [float(v) for v in values if v is not None]
            middle = statistics.median(numbers)
            spread = 100.0 * (max(numbers) - min(numbers)) / middle if middle else float("nan")
            rows.append(
                {
                    "figure": label.format(arch=arch),
                    "values": numbers,
                    "median": middle,
                    "range_pct": spread,
                    "agrees": spread <= tolerance,
                }
            )
    return rows


def to_markdown(rows: list[dict[str, Any]], names: list[str], tolerance: float) -> str:
    head = "| Figure | " + " | ".join(names) + f" | Median | Range (% of median) | Within {tolerance:g} % |"
    lines = [head, "|---|" + "---:|" * (len(names) + 2) + "---|"]
    for r in rows:
        values = " | ".join(f"{v:.3g}" for v in r["values"])
        verdict = "yes" if r["agrees"] else "**no**"
        lines.append(f"| {r['figure']} | {values} | {r['median']:.3g} | {r['range_pct']:.1f} | {verdict} |")
    agreed = sum(r["agrees"] for r in rows)
    lines.append("")
    lines.append(f"{agreed} of {len(rows)} figures agree within {tolerance:g} % across {len(names)} runs.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="bench.json files of repeated runs")
    parser.add_argument("--tolerance", type=float, default=5.0, help="agreement tolerance in %% (5)")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("give at least two bench.json files")
    results = []
    for path in args.runs:
        try:
            results.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"cannot read {path}: {exc}")
    sys.stdout.write(to_markdown(agreement(results, args.tolerance), [Path(p).stem for p in args.runs], args.tolerance))


if __name__ == "__main__":
    main()
