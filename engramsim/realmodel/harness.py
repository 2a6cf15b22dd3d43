"""Measure the real model's throughput with its Engram table in each placement.

The workload is nano-vLLM's bench.py: every sequence is submitted at once; each prompt is
prefilled (one sequence per step), then all sequences decode together with a KV cache, the
batch shrinking as sequences finish. Throughput = output tokens / wall time. Tokens are sampled
from the model's own logits with a seeded generator, so every Engram placement generates the
identical token stream (the digest proves it) and reads the identical rows.

On a CUDA machine the model runs on the GPU (RunConfig.device): each step ends when its sampled
tokens reach the host, which synchronizes the GPU, and step components are timed with CUDA
events (gpu.CudaStepTimer); the wall time of a run is taken between two synchronizations.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import mmap
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engramsim.errors import UserError
from engramsim.realmodel._torch import TORCH_DTYPES, torch
from engramsim.realmodel.config import (
    MeasuredCase,
    PhaseSummary,
    RunConfig,
    StepRecord,
    TablePlacement,
    TimedRun,
    WorkloadConfig,
    check_placements,
    engram_spec,
    placement,
    placements_for,
    resolve_device,
    staging_rows,
)
from engramsim.realmodel.engram_module import Addressing, EngramFusion
from engramsim.realmodel.model import EngramLM, KVCache, StepTimer
from engramsim.realmodel.noise import (
    NoiseMeter,
    RunNoise,
    available_cores,
    pin_this_thread,
    pinning_plan,
    thread_run_delay_s,
)
from engramsim.realmodel.placements import PrefetchRows, TableStore, check_room, make_source

WARMUP = WorkloadConfig(n_seqs=2, input_len=(16, 16), output_len=(4, 4), seed=12345)


@dataclass
class GenerationRequests:
    prompts: list[np.ndarray]
    output_lens: list[int]

    @property
    def max_len(self) -> int:
        return max(len(p) + o for p, o in zip(self.prompts, self.output_lens))


def make_requests(workload: WorkloadConfig, vocab_size: int) -> GenerationRequests:
    rng = np.random.default_rng(workload.seed)
    ins = rng.integers(workload.input_len[0], workload.input_len[1] + 1, size=workload.n_seqs)
    outs = rng.integers(workload.output_len[0], workload.output_len[1] + 1, size=workload.n_seqs)
    prompts = [rng.integers(0, vocab_size, size=int(n), dtype=np.int64) for n in ins]
    return GenerationRequests(prompts, [int(o) for o in outs])


@dataclass
class GenerationRun:
    wall_s: float
    cpu_s: float  # process CPU time over the run, all threads
    noise: RunNoise  # steal, other processes' load, our thread's run-queue wait
    records: list[StepRecord]
    tokens: np.ndarray  # every sequence's prompt + output, pad-filled
    logits: list = field(default_factory=list)  # per step, only when asked for


class _Run:
    """The mutable state of one generation run: caches, n-gram history, the sampler."""

    def __init__(self, model: EngramLM, reqs: GenerationRequests, seed: int):
        n, cfg = len(reqs.prompts), model.cfg
        self.device = model.embed.weight.device
        self.ctx = cfg.max_ngram_size - 1
        self.pad = 2  # compressed_pad_id of engram_spec(): pads n-gram windows at sequence start
        self.cache = KVCache(cfg, n, reqs.max_len, like=model.embed.weight)
        self.conv = {layer: model.engram[str(layer)].initial_state(n) for layer in model.engram_layers}
        # `ctx` leading pad columns, so the n-gram window of position p is columns p..p+ctx.
        self.hist = np.full((n, self.ctx + reqs.max_len), self.pad, dtype=np.int64)
        self.lengths = np.array([len(p) for p in reqs.prompts])
        self.remaining = np.array(reqs.output_lens)
        self.gen = torch.Generator().manual_seed(seed)
        self.step_ids: list = []  # each step's row ids (None without Engram)

    def sample(self, logits) -> np.ndarray:
        # On the host in fp32 with the host generator: the same sampler on every device, and
        # bringing the logits back is the step's synchronization point on a GPU.
        probs = torch.softmax(logits.float().cpu(), dim=-1)
        return torch.multinomial(probs, 1, generator=self.gen)[:, 0].numpy()

    def tensor(self, array: np.ndarray):
        return torch.from_numpy(array).to(self.device)

    def keep(self, rows: np.ndarray) -> None:
        """Only these batch rows keep running: compact the KV cache and the conv states."""
        index = self.tensor(rows)
        self.cache.keep(index)
        self.conv = {layer: s[index] for layer, s in self.conv.items()}


def _device_hooks(device):
    """(synchronize, step timer class) for a model on `device`."""
    if device.type == "cuda":
        from engramsim.realmodel.gpu import CudaStepTimer

        return torch.cuda.synchronize, CudaStepTimer
    return (lambda: None), StepTimer


def run_workload(
    model: EngramLM,
    source,
    addressing: Addressing | None,
    reqs: GenerationRequests,
    seed: int = 0,
    keep_logits: bool = False,
) -> GenerationRun:
    """Prefill every prompt, then decode the batch to completion; time each step's components."""
    run = _Run(model, reqs, seed)
    sync, run.timer = _device_hooks(run.device)
    records, logits_out = [], []
    memory = source.rows if source is not None else None
    meter = NoiseMeter()
    sync()
    meter.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for i, prompt in enumerate(reqs.prompts):
            records.append(_prefill(model, run, i, prompt, source, addressing, memory, logits_out, keep_logits))
        active = np.flatnonzero(run.remaining > 0)
        run.keep(active)
        while len(active):
            rec, active = _decode(model, run, active, source, addressing, memory, logits_out, keep_logits)
            records.append(rec)
    sync()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    noise = meter.stop()
    records = _count_new_pages(records, run.step_ids, model.cfg.row_dim * model.cfg.value_bytes)
    return GenerationRun(wall, cpu, noise, records, run.hist[:, run.ctx :].copy(), logits_out)


