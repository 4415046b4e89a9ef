"""Interleaved timing of an alpha_data path against its raw baseline, in one process.

Both callables run alternately in rounds (so machine noise hits both), after a
warm-up; the result carries median and p95 per operation and their ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

Op = Callable[[], Awaitable[Any]]

__all__ = ["Result", "compare", "percentile", "time_op"]


@dataclass
class Result:
    """One row of the report: ours vs baseline (ms per operation)."""

    name: str
    baseline: str
    ours_median_ms: float
    ours_p95_ms: float
    baseline_median_ms: float
    baseline_p95_ms: float
    ratio: float
    goal: str
    met: bool | None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def time_op(op: Op, repeat: int) -> list[float]:
    """Per-operation times in ms of ``repeat`` sequential calls."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await op()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def compare(
    name: str,
    ours: Op,
    baseline: Op,
    *,
    baseline_name: str,
    goal: str,
    limit: float | None,
    rounds: int = 10,
    per_round: int = 50,
    warmup: int = 20,
    higher_is_better: bool = False,
    note: str = "",
) -> Result:
    """Time ``ours`` and ``baseline`` interleaved; ratio = ours / baseline (medians)."""
    for _ in range(warmup):
        await ours()
        await baseline()
    ours_samples: list[float] = []
    base_samples: list[float] = []
    for i in range(rounds):
        # alternate which one goes first so warm caches favour neither
        pair = [(ours, ours_samples), (baseline, base_samples)]
        for op, sink in pair if i % 2 == 0 else reversed(pair):
            sink.extend(await time_op(op, per_round))
    ours_median = statistics.median(ours_samples)
    base_median = statistics.median(base_samples)
    ratio = ours_median / base_median if base_median else float("inf")
    if higher_is_better:
        ratio = base_median / ours_median if ours_median else 0.0
    met = None
    if limit is not None:
        met = ratio >= limit if higher_is_better else ratio <= limit
    return Result(
        name=name,
        baseline=baseline_name,
        ours_median_ms=ours_median,
        ours_p95_ms=percentile(ours_samples, 0.95),
        baseline_median_ms=base_median,
        baseline_p95_ms=percentile(base_samples, 0.95),
        ratio=ratio,
        goal=goal,
        met=met,
        note=note,
    )
