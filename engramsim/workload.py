"""Workloads: which requests arrive when and how long their prompts and outputs are. Presets
live in workloads/*.toml. The engine limits that serve them come from an engine preset
(engines/*.toml); a workload's optional [engine] table overrides some of them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from engramsim.errors import UserError
from engramsim.presets import build, load_toml, resolve, spec
from engramsim.units import NS, US

KINDS = ("offline", "poisson", "closed")
LENGTHS_FROM = ("numpy", "bench.py")


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
    # --- How steps run (nano-vLLM unless set otherwise) ---
    # Decode steps replay CUDA graphs (one launch for the whole forward); prefill runs eagerly
    # and launches every kernel. nano-vLLM's bench.py runs with enforce_eager=False.
    decode_cuda_graphs: bool = spec("decode_cuda_graphs", kind=bool, default=False)
    # Piecewise graphs (vLLM): the graph is split around layers the host must feed, so rows a
    # CPU stages need only be in place at the Engram layer. A whole-model graph (nano-vLLM)
    # needs them before the replay starts.
    piecewise_graphs: bool = spec("piecewise_graphs", kind=bool, default=False)
    # vLLM-style: prompts are split into chunks that share a step with the running decodes,
    # within max_num_batched_tokens (vLLM V1 scheduler); nano-vLLM prefills whole prompts alone.
    chunked_prefill: bool = spec("chunked_prefill", kind=bool, default=False)
    # vLLM-style async scheduling: the host prepares step n+1 while the GPU runs step n, so
    # host work costs only what exceeds the GPU's time.
    async_scheduling: bool = spec("async_scheduling", kind=bool, default=False)
    # Share of the SMs a zero-copy gather kernel holds while it runs beside the compute (vLLM
    # launches it on a side stream with half the grid).
    zero_copy_sm_share: float = spec("zero_copy_sm_share", lo=0, lo_open=False, hi=1.0, default=0.0)
    # Speculative decoding: each decode step verifies `spec_tokens` drafted tokens per sequence
    # (spec_tokens + 1 positions), and each drafted token is accepted with probability
    # `accept_rate` given that the ones before it were: a step yields (1 - a^(K+1)) / (1 - a)
    # tokens per sequence on average.
    spec_tokens: int = spec("spec_tokens", lo=0, lo_open=False, kind=int, default=0, hi=64)
    accept_rate: float = spec("accept_rate", lo=0, lo_open=False, hi=1.0, default=0.0)
    # --- Host work of one step, on the CPU where it was measured (see engine_host.py) ---
    # Per step (scheduler entry, sampling set-up, the final sync), for any model...
    step_host_s: float = spec("step_host_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e7)
    # ...or, per model, fitted on that model's no-Engram baseline (an engine preset's
    # [fitted_step_host_us] table: model name = us; `engramsim paper --fit`), as (model, s) pairs.
    fitted_step_host_s: tuple = ()
    # Per sequence in the step (KV block bookkeeping, input lists, post-processing).
    seq_host_s: float = spec("seq_host_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e6)
    # Per token in the step (prefill input lists and their conversion to tensors).
    token_host_s: float = spec("token_host_ns", scale=NS, lo=0, lo_open=False, default=0.0, hi=1e9)
    # Engram host work per sequence in a step: collecting its last max_ngram_size tokens into
    # the array the hash reads (serial with the hash on the engine thread).
    engram_seq_host_s: float = spec("engram_seq_host_ns", scale=NS, lo=0, lo_open=False, default=0.0, hi=1e9)
    # Host cost of dispatching one eager operator (PyTorch dispatcher and binding); the CUDA
    # driver's launch (`kernel_launch_us` of the GPU) comes on top.
    op_dispatch_s: float = spec("op_dispatch_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e6)
    # The Engram module's RMSNorms as one fused kernel each (nano-vLLM's compiled RMSNorm, or
    # torch.nn.RMSNorm on CUDA from PyTorch 2.9: pytorch/pytorch#153666), or false: as PyTorch
    # 2.4-2.8 runs the demo's torch.nn.RMSNorm, op by op in fp32 (`costs.RMSNORM_COMPOSITE`).
    engram_norm_fused: bool = spec("engram_norm_fused", kind=bool, default=True)
    # Kernels one backbone layer launches when run eagerly.
    kernels_per_layer: int = spec("kernels_per_layer", lo=0, lo_open=False, kind=int, default=0, hi=1e5)
    # The hash call cost (`hash_call_us`) of the CPU these host costs were measured on: a host
    # whose profiled hash call is k times slower runs them k times slower (0: no scaling).
    ref_hash_call_s: float = spec("ref_hash_call_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e7)

    def step_host_for(self, model: str) -> float:
        """The per-step host cost: fitted on this model's baseline if it was, else the default."""
        return dict(self.fitted_step_host_s).get(model, self.step_host_s)

    @property
    def positions_per_decode(self) -> int:
        """Positions each sequence computes in a decode step: its last token plus the drafts."""
        return 1 + self.spec_tokens

    @property
    def tokens_per_decode(self) -> float:
        """Expected tokens a sequence gains per decode step under speculative decoding."""
        a, k = self.accept_rate, self.spec_tokens
        return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


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
    # closed: `concurrency` streams, each sending its next request when its last one ends
    # (batch-1 chat is concurrency 1).
    concurrency: int = spec("concurrency", lo=0, lo_open=False, hi=1e6, kind=int, default=0)
    description: str = spec("description", kind=str, default="")
    # numpy: lengths from numpy's generator. bench.py: the exact draws of nano-vLLM's bench.py
    # (Python `random.seed(seed)`, then per request randint(min, max) prompt tokens of
    # randint(0, 10000) each, then every output length), so seed 0 gives bench.py's requests.
    lengths_from: str = spec("lengths_from", kind=str, default="numpy")
    engine: Engine = field(default_factory=Engine)
    # Keys of the workload's own [engine] table: they override the engine preset's limits.
    engine_overrides: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"workload {self.name}: kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if self.input_len_min > self.input_len_max or self.output_len_min > self.output_len_max:
            raise UserError(f"workload {self.name}: a length range has min > max")
        if self.lengths_from not in LENGTHS_FROM:
            raise UserError(
                f"workload {self.name}: lengths_from must be one of {', '.join(LENGTHS_FROM)}, "
                f"got '{self.lengths_from}'"
            )
        if self.kind == "poisson" and self.rate_per_s <= 0:
            raise UserError(f"workload {self.name}: a poisson workload needs rate_per_s > 0")
        if self.kind == "offline" and self.rate_per_s:
            raise UserError(
                f"workload {self.name}: rate_per_s does nothing in an offline workload (every "
                f'request arrives at once); remove it or set kind = "poisson"'
            )
        if self.kind == "closed" and self.concurrency < 1:
            raise UserError(f"workload {self.name}: a closed workload needs concurrency >= 1")

    def closed_loop(self, concurrency: int) -> Workload:
        """The same requests sent by `concurrency` streams (`simulate --concurrency`)."""
        if concurrency < 1:
            raise UserError(f"--concurrency must be at least 1, got {concurrency}")
        return replace(self, kind="closed", concurrency=concurrency)

    @property
    def max_seq_len(self) -> int:
        return self.input_len_max + self.output_len_max

    def requests(self, seed: int) -> Requests:
        """Lengths are Uniform over [min, max] inclusive, like nano-vLLM's bench.py randint."""
        rng = np.random.default_rng(seed)
        n = self.num_seqs
        if self.lengths_from == "bench.py":
            inputs, outputs = self._bench_py_lengths(seed)
        else:
            inputs = rng.integers(self.input_len_min, self.input_len_max + 1, size=n)
            outputs = rng.integers(self.output_len_min, self.output_len_max + 1, size=n)
        if self.kind in ("offline", "closed"):
            arrivals = np.zeros(n)  # closed: each is sent when a stream frees up
        else:
            arrivals = np.cumsum(rng.exponential(1.0 / self.rate_per_s, size=n))
        return Requests(arrivals, inputs, outputs)

    def _bench_py_lengths(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """nano-vLLM bench.py's draws: the prompt token ids consume the same generator, so they
        are drawn (and dropped) to keep the output lengths exact."""
        words = _PythonRandomWords(seed)
        inputs = []
        for _ in range(self.num_seqs):
            inputs.append(self.input_len_min + int(words.below(self.input_len_max - self.input_len_min + 1, 1)[0]))
            words.below(10001, inputs[-1])  # the prompt's token ids: randint(0, 10000) each
        outputs = self.output_len_min + words.below(self.output_len_max - self.output_len_min + 1, self.num_seqs)
        return np.array(inputs), outputs.astype(np.int64)


def load_workload(name_or_path: str | Path) -> Workload:
    path = resolve("workload", name_or_path)
    data = load_toml(path)
    data.setdefault("name", path.stem)
    return workload_from_dict(data, str(path))


def workload_from_dict(data: dict, where: str) -> Workload:
    data = dict(data)
    table = data.pop("engine", {})
    engine = build(Engine, table, f"{where} [engine]")
    keys = {f.metadata["key"]: f.name for f in fields(Engine) if "key" in f.metadata}
    overrides = {keys[k]: getattr(engine, keys[k]) for k in table}
    try:
        return replace(build(Workload, data, where), engine=engine, engine_overrides=overrides)
    except UserError as e:  # __post_init__'s checks do not know the file; build's already name it
        raise UserError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


def with_engine(workload: Workload, engine) -> Workload:
    """The workload served by `engine` (an EngineSpec): its limits, then the workload's overrides."""
    return replace(workload, engine=engine.limits(workload.engine_overrides))


def with_speculation(workload, spec_tokens: int | None, accept_rate: float | None):
    """The workload with `simulate --spec-tokens / --accept-rate` (None: the engine's own)."""
    if spec_tokens is None and accept_rate is None:
        return workload
    if spec_tokens and accept_rate is None:
        raise UserError("speculative decoding needs --accept-rate (the share of drafted tokens accepted)")
    eng = workload.engine
    return replace(
        workload,
        engine=replace(
            eng,
            spec_tokens=eng.spec_tokens if spec_tokens is None else spec_tokens,
            accept_rate=eng.accept_rate if accept_rate is None else accept_rate,
        ),
    )


class _PythonRandomWords:
    """Python's `random.Random(seed)` draws, fast: the same Mersenne Twister state runs in
    numpy, and `randint(a, a + n - 1)` is CPython's rejection sampling: take the top
    n.bit_length() bits of one 32-bit word, retry while >= n."""

    def __init__(self, seed: int):
        state = random.Random(seed).getstate()[1]
        self.rs = np.random.RandomState()
        self.rs.set_state(("MT19937", np.array(state[:624], dtype=np.uint32), state[624]))
        self.buf = self.rs.randint(0, 2**32, size=1 << 20, dtype=np.uint64)
        self.pos = 0

    def below(self, n: int, count: int) -> np.ndarray:
        """`count` draws of randrange(n), consuming words as CPython does."""
        shift = np.uint64(32 - n.bit_length())
        window = 2 * count + 64
        while True:
            if self.pos + window > len(self.buf):
                more = self.rs.randint(0, 2**32, size=max(window, 1 << 20), dtype=np.uint64)
                self.buf = np.concatenate([self.buf[self.pos :], more])
                self.pos = 0
            values = self.buf[self.pos : self.pos + window] >> shift
            taken = np.flatnonzero(values < n)
            if len(taken) >= count:
                break
            window *= 2
        self.pos += int(taken[count - 1]) + 1 if count else 0
        return values[taken[:count]]
