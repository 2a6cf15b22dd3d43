"""Numeric command-line options that reject NaN, infinities and out-of-range values.

click's FloatRange lets NaN through (every comparison with NaN is false), so every numeric
flag of engramsim uses `number(...)`: the error is one line naming the flag, the allowed
range and the value given.
"""

from __future__ import annotations

import math

import click

from engramsim.presets import (  # noqa: F401  (the shared bounds, re-exported for the commands)
    DRAM_GIB_MAX,
    HBM_GIB_MAX,
    MAX_BATCHED_TOKENS,
    MAX_CONTEXT,
    MAX_EP,
    MAX_GPUS,
    MAX_SEQS,
    MAX_TP,
    SEED_MAX,
    allowed_range,
)


class Number(click.ParamType):
    def __init__(self, lo: float | None, hi: float, lo_open: bool = False, kind: type = float):
        self.lo, self.hi, self.lo_open, self.kind = lo, hi, lo_open, kind
        self.name = "integer" if kind is int else "number"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(value, 10) if self.kind is int else float(value)
            except (TypeError, ValueError):
                self.fail(self._wanted(value), param, ctx)
        too_low = self.lo is not None and (number < self.lo or (self.lo_open and number == self.lo))
        if not math.isfinite(number) or too_low or number > self.hi:
            self.fail(self._wanted(value), param, ctx)
        return self.kind(number)

    def _wanted(self, value) -> str:
        what = "a whole number" if self.kind is int else "a number"
        return f"must be {what} in {allowed_range(self.lo, self.hi, self.lo_open)}, got {value!r}"


def number(lo: float | None, hi: float, lo_open: bool = False) -> Number:
    return Number(lo, hi, lo_open, float)


def whole(lo: int, hi: int) -> Number:
    return Number(lo, hi, False, int)


SEED = whole(0, SEED_MAX)
MAX_WORKERS = 65536  # worker processes of a sweep: a large Ray cluster's CPUs
