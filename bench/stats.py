"""Percentiles and the result records every scenario returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ms(seconds: float) -> float:
    return seconds * 1000


@dataclass
class Row:
    """One line of the results table: a figure of the bridge, raw Celery's figure from the
    same run (None when there is no raw equivalent), and the ratio bridge / raw (or the
    ratio the target is about, e.g. 100,000 tasks / 100 tasks)."""

    scenario: str
    metric: str
    run: int
    bridge: float | None
    raw: float | None
    unit: str
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.bridge is not None and self.raw:
            self.ratio = self.bridge / self.raw


@dataclass
class Result:
    """What one run of one scenario produced: table rows and markdown detail lines."""

    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
