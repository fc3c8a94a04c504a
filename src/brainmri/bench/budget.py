"""How much training ``brainmri bench`` times per depth so that the whole run fits a time budget.

A fixed step count makes the same command last minutes on one CPU and much longer on another:
one ResNet-152 step of batch 8 at 256 px takes about 1.3 s with native bf16 and about 9 s in
fp32 on 2 AVX2 cores, where the default bench took 19 min. Before each depth, :class:`StepBudget`
estimates what one step of ours and of the baseline costs there (from the depth's FLOPs and the
seconds per GFLOP measured on the depths before it, or at first from the matmul peak) and picks
the most timing that still fits what is left of the budget. It lowers, in this order, the timed
steps (down to 2), the warm-up steps (down to 1), then the pairs (down to 2): the pairs are what
cancel a shared machine's drift, the last thing given up. It never lowers what the caller set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: The default run's time budget: under the 10-minute goal on 2 cores, with a minute for the
#: estimate's error and the start-up.
DEFAULT_BUDGET_MINUTES = 9.0
#: Fraction of the matmul peak a training step is taken to reach before one is measured: the
#: bench measured 52 % in fp32 on the AVX2-only CPU and 52-60 % in bf16 on the AVX512-BF16 one.
ASSUMED_FRACTION_OF_PEAK = 0.5
#: Fraction of the fp32 matmul peak the inference timings reach (single slices, batch 32,
#: export, int8 calibration): about 450 forward passes of ResNet-50 at 256 px took 51-58 s on
#: two AVX2-only VMs (peaks 166 and 116 GFLOP/s), 0.55-0.7 of their peaks.
INFERENCE_FRACTION_OF_PEAK = 0.6
#: Seconds each timing spends outside its steps (building the model, loading the sample).
TIMING_OVERHEAD_SECONDS = 2.0
#: The fewest timed steps and warm-up steps the budget goes down to; below 2 timed steps the
#: median step is a single step.
MIN_STEPS, MIN_WARMUP, MIN_PAIRS = 2, 1, 2


@dataclass
class StepBudget:
    """What is left of ``seconds`` since ``start`` (a ``time.perf_counter()`` reading), and the
    costs that decide how much of it each depth's timing may take.

    ``ours_s_per_gflop`` and ``base_s_per_gflop`` are the seconds one training GFLOP takes in our
    loop and in the baseline's; ``base_decode_s`` the seconds the baseline's loader spends on one
    image before the model sees it; ``reserve_s`` what the steps after training (inference) will
    take. ``fixed`` names the settings the caller chose: they are never lowered."""

    seconds: float
    start: float
    batch_size: int
    warmup: int
    steps: int
    pairs: int
    ours_s_per_gflop: float
    base_s_per_gflop: float
    base_decode_s: float = 0.0
    reserve_s: float = 0.0
    fixed: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_peaks(
        cls,
        seconds: float,
        start: float,
        settings: dict[str, Any],
        ours_peak_gflops: float,
        fp32_peak_gflops: float,
        base_decode_ips: float,
        inference_gflop: float,
        fixed: Sequence[str] = (),
    ) -> StepBudget:
        """The first estimate, before any training is timed: ours at :data:`ASSUMED_FRACTION_OF_PEAK`
        of the peak of its precision, the baseline at that fraction of the fp32 peak plus its
        measured decoding, inference (``inference_gflop`` in all) at :data:`INFERENCE_FRACTION_OF_PEAK`."""
        return cls(
            seconds=seconds,
            start=start,
            batch_size=int(settings["batch_size"]),
            warmup=int(settings["warmup"]),
            steps=int(settings["steps"]),
            pairs=int(settings["pairs"]),
            ours_s_per_gflop=1 / (ours_peak_gflops * ASSUMED_FRACTION_OF_PEAK),
            base_s_per_gflop=1 / (fp32_peak_gflops * ASSUMED_FRACTION_OF_PEAK),
            base_decode_s=1 / base_decode_ips,
            reserve_s=inference_gflop / (fp32_peak_gflops * INFERENCE_FRACTION_OF_PEAK),
            fixed=frozenset(fixed),
        )

    def seconds_left(self, now: float | None = None) -> float:
        """The budget less what has run and what inference will take."""
        now = time.perf_counter() if now is None else now
        return self.seconds - (now - self.start) - self.reserve_s

    def cost(self, gflops: Sequence[float], warmup: int, steps: int, pairs: int) -> float:
        """Estimated seconds to time every depth of ``gflops`` (training GFLOP per image) this way."""
        per_image = sum(g * (self.ours_s_per_gflop + self.base_s_per_gflop) + self.base_decode_s for g in gflops)
        timings = 2 * pairs * len(gflops)
        return pairs * (warmup + steps) * self.batch_size * per_image + timings * TIMING_OVERHEAD_SECONDS

    def overruns(self, gflops: Sequence[float], plan: dict[str, int], now: float | None = None) -> bool:
        """Whether timing every depth of ``gflops`` as ``plan`` says would take more than is left."""
        return self.cost(gflops, **plan) > self.seconds_left(now)

    def plan(self, gflops_left: Sequence[float], now: float | None = None) -> dict[str, int]:
        """Warm-up steps, timed steps and pairs for the next depth, ``gflops_left[0]``, with the
        depths after it (the rest of ``gflops_left``) timed alike: the most that fits what is
        left, lowering steps, then warm-up, then pairs, never below their minimums nor what the
        caller set."""
        now = time.perf_counter() if now is None else now  # one reading for every comparison
        plan = {"warmup": self.warmup, "steps": self.steps, "pairs": self.pairs}
        floors = {
            "steps": min(self.steps, MIN_STEPS),
            "warmup": min(self.warmup, MIN_WARMUP),
            "pairs": min(self.pairs, MIN_PAIRS),
        }
        for name in ("steps", "warmup", "pairs"):
            if name in self.fixed:
                continue
            while plan[name] > floors[name] and self.overruns(gflops_left, plan, now):
                plan[name] -= 1
        return plan

    def measured(self, gflop: float, ours_ips: float, base_ips: float) -> None:
        """Use a depth's measured throughputs (``gflop`` training GFLOP per image) for the next plans."""
        self.ours_s_per_gflop = 1 / (ours_ips * gflop)
        self.base_s_per_gflop = 1 / (base_ips * gflop)
        self.base_decode_s = 0.0  # now inside the measured baseline rate
