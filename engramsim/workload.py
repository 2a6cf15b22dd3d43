"""Workloads: which requests arrive when and how long their prompts and outputs are. Presets
live in workloads/*.toml. The engine limits that serve them come from an engine preset
(engines/*.toml); a workload's optional [engine] table overrides some of them."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from engramsim.errors import UserError
from engramsim.presets import build, load_toml, resolve, spec

KINDS = ("offline", "poisson")


@dataclass(frozen=True)
class Requests:
    """Request arrivals (s) and lengths (tokens), as parallel arrays."""
    arrival_s: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray

    def __len__(self):
        return len(self.arrival_s)


# Upper bounds (`hi`): 10M-token prompts and outputs (today's longest contexts are ~1-2M),
# 1e6 requests per second and 1e9 requests in a workload (whether a run that large is worth
# simulating is checked separately, by the work estimate in `engramsim.sim.work`); engines
# batch at most 1e6 sequences and 1e8 tokens per step.
@dataclass(frozen=True)
class Engine:
    """Continuous-batching limits the scheduler runs with (defaults: nano-vLLM's Config,
    nanovllm/config.py). Engine presets build it (`EngineSpec.limits`)."""
    max_num_seqs: int = spec("max_num_seqs", kind=int, default=512, hi=1e6)
    max_num_batched_tokens: int = spec("max_num_batched_tokens", kind=int, default=16384, hi=1e8)
    kv_block_tokens: int = spec("kv_block_tokens", kind=int, default=256, hi=65536)
    # Prefetch: the Engram fetch starts when the step's tokens are hashed, overlapping the
    # layers before the Engram layer. Off: the fetch runs synchronously at the Engram layer.
    prefetch: bool = spec("prefetch", kind=bool, default=True)
    # At most this many prompts per prefill step (0: no limit beyond the token budget). A simple
    # harness that prefills one prompt at a time sets 1.
    max_prefill_seqs: int = spec("max_prefill_seqs", lo=0, lo_open=False, kind=int, default=0, hi=1e6)
    # With prefetch, a prefill step also starts the fetch for the prompts the next prefill step
    # will take (their tokens are all known), so that fetch overlaps this step's compute.
    prefill_lookahead: bool = spec("prefill_lookahead", kind=bool, default=True)


@dataclass(frozen=True)
class Workload:
    name: str = spec("name", kind=str)
    kind: str = spec("kind", kind=str)
    num_seqs: int = spec("num_seqs", kind=int, hi=1e9)
    input_len_min: int = spec("input_len_min", kind=int, hi=1e7)
    input_len_max: int = spec("input_len_max", kind=int, hi=1e7)
    output_len_min: int = spec("output_len_min", kind=int, hi=1e7)
    output_len_max: int = spec("output_len_max", kind=int, hi=1e7)
    rate_per_s: float = spec("rate_per_s", lo=0, lo_open=False, default=0.0, hi=1e6)
    description: str = spec("description", kind=str, default="")
    engine: Engine = field(default_factory=Engine)
    # Keys of the workload's own [engine] table: they override the engine preset's limits.
    engine_overrides: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"workload {self.name}: kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if self.input_len_min > self.input_len_max or self.output_len_min > self.output_len_max:
            raise UserError(f"workload {self.name}: a length range has min > max")
        if self.kind == "poisson" and self.rate_per_s <= 0:
            raise UserError(f"workload {self.name}: a poisson workload needs rate_per_s > 0")
        if self.kind == "offline" and self.rate_per_s:
            raise UserError(f"workload {self.name}: rate_per_s does nothing in an offline workload (every "
                            f"request arrives at once); remove it or set kind = \"poisson\"")

    @property
    def max_seq_len(self) -> int:
        return self.input_len_max + self.output_len_max

    def requests(self, seed: int) -> Requests:
        """Lengths are Uniform over [min, max] inclusive, like nano-vLLM's bench.py randint."""
        rng = np.random.default_rng(seed)
        n = self.num_seqs
        inputs = rng.integers(self.input_len_min, self.input_len_max + 1, size=n)
        outputs = rng.integers(self.output_len_min, self.output_len_max + 1, size=n)
        if self.kind == "offline":
            arrivals = np.zeros(n)
        else:
            arrivals = np.cumsum(rng.exponential(1.0 / self.rate_per_s, size=n))
        return Requests(arrivals, inputs, outputs)


def load_workload(name_or_path: str | Path) -> Workload:
    path = resolve("workload", name_or_path)
    data = load_toml(path)
    data.setdefault("name", path.stem)
    return workload_from_dict(data, str(path))


def workload_from_dict(data: dict, where: str) -> Workload:
    data = dict(data)
    table = data.pop("engine", {})
    engine = build(Engine, table, f"{where} [engine]")
    keys = {f.metadata["key"]: f.name for f in fields(Engine)}
    overrides = {keys[k]: getattr(engine, keys[k]) for k in table}
    try:
        return replace(build(Workload, data, where), engine=engine, engine_overrides=overrides)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def with_engine(workload: Workload, engine) -> Workload:
    """The workload served by `engine` (an EngineSpec): its limits, then the workload's overrides."""
    return replace(workload, engine=engine.limits(workload.engine_overrides))
