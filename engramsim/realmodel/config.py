"""What one real-model measurement runs: the model, its Engram table, the workload, the machine knobs.

This module is torch-free, so the simulator side can read a run's configuration and results
(`to_model_spec`, `MeasuredCase`) without torch installed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engramsim.errors import UserError
from engramsim.model import Backbone, EngramSpec, ModelSpec

# Placements this machine can measure. "-cold"/"-warm" say whether the table file's pages are
# in the page cache when the timed run starts.
PLACEMENTS = ("baseline", "device", "host-prefetch", "host-sync",
              "mmap-prefetch-cold", "mmap-prefetch-warm", "mmap-sync-cold", "mmap-sync-warm")
DTYPE = "fp32"  # CPU matmuls and gathers run natively in fp32; bf16 would add conversions
BYTES_PER_VALUE = 4


@dataclass(frozen=True)
class Placement:
    """Where the table lives and how its rows reach the Engram layer."""
    name: str
    tier: str            # "none" (baseline), "ram" (inline), "host" (separate buffer), "mmap" (file)
    prefetch: bool       # gathered by a background thread while earlier layers compute
    cache_state: str     # "cold"/"warm" page cache for mmap, "" otherwise

    @property
    def has_engram(self) -> bool:
        return self.tier != "none"


def placement(name: str) -> Placement:
    if name not in PLACEMENTS:
        raise UserError(f"unknown placement '{name}' (known: {', '.join(PLACEMENTS)})")
    if name == "baseline":
        return Placement(name, "none", False, "")
    if name == "device":
        return Placement(name, "ram", False, "")
    tier, mode, *state = name.split("-")
    return Placement(name, tier, mode == "prefetch", state[0] if state else "")


@dataclass(frozen=True)
class RealModelConfig:
    """Backbone and Engram shapes of the real model; `table_MiB` sizes the hashed tables."""
    n_layers: int = 6
    hidden_size: int = 512
    n_heads: int = 8
    head_dim: int = 64
    n_kv_heads: int = 2
    intermediate_size: int = 1536
    vocab_size: int = 32000
    engram_layer_ids: tuple[int, ...] = (2,)  # the paper's throughput test puts it at block 2
    max_ngram_size: int = 3
    n_head_per_ngram: int = 8
    n_embed_per_ngram: int = 256
    kernel_size: int = 4
    table_MiB: int = 1024
    seed: int = 0

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise UserError("real model: n_heads must be a multiple of n_kv_heads")
        if not self.engram_layer_ids or max(self.engram_layer_ids) >= self.n_layers:
            raise UserError(f"real model: engram_layer_ids must lie in 0..{self.n_layers - 1}")
        if self.table_MiB < 1:
            raise UserError("real model: table_MiB must be >= 1")

    @property
    def row_dim(self) -> int:
        return self.n_embed_per_ngram // self.n_head_per_ngram

    def engram_vocab_size(self) -> tuple[int, ...]:
        """Rows per head table so that all Engram layers together hold about `table_MiB`."""
        heads = (self.max_ngram_size - 1) * self.n_head_per_ngram * len(self.engram_layer_ids)
        rows_per_head = self.table_MiB * 2**20 // (heads * self.row_dim * BYTES_PER_VALUE)
        if rows_per_head < 2:
            raise UserError(f"real model: table_MiB={self.table_MiB} is too small for {heads} head tables")
        return (rows_per_head,) * (self.max_ngram_size - 1)


@dataclass(frozen=True)
class WorkloadConfig:
    """An offline batch like nano-vLLM's bench.py: all sequences submitted at once,
    lengths drawn uniformly from [lo, hi]."""
    n_seqs: int = 16
    input_len: tuple[int, int] = (64, 256)
    output_len: tuple[int, int] = (64, 256)
    seed: int = 0

    def __post_init__(self):
        for name in ("input_len", "output_len"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise UserError(f"workload: {name} must be a range 1 <= lo <= hi, got {(lo, hi)}")
        if self.n_seqs < 1:
            raise UserError("workload: n_seqs must be >= 1")


@dataclass(frozen=True)
class RunConfig:
    model: RealModelConfig = field(default_factory=RealModelConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    torch_threads: int = 0      # 0: one per CPU core
    repeats: int = 5            # timed runs per placement; the median is reported
    table_dir: str = ""         # where the mmap table file goes; "" = the system temp dir
    min_free_margin_GiB: float = 2.0  # never allocate past free memory minus this


def quick_config() -> RunConfig:
    """All placements in well under 3 minutes on a 2-core CPU, table still far beyond L3."""
    model = RealModelConfig(n_layers=4, hidden_size=384, n_heads=6, head_dim=64, n_kv_heads=2,
                            intermediate_size=1024, vocab_size=16384, table_MiB=512)
    # Five short interleaved runs per placement; the median is reported, and overheads are taken
    # against the baseline run of the same round (engramsim.validate.paired_overhead_pct).
    # One torch thread: with two, an OpenMP team on a 2-core host that other processes also use
    # stalls at every barrier (measured: a 10x spread between runs, against 1.5x with one), and
    # the other core is left to the prefetch thread, as a GPU host leaves CPU cores to gathers.
    return RunConfig(model=model, workload=WorkloadConfig(n_seqs=12, input_len=(32, 64), output_len=(32, 64)),
                     torch_threads=1, repeats=5)


def tiny_config(table_dir: str = "") -> RunConfig:
    """For tests: a few seconds for every placement."""
    model = RealModelConfig(n_layers=3, hidden_size=64, n_heads=4, head_dim=16, n_kv_heads=2,
                            intermediate_size=128, vocab_size=512, engram_layer_ids=(1,),
                            n_head_per_ngram=2, n_embed_per_ngram=32, table_MiB=1)
    return RunConfig(model=model, workload=WorkloadConfig(n_seqs=3, input_len=(5, 9), output_len=(3, 6)),
                     torch_threads=1, repeats=1, table_dir=table_dir, min_free_margin_GiB=0.0)


def engram_spec(model: RealModelConfig) -> EngramSpec:
    # The model's tokenizer is its compressed vocabulary: token ids are hashed as they are.
    return EngramSpec(layer_ids=model.engram_layer_ids, max_ngram_size=model.max_ngram_size,
                      n_head_per_ngram=model.n_head_per_ngram, engram_vocab_size=model.engram_vocab_size(),
                      seed=model.seed, compressed_vocab_size=model.vocab_size, compressed_pad_id=2,
                      n_embed_per_ngram=model.n_embed_per_ngram, kernel_size=model.kernel_size, dtype=DTYPE)


def to_model_spec(config: RunConfig | RealModelConfig) -> ModelSpec:
    """The identical model as the simulator sees it."""
    model = config.model if isinstance(config, RunConfig) else config
    backbone = Backbone(n_layers=model.n_layers, hidden_size=model.hidden_size, vocab_size=model.vocab_size,
                        n_heads=model.n_heads, head_dim=model.head_dim, dtype=DTYPE, kv_dtype=DTYPE,
                        n_kv_heads=model.n_kv_heads, intermediate_size=model.intermediate_size)
    return ModelSpec(name="realmodel", description="engramsim.realmodel measured on this machine",
                     backbone=backbone, engram=engram_spec(model))


@dataclass(frozen=True)
class StepRecord:
    """One engine step (a prefill of one sequence, or one decode step of the running batch)."""
    phase: str           # "prefill" | "decode"
    seqs: int
    tokens: int          # tokens computed this step
    context_tokens: int  # sum over sequences of the tokens attention reads
    hash_s: float        # n-gram hashing at step start
    pre_s: float         # embedding + layers before the first Engram layer
    gather_s: float      # at the Engram layers: the inline gather, or the wait for the prefetch
    stall_s: float       # the part of gather_s spent waiting for a prefetch
    fusion_s: float      # Engram gate, value projection and short conv
    rest_s: float        # layers from the first Engram layer on (less Engram), head, sampling
    total_s: float
    rows: int            # rows gathered (all Engram layers)


@dataclass(frozen=True)
class PhaseSummary:
    phase: str
    steps: int
    tokens: int
    mean_step_s: float
    mean_pre_s: float
    mean_gather_s: float
    mean_hash_s: float
    mean_fusion_s: float
    mean_rest_s: float   # later layers, head, sampling, batch bookkeeping (no hash, no fusion)
    stall_s: float       # total


@dataclass(frozen=True)
class MeasuredCase:
    placement: str
    tier: str
    prefetch: bool
    cache_state: str
    measured_tok_s: float       # median over repeats
    tok_s_runs: tuple[float, ...]
    wall_s: float               # of the median run
    cpu_s: float                # process CPU seconds of that run (all threads)
    load_avg_1m: float          # host load when it started: other processes share the cores
    output_tokens: int
    input_tokens: int
    steps: int
    stall_s: float              # total prefetch wait at the Engram layers
    prefetch_busy_s: float      # time the prefetch thread spent gathering
    phases: tuple[PhaseSummary, ...]
    step_records: tuple[StepRecord, ...]
    resident_before: float | None  # mmap: fraction of table pages in the page cache at start
    cache_note: str             # how the cold/warm state was set up, or why it could not be
    tokens_digest: str          # same digest across Engram placements = identical activations
    torch_threads: int
    table_bytes: int
    config: RunConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