class _ThreadClock:
    """The calling thread's CPU time and run-queue wait since a step began."""

    def __init__(self):
        self.cpu0, self.delay0 = time.thread_time(), thread_run_delay_s()

    def read(self) -> tuple[float, float | None]:
        delay = thread_run_delay_s()
        waited = delay - self.delay0 if delay is not None and self.delay0 is not None else None
        return time.thread_time() - self.cpu0, waited


class PageTouches:
    """The table pages a run has read so far (row r spans bytes r*row_bytes .. +row_bytes)."""

    def __init__(self, row_bytes: int, page_bytes: int = mmap.PAGESIZE):
        self.row_bytes, self.page_bytes = row_bytes, page_bytes
        self.seen: set[int] = set()

    def new(self, rows: np.ndarray) -> int:
        """How many pages these rows read that no earlier call did."""
        start = rows.ravel().astype(np.int64) * self.row_bytes
        pages = np.unique(np.concatenate([start // self.page_bytes, (start + self.row_bytes - 1) // self.page_bytes]))
        fresh = [p for p in pages.tolist() if p not in self.seen]
        self.seen.update(fresh)
        return len(fresh)


def _begin(source, addressing, layers, window: np.ndarray, last_only: bool, timer: StepTimer, step_ids: list) -> int:
    """Hash the step's n-grams and hand the row ids to the source (and to `step_ids`, for
    `_count_new_pages` after the run); returns rows fetched."""
    if source is None:
        timer.mark("hash")
        step_ids.append(None)
        return 0
    ids = {layer: addressing.rows(window, layer, last_only) for layer in layers}
    timer.mark("hash")
    source.begin_step(ids)
    step_ids.append(ids)
    return sum(a.size for a in ids.values())


def _count_new_pages(records: list[StepRecord], step_ids: list, row_bytes: int) -> list[StepRecord]:
    """Each step's `new_pages`, counted after the run so the bookkeeping costs no step time."""
    touches = PageTouches(row_bytes)
    return [
        dataclasses.replace(rec, new_pages=touches.new(np.concatenate([a.ravel() for a in ids.values()])))
        if ids
        else rec
        for rec, ids in zip(records, step_ids)
    ]


def _prefill(model, run: _Run, i, prompt, source, addressing, memory, logits_out, keep) -> StepRecord:
    T = len(prompt)
    clock, timer, stall0 = _ThreadClock(), run.timer(), _stall(source)
    run.hist[i, run.ctx : run.ctx + T] = prompt
    rows = _begin(source, addressing, model.engram_layers, prompt[None], False, timer, run.step_ids)
    conv = {layer: s[i : i + 1] for layer, s in run.conv.items()}
    logits = model(
        run.tensor(prompt)[None],
        torch.arange(T, device=run.device)[None],
        run.cache,
        conv,
        memory,
        prefill_row=i,
        timer=timer,
    )
    for layer, s in conv.items():
        run.conv[layer][i] = s[0]
    run.hist[i, run.ctx + T] = run.sample(logits)[0]
    run.lengths[i] += 1
    run.remaining[i] -= 1
    timer.mark("rest")
    if keep:
        logits_out.append(logits.clone())
    return _record("prefill", 1, T, T, rows, timer, _stall(source) - stall0, clock)


def _decode(model, run: _Run, active, source, addressing, memory, logits_out, keep):
    """One decode step of the running batch; returns its record and the still-running rows."""
    clock, timer, stall0 = _ThreadClock(), run.timer(), _stall(source)
    pos = run.lengths[active] - 1  # the newest token: its K/V and Engram rows are computed now
    window = run.hist[active[:, None], pos[:, None] + np.arange(run.ctx + 1)]
    rows = _begin(source, addressing, model.engram_layers, window, True, timer, run.step_ids)
    tokens = run.tensor(run.hist[active, run.ctx + pos])[:, None]
    logits = model(
        tokens, run.tensor(pos)[:, None], run.cache, run.conv, memory, timer=timer, decode_ctx=int(pos.max()) + 1
    )
    run.hist[active, run.ctx + pos + 1] = run.sample(logits)
    run.lengths[active] += 1
    run.remaining[active] -= 1
    running = run.remaining[active] > 0
    if not running.all():  # compact the batch: finished sequences leave the caches
        run.keep(np.flatnonzero(running))
    timer.mark("rest")
    if keep:
        logits_out.append(logits.clone())
    rec = _record("decode", len(active), len(active), int((pos + 1).sum()), rows, timer, _stall(source) - stall0, clock)
    return rec, active[running]


def _stall(source) -> float:
    return source.stall_s if source is not None else 0.0


def _record(phase, seqs, tokens, context, rows, timer: StepTimer, stall, clock: _ThreadClock) -> StepRecord:
    cpu, delay = clock.read()
    b = timer.buckets  # on a GPU, from CUDA events: reading them waits for the step's kernels
    return StepRecord(
        phase=phase,
        seqs=seqs,
        tokens=tokens,
        context_tokens=context,
        hash_s=b["hash"],
        pre_s=b["pre"],
        gather_s=b["gather"],
        stall_s=stall,
        fusion_s=b["fusion"],
        rest_s=b["rest"],
        head_s=b["head"],
        total_s=sum(b.values()),
        rows=rows,
        thread_cpu_s=cpu,
        run_delay_s=delay,
    )


# --- measuring placements ------------------------------------------------------------------


def build_models(config: RunConfig, max_len: int, device: str = "cpu") -> dict[bool, EngramLM]:
    """The Engram model and the no-Engram baseline, which runs on the very same backbone
    tensors (`EngramLM.without_engram`)."""
    torch.manual_seed(config.model.seed)  # weights drawn on the host: the same on every device
    model = EngramLM(config.model, max_len).eval().to(device=device, dtype=TORCH_DTYPES[config.model.dtype])
    return {True: model, False: model.without_engram()}


def this_device(config: RunConfig) -> str:
    """The device a run uses: config.device resolved against what torch sees."""
    return resolve_device(config.device, torch.cuda.is_available())


class _Tables:
    """Opens the table for a placement and releases it after the run."""

    def __init__(self, store: TableStore | None):
        self.store = store

    @property
    def nbytes(self) -> int:
        return self.store.nbytes if self.store else 0

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def open(self, p: TablePlacement):
        if p.tier == "none":
            return None, None, ""
        if p.tier == "ram":
            return self.store.table, None, ""
        if p.tier == "host":
            return self.store.host_copy(), None, ""
        return self.store.open_mmap(p.cache_state)


# Stopping rule of the rounds: (runs so far by placement name, seconds spent) -> the reason to
# stop, or None to run another round.
StopRule = Callable[[dict[str, list[TimedRun]], float], "str | None"]


def fixed_rounds(n: int) -> StopRule:
    return lambda runs, spent_s: "repeats" if min(map(len, runs.values())) >= n else None


def measure_placements(
    config: RunConfig, placements=None, progress: Callable[[str], None] | None = None, until: StopRule | None = None
) -> list[MeasuredCase]:
    """Run the workload in every placement, round after round (each round runs every placement
    once, interleaved), until `until` says stop (default: `config.repeats` rounds).
    `placements` default to those of the run's device (config.placements_for)."""
    device = this_device(config)
    placements = placements_for(device) if placements is None else placements
    check_placements(device, placements)
    plist = [placement(name) for name in placements]
    say = progress or (lambda msg: None)
    threads = config.torch_threads or torch.get_num_threads()
    previous_threads, previous_cores = torch.get_num_threads(), available_cores()
    torch.set_num_threads(threads)
    tables = _Tables(None)
    try:
        pinned, prefetch_cores = _pin(config, threads)
        addressing = Addressing(engram_spec(config.model))
        reqs = make_requests(config.workload, config.model.vocab_size)
        warm = make_requests(WARMUP, config.model.vocab_size)
        models = build_models(config, max(reqs.max_len, warm.max_len), device)
        if any(p.has_engram for p in plist):
            tables = _make_tables(config, addressing, plist, device)
        make = _source_maker(
            device, models[True].engram_layers, addressing.spec.heads_per_layer, [reqs, warm], prefetch_cores
        )
        handoff = None
        if device == "cpu" and any(p.prefetch and p.has_engram for p in plist):
            say("timing the handoff of a fetch to the prefetch thread")
            handoff = time_prefetch_handoff(models[False], prefetch_cores)
        faults: list[float] = []
        prefetch_faults: list[float] = []  # on the prefetch thread's cores
        each_round = None
        if any(p.tier == "mmap" for p in plist):

            def each_round():
                say("timing cold page faults on the table file")
                faults.append(time_cold_faults(tables.store))
                prefetch_faults.append(time_cold_faults(tables.store, cores=prefetch_cores or set()))

        bench = lambda p, r: _one_run(
            models[p.has_engram],
            p,
            addressing if p.has_engram else None,  # noqa: E731
            tables,
            r,
            make,
        )
        runs = _rounds(plist, bench, reqs, warm, until or fixed_rounds(config.repeats), say, each_round)
        timed_faults = lambda p: p.tier == "mmap" and bool(faults)  # noqa: E731
        return [
            dataclasses.replace(
                _case(p, runs[p.name], reqs, threads, tables.nbytes, config, device),
                page_fault_s=statistics.median(faults) if timed_faults(p) else None,
                page_fault_s_rounds=tuple(faults) if timed_faults(p) else (),
                prefetch_page_fault_s_rounds=tuple(prefetch_faults) if timed_faults(p) else (),
                prefetch_handoff_s=handoff if p.prefetch and p.has_engram else None,
                pinned=pinned,
            )
            for p in plist
        ]
    finally:
        tables.close()
        torch.set_num_threads(previous_threads)
        pin_this_thread(previous_cores)


def _rounds(plist, bench, reqs, warm, until: StopRule, say, each_round=None) -> dict[str, list]:
    """Round-robin repeats: load from other processes on a shared host drifts over minutes, and
    interleaving spreads that drift over every placement instead of a few. A round is never
    cut short, so every round pairs each placement with its own baseline run. `each_round()`
    runs (untimed) at the start of every round: a micro-timing that drifts like the runs."""
    runs = {p.name: [] for p in plist}
    timed = {p.name: [] for p in plist}
    start = time.perf_counter()
    while True:
        n = len(runs[plist[0].name]) + 1
        if each_round is not None:
            each_round()
        for p in plist:
            say(f"round {n}: measuring {p.name}")
            if n == 1:  # kernels, allocator, threads
                bench(p, warm)
            runs[p.name].append(bench(p, reqs))
            timed[p.name].append(_timed(runs[p.name][-1], reqs))
        if until(timed, time.perf_counter() - start):
            return runs


def _pin(config: RunConfig, threads: int) -> tuple[str, set[int] | None]:
    """Pin the compute thread(s) here; (what was done, the prefetch thread's cores)."""
    if not config.pin_threads:
        return "off", None
    plan = pinning_plan(available_cores(), threads)
    if plan is None:
        return f"not pinned: {len(available_cores())} cores for {threads} compute thread(s) + prefetch", None
    compute, prefetch = plan
    if not pin_this_thread(compute):
        return "not pinned: the machine refused sched_setaffinity", None
    return f"compute on cores {sorted(compute)}, prefetch on {sorted(prefetch)}", prefetch


def _make_tables(config: RunConfig, addressing: Addressing, plist: list[TablePlacement], device: str):
    m = config.model
    table_bytes = addressing.total_rows * m.row_dim * m.value_bytes
    copies = 2 if any(p.tier == "host" for p in plist) else 1
    needs_file = any(p.tier == "mmap" for p in plist)
    if needs_file and m.dtype != "fp32":
        raise UserError("real model: the mmap placements store the table as fp32; use dtype fp32")
    check_room(
        table_bytes, copies, needs_file, Path(config.table_dir or tempfile.gettempdir()), config.min_free_margin_GiB
    )
    if device == "cuda":
        from engramsim.realmodel.gpu import GpuTables, check_device_room

        check_device_room(table_bytes, config.min_free_margin_GiB)
        return GpuTables(addressing.total_rows, m.row_dim, m.seed, m.dtype)
    return _Tables(TableStore(addressing.total_rows, m.row_dim, m.seed, config.table_dir, TORCH_DTYPES[m.dtype]))


def _source_maker(
    device: str,
    layers: list[int],
    heads_per_layer: int,
    all_requests: list[GenerationRequests],
    prefetch_cores: set[int] | None = None,
):
    """`make(placement, table)` -> the row source of a run. GPU sources get staging sized for
    the largest step of every request set they will serve (the warm-up's too)."""
    if device != "cuda":
        return lambda p, table: make_source(p, table, prefetch_cores)
    from engramsim.realmodel.gpu import make_gpu_source

    capacity = max(staging_rows([len(x) for x in r.prompts], len(r.prompts), heads_per_layer) for r in all_requests)
    return lambda p, table: make_gpu_source(p, table, layers, capacity)


def _timed(run, reqs: GenerationRequests) -> TimedRun:
    result, (stall, busy), _, _ = run
    return TimedRun(
        wall_s=result.wall_s,
        cpu_s=result.cpu_s,
        tok_s=sum(reqs.output_lens) / result.wall_s,
        stall_s=stall,
        busy_s=busy,
        noise=result.noise,
        steps=tuple(result.records),
    )


def _case(
    p: TablePlacement, runs: list, reqs: GenerationRequests, threads: int, table_bytes: int, config, device: str
) -> MeasuredCase:
    output_tokens = sum(reqs.output_lens)
    timed = [_timed(r, reqs) for r in runs]
    rates = [t.tok_s for t in timed]
    # The median repeat: this VM's speed drifts by tens of percent over minutes, in both
    # directions, so neither the fastest nor the slowest run is representative.
    median = sorted(range(len(runs)), key=lambda k: rates[k])[len(runs) // 2]
    result, source_stats, resident, note = runs[median]
    return MeasuredCase(
        placement=p.name,
        tier=p.tier,
        prefetch=p.prefetch,
        cache_state=p.cache_state,
        measured_tok_s=rates[median],
        tok_s_runs=tuple(rates),
        wall_s=result.wall_s,
        cpu_s=result.cpu_s,
        load_avg_1m=result.noise.load_avg_1m,
        output_tokens=output_tokens,
        input_tokens=sum(len(x) for x in reqs.prompts),
        steps=len(result.records),
        stall_s=source_stats[0],
        prefetch_busy_s=source_stats[1],
        phases=_phases(result.records),
        step_records=tuple(result.records),
        resident_before=resident,
        cache_note=note,
        tokens_digest=hashlib.sha256(result.tokens.tobytes()).hexdigest()[:16],
        torch_threads=threads,
        table_bytes=table_bytes if p.has_engram else 0,
        config=config,
        device=device,
        runs=tuple(timed),
    )


def _one_run(model, p: TablePlacement, addressing, tables, reqs: GenerationRequests, make=make_source):
    table, resident, note = tables.open(p)
    source = make(p, table) if p.has_engram else None
    try:
        result = run_workload(model, source, addressing, reqs)
    finally:
        if source is not None:
            source.close()
    stats = (source.stall_s, source.busy_s) if source is not None else (0.0, 0.0)
    del table, source  # drop the map before the next run's cold start
    return result, stats, resident, note


def _phases(records: list[StepRecord]) -> tuple[PhaseSummary, ...]:
    out = []
    for phase in ("prefill", "decode"):
        recs = [r for r in records if r.phase == phase]
        if not recs:
            continue
        mean = lambda f: statistics.fmean(f(r) for r in recs)  # noqa: E731
        out.append(
            PhaseSummary(
                phase=phase,
                steps=len(recs),
                tokens=sum(r.tokens for r in recs),
                mean_step_s=mean(lambda r: r.total_s),
                mean_pre_s=mean(lambda r: r.pre_s),
                mean_gather_s=mean(lambda r: r.gather_s),
                mean_hash_s=mean(lambda r: r.hash_s),
                mean_fusion_s=mean(lambda r: r.fusion_s),
                mean_rest_s=mean(lambda r: r.rest_s),
                stall_s=sum(r.stall_s for r in recs),
            )
        )
    return tuple(out)


def time_engram_parts(config: RunConfig, batch_sizes=(1, 4, 16, 64), repeats: int = 20) -> dict:
    """Seconds (median of `repeats`) of the engine's Engram work per decode step of B sequences, timed in
    isolation from any placement run: {"fusion": [(B, s)], "hashing": [(B, s)]}, where hashing is
    the engine's own addressing call (n-gram hash of every Engram layer plus row offsets).
    Caches are flushed before every call: in a step, the backbone's layers run between two calls
    and evict what they touched (measured here on the quick model: 2-10x the warm-cache time)."""
    cfg = config.model
    device = this_device(config)
    sync = _device_hooks(torch.device(device))[0]
    threads = config.torch_threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(cfg.seed)
        memory_dim = (cfg.max_ngram_size - 1) * cfg.n_embed_per_ngram
        fusion = EngramFusion(cfg.hidden_size, memory_dim, cfg.kernel_size, dilation=cfg.max_ngram_size).eval()
        opts = {"device": device, "dtype": TORCH_DTYPES[cfg.dtype]}
        fusion = fusion.to(**opts)
        addressing = Addressing(engram_spec(cfg))
        rng = np.random.default_rng(cfg.seed)
        out = {"fusion": [], "hashing": []}
        evict = _cache_evictor(device)
        with torch.inference_mode():
            for b in batch_sizes:
                hidden, memory = torch.randn(b, 1, cfg.hidden_size, **opts), torch.randn(b, 1, memory_dim, **opts)
                state = fusion.initial_state(b)
                window = rng.integers(0, cfg.vocab_size, size=(b, cfg.max_ngram_size))

                def fuse():
                    fusion(hidden, memory, state)
                    sync()  # on a GPU, the kernels' time, not only their launch

                out["fusion"].append((b, _median_time(fuse, repeats, evict)))
                out["hashing"].append(
                    (
                        b,
                        _median_time(
                            lambda: [addressing.rows(window, layer, True) for layer in cfg.engram_layer_ids],
                            repeats,
                            evict,
                        ),
                    )
                )
        return out
    finally:
        torch.set_num_threads(previous)


def time_prefetch_handoff(model: EngramLM, cores: set[int] | None, batch: int = 8, pairs: int = 300) -> float:
    """Seconds a decode step of `model` (the baseline) loses when one job is handed to a
    prefetch thread pinned to `cores` at its start (waking the thread, taking turns at the
    interpreter lock): the median of paired differences, steps with and without a job that does
    nothing, interleaved; the forward pass alone is timed, not a wait for the job. The
    prefetching placements pay it per Engram layer and step beside their fetch; their gathers'
    own cost is the gather model's."""
    cfg = model.cfg
    like = next(model.parameters())
    ctx = min(64, model.rope_cos.shape[0])  # a decode step at a context of the runs' kind
    cache = KVCache(cfg, batch, ctx, like=like)
    tokens = torch.zeros(batch, 1, dtype=torch.long, device=like.device)
    pos = torch.full((batch, 1), ctx - 1, device=like.device)
    worker = PrefetchRows(lambda layer, ids: None, cores)
    ids = {0: np.zeros((batch, 1), dtype=np.int64)}

    def step(handoff: bool) -> float:
        start = time.perf_counter()
        if handoff:
            worker.begin_step(ids)
        model(tokens, pos, cache, {}, None, decode_ctx=ctx)
        took = time.perf_counter() - start
        if handoff:  # a wait for the thread would be a stall, the fetch model's: not timed here
            worker.rows(0)
        return took

    def pair(i: int) -> float:  # which runs first alternates: neither gets the warmer caches
        if i % 2:
            return -step(False) + step(True)
        return step(True) - step(False)

    try:
        with torch.inference_mode():
            for i in range(10):
                pair(i)
            diffs = [pair(i) for i in range(pairs)]
    finally:
        worker.close()
    return max(statistics.median(diffs), 0.0)


def _cache_evictor(device: str, nbytes: int = 128 * 2**20):
    """A call that streams `nbytes` through the caches (more than any CPU's last-level cache, or
    a GPU's L2), so the next timed call starts cache-cold, as it does inside a forward pass."""
    buf = torch.ones(nbytes // 4, device=device)
    sync = _device_hooks(torch.device(device))[0]

    def evict():
        buf.add_(1.0)
        sync()

    return evict


def _median_time(call, repeats: int, before=None, warmup: int = 3) -> float:
    """The median of `repeats` calls after a warm-up, like the placement runs; `before()` runs,
    untimed, ahead of every call."""
    times = []
    for i in range(repeats + warmup):
        if before is not None:
            before()
        t0 = time.perf_counter()
        call()
        if i >= warmup:  # allocator, kernels and caches settle first
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_cold_faults(
    store: TableStore, rows: int = 1024, repeats: int = 3, seed: int = 1, cores: set[int] | None = None
) -> float:
    """Seconds per cold page fault on the model's own table file: one thread gathers `rows`
    random rows from a freshly dropped map (MADV_RANDOM, as in the mmap placements); median over
    repeats. The primitive the mmap-cold placements pay, timed alone, on the same file and size:
    a generic profile's scratch file can sit differently in a virtual disk's caches.

    `cores`: time it on a thread of its own pinned there (the prefetch thread's cores), else on
    the calling thread. Faults cost a core-dependent amount: on this VM 55 us on core 1, which
    takes the virtual disk's interrupts (/proc/interrupts), against 65 us on core 0 (likely the
    wake-up of the faulting core when the read completes on the other)."""
    if cores is not None:
        out: dict = {}

        def work():
            try:
                out["s"] = _pinned_faults(store, rows, repeats, seed, cores)
            except BaseException as e:  # surfaced in the calling thread
                out["error"] = e

        thread = threading.Thread(target=work, name="engram-fault-timer")
        thread.start()
        thread.join()
        if "error" in out:
            raise out["error"]
        return out["s"]
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(repeats):
        table, _, _ = store.open_mmap("cold")
        idx = torch.from_numpy(rng.integers(0, table.shape[0], size=rows))
        start = time.perf_counter()
        torch.index_select(table, 0, idx)
        times.append((time.perf_counter() - start) / rows)
        del table
        gc.collect()  # the map must be gone before the next cold drop
    return statistics.median(times)


def _pinned_faults(store: TableStore, rows: int, repeats: int, seed: int, cores: set[int]) -> float:
    pin_this_thread(cores)
    return time_cold_faults(store, rows, repeats, seed)
