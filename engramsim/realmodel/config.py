"""What one real-model measurement runs: the model, its Engram table, the workload, the machine knobs.

This module is torch-free, so the simulator side can read a run's configuration and results
(`to_model_spec`, `MeasuredCase`) without torch installed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engramsim.errors import UserError
from engramsim.model import Backbone, EngramSpec, ModelSpec
from engramsim.realmodel.noise import NoiseLimits, RunNoise
from engramsim.units import MiB

# Placements a CPU-only machine measures. "-cold"/"-warm" say whether the table file's pages are
# in the page cache when the timed run starts.
PLACEMENTS = (
    "baseline",
    "device",
    "host-prefetch",
    "host-sync",
    "mmap-prefetch-cold",
    "mmap-prefetch-warm",
    "mmap-sync-cold",
    "mmap-sync-warm",
)
CPU_PLACEMENTS = PLACEMENTS
# Placements a CUDA machine measures: the table in HBM; in pinned host memory read by a CPU
# gather into pinned staging plus an H2D copy ("pinned-copy"), or by a GPU gather straight
# from mapped host memory ("pinned-uva"); each with prefetch on a side stream or at the layer.
GPU_PLACEMENTS = (
    "baseline",
    "gpu-hbm",
    "pinned-copy-prefetch",
    "pinned-copy-sync",
    "pinned-uva-prefetch",
    "pinned-uva-sync",
)
GPU_TIERS = ("hbm", "pinned-copy", "pinned-uva")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"fp32": 4, "bf16": 2}  # value bytes; CPU runs fp32 natively, a GPU's tensor cores bf16
DTYPE = "fp32"
BYTES_PER_VALUE = DTYPES[DTYPE]


@dataclass(frozen=True)
class TablePlacement:
    """Where the table lives and how its rows reach the Engram layer."""

    name: str
    tier: str  # "none" (baseline); CPU: "ram" (inline), "host" (separate buffer), "mmap"
    # (file); GPU: "hbm" (inline), "pinned-copy", "pinned-uva" (GPU_TIERS)
    prefetch: bool  # fetched while earlier layers compute (CPU: a thread; GPU: a side stream)
    cache_state: str  # "cold"/"warm" page cache for mmap, "" otherwise

    @property
    def has_engram(self) -> bool:
        return self.tier != "none"

    @property
    def on_gpu(self) -> bool:
        return self.tier in GPU_TIERS


def placement(name: str) -> TablePlacement:
    known = dict.fromkeys(CPU_PLACEMENTS + GPU_PLACEMENTS)
    if name not in known:
        raise UserError(f"unknown placement '{name}' (known: {', '.join(known)})")
    if name == "baseline":
        return TablePlacement(name, "none", False, "")
    if name == "device":
        return TablePlacement(name, "ram", False, "")
    if name == "gpu-hbm":
        return TablePlacement(name, "hbm", False, "")
    if name.startswith("pinned-"):
        tier, mode = name.rsplit("-", 1)
        return TablePlacement(name, tier, mode == "prefetch", "")
    tier, mode, *state = name.split("-")
    return TablePlacement(name, tier, mode == "prefetch", state[0] if state else "")


def resolve_device(requested: str, cuda_available: bool) -> str:
    """ "cpu" or "cuda" for a RunConfig.device; "auto" takes the GPU when there is one."""
    if requested not in DEVICES:
        raise UserError(f"unknown device '{requested}' (known: {', '.join(DEVICES)})")
    if requested == "cuda" and not cuda_available:
        raise UserError("device 'cuda' asked for, but torch sees no CUDA device")
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    return requested


def placements_for(device: str) -> tuple[str, ...]:
    """The placements a resolved device measures (the baseline first)."""
    return GPU_PLACEMENTS if device == "cuda" else CPU_PLACEMENTS


def check_placements(device: str, names) -> None:
    """A placement of the other device cannot run here: say so in one line."""
    for name in names:
        p = placement(name)
        if p.has_engram and p.on_gpu != (device == "cuda"):
            raise UserError(f"placement '{name}' needs device {'cuda' if p.on_gpu else 'cpu'}, this run uses {device}")


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
    dtype: str = DTYPE  # of weights, activations and table rows alike

    @property
    def value_bytes(self) -> int:
        return DTYPES[self.dtype]

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise UserError("real model: n_heads must be a multiple of n_kv_heads")
        if not self.engram_layer_ids or max(self.engram_layer_ids) >= self.n_layers:
            raise UserError(f"real model: engram_layer_ids must lie in 0..{self.n_layers - 1}")
        if self.table_MiB < 1:
            raise UserError("real model: table_MiB must be >= 1")
        if self.dtype not in DTYPES:
            raise UserError(f"real model: dtype must be one of {', '.join(DTYPES)}, got '{self.dtype}'")

    @property
    def row_dim(self) -> int:
        return self.n_embed_per_ngram // self.n_head_per_ngram

    def engram_vocab_size(self) -> tuple[int, ...]:
        """Rows per head table so that all Engram layers together hold about `table_MiB`."""
        heads = (self.max_ngram_size - 1) * self.n_head_per_ngram * len(self.engram_layer_ids)
        rows_per_head = self.table_MiB * MiB // (heads * self.row_dim * self.value_bytes)
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
    torch_threads: int = 0  # 0: one per CPU core
    repeats: int = 5  # rounds of timed runs (every placement once per round); the fewest
    # an adaptive stopping rule (measure_placements `until`) runs
    table_dir: str = ""  # where the mmap table file goes; "" = the system temp dir
    min_free_margin_GiB: float = 2.0  # never allocate past free memory minus this
    device: str = "auto"  # "auto": CUDA when torch sees it, else CPU; "cpu" forces CPU
    # Pin the compute thread(s) and the prefetch thread to cores of their own, where the
    # machine has enough: the simulator gives each its own core too.
    pin_threads: bool = True
    noise: NoiseLimits = field(default_factory=NoiseLimits)

    def __post_init__(self):
        if self.device not in DEVICES:
            raise UserError(f"unknown device '{self.device}' (known: {', '.join(DEVICES)})")


def quick_config() -> RunConfig:
    """All CPU placements in well under 3 minutes on a 2-core CPU, table still far beyond L3."""
    model = RealModelConfig(
        n_layers=4,
        hidden_size=384,
        n_heads=6,
        head_dim=64,
        n_kv_heads=2,
        intermediate_size=1024,
        vocab_size=16384,
        table_MiB=512,
    )
    # At least three short interleaved rounds, more while the overhead CIs are wide and the
    # budget lasts (engramsim.validate); overheads are paired with the baseline of each round.
    # One torch thread: with two, an OpenMP team on a 2-core host that other processes also use
    # stalls at every barrier (measured: a 10x spread between runs, against 1.5x with one), and
    # the other core is left to the prefetch thread, as a GPU host leaves CPU cores to gathers.
    return RunConfig(
        model=model,
        workload=WorkloadConfig(n_seqs=12, input_len=(32, 64), output_len=(32, 64)),
        torch_threads=1,
        repeats=3,
        device="cpu",
    )


def gpu_quick_config() -> RunConfig:
    """The GPU's quick run: a model wide enough that bf16 layers are not all launch overhead,
    a table of a few GiB (far beyond the GPU's 50 MiB L2 and the host's L3), a batch that
    decodes for a few hundred steps; all six placements in well under 3 minutes on an H200."""
    model = RealModelConfig(
        n_layers=8,
        hidden_size=2048,
        n_heads=16,
        head_dim=128,
        n_kv_heads=4,
        intermediate_size=5632,
        vocab_size=32000,
        table_MiB=4096,
        dtype="bf16",
    )
    return RunConfig(
        model=model,
        workload=WorkloadConfig(n_seqs=64, input_len=(64, 256), output_len=(64, 256)),
        torch_threads=0,
        repeats=3,
        device="cuda",
        min_free_margin_GiB=8.0,
    )


def tiny_config(table_dir: str = "") -> RunConfig:
    """For tests: a few seconds for every placement. On the CPU unless replaced (device="cuda")."""
    model = RealModelConfig(
        n_layers=3,
        hidden_size=64,
        n_heads=4,
        head_dim=16,
        n_kv_heads=2,
        intermediate_size=128,
        vocab_size=512,
        engram_layer_ids=(1,),
        n_head_per_ngram=2,
        n_embed_per_ngram=32,
        table_MiB=1,
    )
    return RunConfig(
        model=model,
        workload=WorkloadConfig(n_seqs=3, input_len=(5, 9), output_len=(3, 6)),
        torch_threads=1,
        repeats=1,
        table_dir=table_dir,
        min_free_margin_GiB=0.0,
        device="cpu",
    )


def staging_rows(prompt_lens, n_seqs: int, heads_per_layer: int) -> int:
    """Rows one Engram layer's staging buffer must hold: the largest step is a prefill of the
    longest prompt or a decode step of the whole batch. Pinned buffers are sized once, up
    front: pinning memory inside a timed run would be timed too."""
    return max(max(prompt_lens, default=0), n_seqs) * heads_per_layer


def engram_spec(model: RealModelConfig) -> EngramSpec:
    # The model's tokenizer is its compressed vocabulary: token ids are hashed as they are.
    return EngramSpec(
        layer_ids=model.engram_layer_ids,
        max_ngram_size=model.max_ngram_size,
        n_head_per_ngram=model.n_head_per_ngram,
        engram_vocab_size=model.engram_vocab_size(),
        seed=model.seed,
        compressed_vocab_size=model.vocab_size,
        compressed_pad_id=2,
        n_embed_per_ngram=model.n_embed_per_ngram,
        kernel_size=model.kernel_size,
        dtype=model.dtype,
    )


def to_model_spec(config: RunConfig | RealModelConfig) -> ModelSpec:
    """The identical model as the simulator sees it."""
    model = config.model if isinstance(config, RunConfig) else config
    backbone = Backbone(
        n_layers=model.n_layers,
        hidden_size=model.hidden_size,
        vocab_size=model.vocab_size,
        n_heads=model.n_heads,
        head_dim=model.head_dim,
        dtype=model.dtype,
        kv_dtype=model.dtype,
        n_kv_heads=model.n_kv_heads,
        intermediate_size=model.intermediate_size,
    )
    return ModelSpec(
        name="realmodel",
        description="engramsim.realmodel measured on this machine",
        backbone=backbone,
        engram=engram_spec(model),
    )


@dataclass(frozen=True)
class StepRecord:
    """One engine step (a prefill of one sequence, or one decode step of the running batch)."""

    phase: str  # "prefill" | "decode"
    seqs: int
    tokens: int  # tokens computed this step
    context_tokens: int  # sum over sequences of the tokens attention reads
    hash_s: float  # n-gram hashing at step start
    pre_s: float  # embedding + layers before the first Engram layer
    gather_s: float  # at the Engram layers: the inline gather, or the wait for the prefetch
    stall_s: float  # the part of gather_s spent waiting for a prefetch
    fusion_s: float  # Engram gate, value projection and short conv
    rest_s: float  # layers from the first Engram layer on (less Engram), sampling
    total_s: float
    rows: int  # rows gathered (all Engram layers)
    # The main thread's CPU time and run-queue wait over the step: wall time less CPU time is
    # waiting (for the prefetch, for I/O, or for a core); the run-queue wait is the last alone.
    thread_cpu_s: float = 0.0
    run_delay_s: float | None = None
    # Table pages this step read that no earlier step of the run had read: on a cold map, the
    # faults; the other reads hit pages the run itself brought into the page cache.
    new_pages: int = 0
    head_s: float = 0.0  # final norm and LM head (in rest_s in records made before it was split)

    @property
    def running_share(self) -> float:
        """The share of the step's wall time its thread was not waiting for a core (1 if unknown)."""
        if not self.run_delay_s or self.total_s <= 0:
            return 1.0
        return min(max(1 - self.run_delay_s / self.total_s, 0.05), 1.0)

    def quiet(self, limits: NoiseLimits) -> bool:
        """The step's thread was hardly kept off its core: its wall time is the machine's own."""
        return self.run_delay_s is None or 100 * self.run_delay_s <= limits.max_run_delay_pct * self.total_s


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
    mean_rest_s: float  # later layers, head, sampling, batch bookkeeping (no hash, no fusion)
    stall_s: float  # total


