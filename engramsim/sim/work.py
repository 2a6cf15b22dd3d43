"""How much simulating a scenario will cost, estimated before it runs.

The simulator's time goes to engine steps (tens of microseconds each, whatever the batch) and
to the sequences inside them: on the development VM a step costs ~31 µs, and a sequence in it
0.35 µs, or ~1.3 µs when a full KV cache makes the scheduler preempt. The estimate counts
*step-equivalents*: one per engine step of every replica, one per idle replica, plus one per
25 sequence-steps, over every run (the baseline and each placement). Steps are counted in
waves: a replica holds at most max_num_seqs sequences, and no more than its KV cache fits at
their full length. Preemption adds steps it does not count; tests/test_sim.py checks it against
the steps `simulate` takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engramsim.workload import Workload

SEQ_STEPS_PER_STEP = 25  # sequence-steps that cost as much as one engine step
# ~1 minute of simulation on a 2-core VM: every preset scenario needs well under a tenth of it.
DEFAULT_MAX_STEPS = 2_000_000


@dataclass(frozen=True)
class WorkEstimate:
    runs: int
    replicas: int
    steps_per_run: float  # engine steps summed over replicas (idle replicas count one)
    seq_steps_per_run: float  # sequences carried, summed over steps and replicas

    @property
    def steps(self) -> float:
        """Step-equivalents of the whole simulation."""
        return self.runs * (self.steps_per_run + self.seq_steps_per_run / SEQ_STEPS_PER_STEP)

    def describe(self) -> str:
        return (
            f"about {self.steps:.2g} engine-step equivalents ({self.runs} runs x {self.replicas:,} replicas; "
            f"per run {self.steps_per_run:.2g} engine steps and {self.seq_steps_per_run:.2g} sequence-steps)"
        )


def estimate_work(workload: Workload, replicas: int, runs: int, kv_tokens: float = math.inf) -> WorkEstimate:
    """`kv_tokens`: KV-cache tokens one replica holds (the baseline's, the most of any run)."""
    eng = workload.engine
    n = workload.num_seqs
    mean_in = (workload.input_len_min + workload.input_len_max) / 2
    mean_out = (workload.output_len_min + workload.output_len_max) / 2
    busy = min(replicas, n)
    per_replica = n / busy
    at_once = max(1.0, min(eng.max_num_seqs, kv_tokens / (mean_in + mean_out)))
    waves = math.ceil(per_replica / at_once)
    decode = mean_out * waves
    prefill = max(
        waves,
        math.ceil(per_replica * mean_in / eng.max_num_batched_tokens),
        math.ceil(per_replica / eng.max_prefill_seqs) if eng.max_prefill_seqs else 1,
    )
    steps = busy * (decode + prefill) + (replicas - busy)
    return WorkEstimate(runs=runs, replicas=replicas, steps_per_run=steps, seq_steps_per_run=n * (mean_out + 1))
