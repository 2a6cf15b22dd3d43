"""Statistics of the validation: bootstrap confidence intervals over interleaved rounds, which
rounds a noisy machine spoils, per-step buckets, and the rule that calls a prediction
consistent with a measurement. Torch-free, and deterministic (a seeded bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CI_LEVEL = 0.95
BOOTSTRAP_SAMPLES = 4000
TOLERANCE_PP = 2.0  # a CI narrower than this is widened to it around the measured figure
MIN_ROUNDS = 3  # fewer kept rounds give no usable interval


def bootstrap_ci(
    samples, statistic=np.mean, level: float = CI_LEVEL, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` (vectorised: it takes `axis=1`)."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    draws = statistic(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return (float(lo), float(hi))


def half_width(ci: tuple[float, float]) -> float:
    return (ci[1] - ci[0]) / 2


def paired_overheads_pct(runs_tok_s, baseline_tok_s) -> np.ndarray:
    """Per round: the placement's overhead against the baseline run of the same round. Rounds
    are interleaved, so each pair ran seconds apart and slow drift cancels out of the ratio."""
    runs, base = np.asarray(runs_tok_s, dtype=float), np.asarray(baseline_tok_s, dtype=float)
    return 100 * (1 - runs / base)


@dataclass(frozen=True)
class Estimate:
    """A mean over kept rounds with its bootstrap interval."""

    value: float
    ci: tuple[float, float]
    n: int

    @classmethod
    def of(cls, samples) -> Estimate:
        x = np.asarray(samples, dtype=float)
        return cls(float(x.mean()) if x.size else float("nan"), bootstrap_ci(x), int(x.size))


def consistent(predicted: float, measured: Estimate, tolerance: float = TOLERANCE_PP) -> bool:
    """The prediction lies within the measured CI, or within `tolerance` of the measured value
    where the CI is narrower than that."""
    lo = min(measured.ci[0], measured.value - tolerance)
    hi = max(measured.ci[1], measured.value + tolerance)
    return lo <= predicted <= hi


def keep_rounds(noisy: list[bool], scores: list[float], min_rounds: int = MIN_ROUNDS) -> tuple[list[int], bool]:
    """Indices of the rounds to keep, and whether only quiet rounds were kept. Noisy rounds are
    dropped; when fewer than `min_rounds` are quiet, the `min_rounds` least noisy (lowest
    score) are kept instead, and the second value says so."""
    quiet = [i for i, bad in enumerate(noisy) if not bad]
    if len(quiet) >= min(min_rounds, len(noisy)):
        return quiet, True
    least = sorted(range(len(noisy)), key=lambda i: (noisy[i], scores[i]))[:min_rounds]
    return sorted(least), False


def batch_bucket(tokens: int) -> str:
    """Power-of-two bucket of the tokens a step computes: 1, 2-3, 4-7, 8-15, ..."""
    lo = 1 << (max(int(tokens), 1).bit_length() - 1)
    return "1" if lo == 1 else f"{lo}-{2 * lo - 1}"


def bucket_order(label: str) -> int:
    return int(label.split("-")[0])


@dataclass(frozen=True)
class StepSample:
    """One step as either side saw it: kind, tokens computed, seconds, and for a measured step
    whether it was quiet (its thread hardly waited on a run queue)."""

    kind: str  # "prefill" | "decode"
    tokens: int
    seconds: float
    stall_s: float = 0.0
    quiet: bool = True
    running_s: float | None = None  # measured: seconds its thread was not waiting for a core


@dataclass(frozen=True)
class StepComparison:
    kind: str
    batch_bucket: str
    steps: int  # measured steps used (quiet ones, unless too few were)
    steps_dropped: int  # measured steps left out for their run-queue wait
    measured_median_ms: float
    measured_median_ci_ms: tuple[float, float]
    measured_p90_ms: float
    predicted_ms: float  # median of the simulator's steps in the bucket
    predicted_p90_ms: float
    error_pct: float  # predicted median vs measured median
    measured_stall_ms: float  # mean prefetch wait per step
    predicted_stall_ms: float
    # Diagnostic, not the verdict: every step of the bucket, counting only the time its thread
    # was running (wall less run-queue wait), so a model error shows through a loaded machine.
    measured_running_median_ms: float | None = None
    running_error_pct: float | None = None


MIN_BUCKET_STEPS = 5


def compare_steps(
    measured: list[StepSample], predicted: list[StepSample], min_steps: int = MIN_BUCKET_STEPS
) -> list[StepComparison]:
    """Per (kind, bucket): the measured and predicted step-time distributions side by side.
    Buckets the simulator never ran are skipped; a bucket's noisy steps are dropped unless
    fewer than `min_steps` quiet ones would remain."""

    def group(samples):
        out: dict[tuple[str, str], list[StepSample]] = {}
        for s in samples:
            out.setdefault((s.kind, batch_bucket(s.tokens)), []).append(s)
        return out

    meas, pred = group(measured), group(predicted)
    rows = []
    for key in sorted(meas, key=lambda k: (k[0] != "prefill", bucket_order(k[1]))):
        if key not in pred:
            continue
        quiet = [s for s in meas[key] if s.quiet]
        used = quiet if len(quiet) >= min_steps else meas[key]
        m = np.array([s.seconds for s in used]) * 1e3
        p = np.array([s.seconds for s in pred[key]]) * 1e3
        m_med, p_med = float(np.median(m)), float(np.median(p))
        running = [s.running_s for s in meas[key] if s.running_s is not None]
        r_med = 1e3 * float(np.median(running)) if running else None
        rows.append(
            StepComparison(
                kind=key[0],
                batch_bucket=key[1],
                steps=len(used),
                steps_dropped=len(meas[key]) - len(used),
                measured_median_ms=m_med,
                measured_median_ci_ms=bootstrap_ci(m, np.median),
                measured_p90_ms=float(np.percentile(m, 90)),
                predicted_ms=p_med,
                predicted_p90_ms=float(np.percentile(p, 90)),
                error_pct=100 * (p_med / m_med - 1),
                measured_stall_ms=1e3 * float(np.mean([s.stall_s for s in used])),
                predicted_stall_ms=1e3 * float(np.mean([s.stall_s for s in pred[key]])),
                measured_running_median_ms=r_med,
                running_error_pct=100 * (p_med / r_med - 1) if r_med else None,
            )
        )
    return rows