@dataclass(frozen=True)
class TimedRun:
    """One timed run of a placement: one round of the interleaved repeats."""

    wall_s: float
    cpu_s: float  # process CPU time over the run, all threads
    tok_s: float
    stall_s: float  # prefetch wait at the Engram layers
    busy_s: float  # time the prefetch thread spent gathering
    noise: RunNoise
    steps: tuple[StepRecord, ...]


@dataclass(frozen=True)
class MeasuredCase:
    placement: str
    tier: str
    prefetch: bool
    cache_state: str
    measured_tok_s: float  # median over repeats
    tok_s_runs: tuple[float, ...]
    wall_s: float  # of the median run
    cpu_s: float  # process CPU seconds of that run (all threads)
    load_avg_1m: float  # host load when it started: other processes share the cores
    output_tokens: int
    input_tokens: int
    steps: int
    stall_s: float  # total prefetch wait at the Engram layers
    prefetch_busy_s: float  # time the prefetch thread spent gathering
    phases: tuple[PhaseSummary, ...]
    step_records: tuple[StepRecord, ...]
    resident_before: float | None  # mmap: fraction of table pages in the page cache at start
    cache_note: str  # how the cold/warm state was set up, or why it could not be
    tokens_digest: str  # same digest across Engram placements = identical activations
    torch_threads: int
    table_bytes: int
    config: RunConfig
    device: str = "cpu"  # where the model ran: "cpu" or "cuda"
    # Seconds per cold page fault on this table file, timed alone at the start of every round
    # (mmap only): a virtual disk's fault time drifts over minutes. `page_fault_s` is their median.
    page_fault_s: float | None = None
    page_fault_s_rounds: tuple[float, ...] = ()
    # ...and on a thread pinned to the prefetch thread's cores (where a prefetching placement
    # faults; the compute thread's figure is the one above).
    prefetch_page_fault_s_rounds: tuple[float, ...] = ()
    # Prefetching CPU placements: what handing a fetch to the prefetch thread costs the model's
    # thread per step, timed alone before the rounds (`harness.time_prefetch_handoff`).
    prefetch_handoff_s: float | None = None
    runs: tuple[TimedRun, ...] = ()  # every round, in order (tok_s_runs are their rates)
    pinned: str = ""  # how threads were pinned to cores, or why they were not

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
