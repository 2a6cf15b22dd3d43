"""The SimPy model: GPU replicas run a continuous-batching step loop; each step's Engram fetch
flows through shared host resources while the layers before the Engram layer compute.

One step of a replica:
  hash the step's tokens (CPU)  ->  start the fetch for every Engram layer (prefetch)
  compute layers [0, l)  ->  wait for layer l's rows (any wait is a stall)  ->  Engram fusion
  ...  ->  remaining layers and the LM head  ->  host-side step overhead (schedule, sample)
Without prefetch, the fetch starts only when the Engram layer is reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import simpy

from engramsim import costs
from engramsim.hardware import Hardware
from engramsim.iopolicy import IOPolicy
from engramsim.model import ModelSpec
from engramsim.rows import RowModel
from engramsim.rows.warmup import ColdStart
from engramsim.sim.flows import FlowNetwork, Resource
from engramsim.sim.scheduler import Seq, make_scheduler
from engramsim.sim.tiers import Fetcher, HostResources, Placement, pool_list, pool_resources
from engramsim.workload import Requests, Workload


@dataclass
class StepStats:
    steps: int = 0
    prefill_steps: int = 0
    stall_s: float = 0.0
    prefill_stall_s: float = 0.0
    fetched_rows: float = 0.0
    hit_rows: float = 0.0
    # Time each Engram mechanism added to the replicas' timelines (summed over replicas).
    hash_s: float = 0.0  # host hashing of the step's tokens (and building its indices)
    index_s: float = 0.0  # copying the indices to the GPU, for gathers that run there
    launch_s: float = 0.0  # eager launches of the module beyond what the GPU hides
    fusion_s: float = 0.0  # the module's GPU compute (and HBM gathers of cached rows)
    kernel_fixed_s: float = 0.0  # the module's kernels' fixed GPU time beyond their roofline
    sm_s: float = 0.0  # compute slowed by zero-copy gathers holding SMs
    exchange_s: float = 0.0  # Engram DP sharding's all-gathers of ids and rows between replicas
    host_s: float = 0.0  # the engine's own host work that the GPU did not hide
    stall_by_layer_s: dict = field(default_factory=dict)  # Engram layer -> seconds waited for rows


class LayerRows(NamedTuple):
    """One step's rows at one Engram layer, per GPU."""

    hbm_rows: float  # gathered in HBM: the whole lookup for the hbm tier, else cache hits
    fetched_rows: float  # brought from the table's tier
    dram_hit_rate: float  # ssd tier: share of fetched rows a DRAM cache in front of it serves


@dataclass(frozen=True)
class Lookahead:
    """A fetch started during one prefill step for the prompts the next one will admit."""

    seq_ids: tuple[int, ...]
    rows: dict[int, LayerRows]
    pending: dict  # Engram layer -> event that fires when its rows are in HBM


@dataclass
class RawRun:
    """What one simulation produced, before it is summarised."""

    seqs: list[Seq]
    makespan_s: float
    stats: StepStats
    resources: list[Resource]
    preemptions: int
    limited_s: dict
    bounds: dict = field(default_factory=dict)  # tag -> {what held a transfer back most: count}


@dataclass(frozen=True)
class ServerSetup:
    hw: Hardware
    model: ModelSpec
    workload: Workload
    placement: Placement | None  # None: the no-Engram baseline
    gpus: int
    tp: int
    kv_blocks: int
    row_model: RowModel | None
    prefetch: bool = True
    io: IOPolicy = IOPolicy()
    cold_start: ColdStart | None = None  # None: hot-row caches start warm (steady-state hit rate)
    ep: int = 1  # expert-parallel ranks (ep > tp: data-parallel replicas exchange tokens per MoE layer)
    engram_dp: int = 1  # replicas splitting one Engram table (engine `engram_dp_sharding`): they exchange ids and rows


class Replica:
    def __init__(
        self,
        env,
        setup: ServerSetup,
        fetchers: list[Fetcher],
        stats: StepStats,
        net: FlowNetwork,
        host: HostResources,
        index: int = 0,
        recorder=None,
    ):
        self.env, self.setup, self.fetchers, self.stats = env, setup, fetchers, stats
        self.net, self.host = net, host
        # A timeline recorder (engramsim.report.timeline.RunRecorder) or None: nothing recorded.
        self.index, self.recorder = index, recorder
        self.scheduler = make_scheduler(setup.workload.engine, setup.kv_blocks)
        self.wakeup = env.event()
        self.lookahead: Lookahead | None = None
        self.last_gpu_s = 0.0  # GPU time of the previous step, which async host work hides
        self.fetch_started: dict = {}  # when each Engram layer's fetch started and ended
        self.fetch_done: dict = {}
        # Host work was measured on a reference CPU; this host runs it as much slower as its hash.
        ref = setup.workload.engine.ref_hash_call_s
        self.cpu_scale = setup.hw.host.hash_call_s / ref if ref and setup.hw.host.hash_call_s else 1.0
        self.cache_rows = self.dram_cache_rows = 0
        spec, placement = setup.model.engram, setup.placement
        if spec and placement:
            # Caches are split across Engram layers; TP ranks cache disjoint shards in HBM (each
            # rank caches the same hot rows when every rank fetches every head).
            shards = setup.tp if placement.rank_rows == "shard" else 1
            self.cache_rows = int(placement.hbm_cache_bytes / spec.row_bytes / len(spec.layer_ids)) * shards
            self.dram_cache_rows = int(placement.dram_cache_bytes / spec.row_bytes / len(spec.layer_ids))
        # A cache that starts cold: its hit rate follows the lookups this replica has made.
        self.warmup = (
            {l: setup.cold_start.curve(self.cache_rows, l) for l in spec.layer_ids}
            if spec and placement and setup.cold_start and self.cache_rows
            else {}
        )
        self.lookups = dict.fromkeys(spec.layer_ids, 0.0) if spec else {}
        # What every step computes alike, once (the same arithmetic, so the same floats):
        bb, eng = setup.model.backbone, setup.workload.engine
        self.kv_layer_bytes = setup.model.kv_bytes_per_token_per_rank(setup.tp) / bb.n_layers
        self.step_host_s = eng.step_host_for(setup.model.name)
        # Kernels per backbone layer: the architecture's own count where its preset gives one, for
        # engines that count kernels at all (0: an engine whose launches are not modelled).
        self.layer_kernels = (bb.kernels_per_layer or eng.kernels_per_layer) if eng.kernels_per_layer else 0
        self.engram_layers = sorted(spec.layer_ids) if spec else []
        # The Engram module's fixed kernel time at each Engram layer.
        self.engram_fixed_s = costs.kernels_fixed_s(
            setup.hw.gpu, costs.engram_kernels(bb.hc_mult, eng.engram_norm_fused)
        )
        # ...and pure functions of a step's token count, which repeats from step to step.
        self.fusion_s: dict[int, float] = {}  # tokens -> costs.engram_module_s
        self.unique_rows: dict[tuple[int, int], float] = {}  # (tokens, layer) -> row_model.unique_rows
        self.launch_s: dict[tuple[bool, bool], tuple[float, float]] = {}  # see _launch_s

    def submit(self, seq: Seq):
        self.scheduler.add(seq)
        if not self.wakeup.triggered:
            self.wakeup.succeed()

    def run(self, total: int, done: list[Seq], completions: simpy.Store | None = None):
        """Serve until `total` sequences are done; each completion also goes to `completions`
        (the closed loop's streams wait on it)."""
        while len(done) < total:
            batch, prefill = self.scheduler.schedule() if not self.scheduler.idle() else ([], False)
            if not batch:
                if self.scheduler.running and not self.scheduler.waiting:
                    raise RuntimeError("scheduler stuck with running sequences")
                self.wakeup = self.env.event()
                yield self.wakeup
                continue
            yield from self.step(batch, prefill)
            completed = self.scheduler.finish_step(batch, self.env.now, prefill)
            done.extend(completed)
            for seq in completed if completions is not None else ():
                completions.put(seq)

    def step(self, batch: list[Seq], prefill: bool):
        """One engine step: host work, then the forward pass with the Engram fetch beside it.

        A synchronous engine (nano-vLLM) pays its host work and the Engram hash in series with
        the GPU; an async one (vLLM) prepares the step while the previous one computes, so only
        host work beyond the previous step's GPU time shows. An eager forward pass takes the
        longer of its GPU time and the host's launches; a CUDA-graph replay costs one launch.
        With decode graphs, rows a CPU gathers must be staged before the replay starts.
        """
        s = self.setup
        eng, bb, gpu = s.workload.engine, s.model.backbone, s.hw.gpu
        step_started = self.env.now
        shape = self._shape(batch, prefill)
        comp = costs.step_compute(gpu, bb, shape, s.tp, self.kv_layer_bytes, self.layer_kernels, s.ep)
        draft = 0.0 if prefill else costs.draft_s(gpu, bb, len(batch), eng.spec_tokens, s.tp, self.layer_kernels)
        self.stats.steps += 1
        self.stats.prefill_steps += prefill
        engram = bool(s.model.engram and s.placement)
        graphs = eng.decode_cuda_graphs and not prefill
        host = (
            self.cpu_scale
            * costs.host_work_s(self.step_host_s, eng.seq_host_s, eng.token_host_s, shape.seqs, shape.tokens)
            + gpu.step_overhead_s
        )
        host_hidden = self.last_gpu_s if eng.async_scheduling else 0.0
        rows = pending = None
        # Prestaging issues the reads as soon as the step's tokens are known, before the host's
        # per-step work, which then runs beside them.
        prestage = engram and s.io.prestage
        if prestage:
            rows, pending = yield from self._engram_inputs(batch, prefill, shape, 0.0)
        yield from self._host(host, host_hidden)
        host_hidden = max(0.0, host_hidden - host)
        if engram and not prestage:
            rows, pending = yield from self._engram_inputs(batch, prefill, shape, host_hidden)
            if graphs and not eng.piecewise_graphs and s.placement.path != "uva" and s.prefetch:
                waited_from = self.env.now  # staged rows must be in place before the replay
                yield simpy.AllOf(self.env, list(pending.values()))
                self._stall(self.env.now - waited_from, prefill, min(pending))
        started = self.env.now
        gpu_s = yield from self._forward(comp, shape, rows, pending, prefill, draft)
        yield from self._launches(graphs, engram, gpu_s, self.env.now - started)
        self.last_gpu_s = gpu_s
        if self.recorder:
            self.recorder.step(
                self.index,
                step_started,
                self.env.now,
                prefill,
                len(batch),
                shape.tokens,
                s.kv_blocks - self.scheduler.free_blocks,
            )

    def _forward(self, comp: costs.StepCompute, shape: costs.BatchShape, rows, pending, prefill: bool, draft_s: float):
        """The layers, with each Engram layer waiting for its rows; returns the GPU time."""
        s = self.setup
        bb = s.model.backbone
        pos, gpu_s = 0, 0.0
        if rows is not None and s.engram_dp > 1:
            ids = self._dp_exchange_s(shape.tokens, ids=True)
            gpu_s += ids
            yield self._compute(ids)
        for layer in self.engram_layers if rows is not None else ():
            window = comp.layers_s(bb, pos, layer)
            window_start = self.env.now
            yield self._compute(window)
            waited_from = self.env.now
            yield pending[layer] if s.prefetch else self._fetch(rows[layer], layer)
            self._stall(self.env.now - waited_from, prefill, layer)
            yield from self._sm_contention(layer, window_start, waited_from)
            hits = rows[layer].hbm_rows
            fusion = self._fusion_s(shape.tokens) + self._hbm_lookup_s(hits, shape.tokens)
            fixed = self.engram_fixed_s
            exchange = self._dp_exchange_s(shape.tokens, ids=False) if s.engram_dp > 1 else 0.0
            self.stats.fusion_s += fusion
            self.stats.kernel_fixed_s += fixed
            gpu_s += window + fusion + fixed + exchange
            yield self._compute(fusion + fixed + exchange)
            pos = layer
        rest = comp.layers_s(bb, pos, bb.n_layers) + comp.head_s + draft_s
        yield self._compute(rest)
        return gpu_s + rest

    def _dp_exchange_s(self, tokens: int, ids: bool) -> float:
        """Engram DP sharding's collectives, in line on the main stream: the step's id gather
        before the layers (`ids`) or one Engram layer's row gather. Every replica is taken to
        carry this one's tokens (vLLM pads each to the largest)."""
        s = self.setup
        spec, gpu = s.model.engram, s.hw.gpu
        if ids:
            seconds = costs.engram_dp_ids_s(gpu, tokens, len(spec.layer_ids), spec.heads_per_layer, s.engram_dp)
        else:
            head_dim = spec.n_embed_per_ngram // spec.n_head_per_ngram
            seconds = costs.engram_dp_rows_s(gpu, tokens, spec.heads_per_layer, head_dim, s.tp, s.engram_dp)
        self.stats.exchange_s += seconds
        return seconds

    def _host(self, seconds: float, hidden: float):
        """Host work of which `hidden` seconds ran while the GPU was busy (async scheduling)."""
        shown = max(0.0, seconds - hidden)
        self.stats.host_s += shown
        if shown > 0:
            yield self.env.timeout(shown)

    def _launches(self, graphs: bool, engram: bool, gpu_s: float, elapsed_s: float):
        """The forward pass lasts at least as long as the host takes to launch it."""
        without_s, with_s = self._launch_s(graphs, engram)
        without = max(0.0, without_s - gpu_s)
        extra = max(0.0, with_s - elapsed_s)
        self.stats.launch_s += max(0.0, extra - without)
        if extra > 0:
            yield self.env.timeout(extra)

    def _launch_s(self, graphs: bool, engram: bool) -> tuple[float, float]:
        """Host time to launch the backbone's kernels, and with the Engram modules' (kept: a
        step's kind is all they depend on)."""
        key = (graphs, engram)
        if key not in self.launch_s:
            s = self.setup
            eng, gpu = s.workload.engine, s.hw.gpu
            dispatch = eng.op_dispatch_s * self.cpu_scale
            if graphs:
                backbone, module = 1, 0
            else:
                backbone = self.layer_kernels * s.model.backbone.n_layers
                per_layer = costs.engram_kernels(s.model.backbone.hc_mult, eng.engram_norm_fused)
                module = per_layer * len(s.model.engram.layer_ids) if engram else 0
            self.launch_s[key] = (
                costs.launches_s(gpu, dispatch, backbone),
                costs.launches_s(gpu, dispatch, backbone + module),
            )
        return self.launch_s[key]

    def _sm_contention(self, layer: int, window_start: float, window_end: float):
        """A zero-copy gather kernel beside the compute holds part of the SMs while it runs:
        the compute of [window_start, window_end) loses that share for their overlap."""
        share = self.setup.workload.engine.zero_copy_sm_share
        started, done = self.fetch_started.get(layer), self.fetch_done.get(layer)
        if self.setup.placement.path != "uva" or not share or started is None or done is None:
            return
        overlap = max(0.0, min(done, window_end) - max(started, window_start))
        lost = costs.sm_contention_s(overlap, share)
        self.stats.sm_s += lost
        yield self.env.timeout(lost)

    def _engram_inputs(self, batch: list[Seq], prefill: bool, shape: costs.BatchShape, host_hidden: float):
        """Hash the step's tokens and start their fetches (or take those started ahead)."""
        s = self.setup
        ahead, self.lookahead = self.lookahead, None
        if prefill and ahead and ahead.seq_ids == tuple(q.id for q in batch):
            rows, pending = ahead.rows, ahead.pending  # fetched while the previous prefill computed
        else:
            rows, pending = yield from self._hash_and_fetch(shape.tokens, shape.seqs, host_hidden)
        if prefill and s.prefetch and s.workload.engine.prefill_lookahead:
            yield from self._look_ahead()
        return rows, pending

    def _shape(self, batch: list[Seq], prefill: bool) -> costs.BatchShape:
        """This step's shape; a chunked scheduler's steps mix prompt chunks with decodes."""
        positions = self.setup.workload.engine.positions_per_decode
        chunks = getattr(self.scheduler, "chunks", None)
        if not chunks:
            context = None if prefill else self.scheduler.decode_context(batch)
            if context is not None:
                return costs.decode_shape(context, len(batch), positions)
            return costs.lens_shape([q.prompt_len + q.out for q in batch], prefill, positions)  # len(q), inlined
        return costs.mixed_shape(
            [len(q) for q in batch if q.id not in chunks],
            [(q.computed, chunks[q.id]) for q in batch if q.id in chunks],
            positions,
        )

    def _fusion_s(self, tokens: int) -> float:
        if tokens not in self.fusion_s:
            s = self.setup
            self.fusion_s[tokens] = costs.engram_module_s(
                s.hw.gpu, s.model.backbone, s.model.engram, tokens, s.tp, s.workload.engine.engram_norm_fused
            )
        return self.fusion_s[tokens]

    def _hbm_lookup_s(self, hits: float, tokens: int) -> float:
        """Rows gathered in HBM at the Engram layer: this rank's share, or with a sharded-table
        lookup mode (hbm tier, TP > 1) the gather plus its exchange between ranks."""
        s = self.setup
        spec, gpu, mode = s.model.engram, s.hw.gpu, s.placement.hbm_lookup
        if not hits:
            return 0.0
        if mode == "collective":
            return costs.collective_lookup_s(gpu, hits * s.tp, spec.row_bytes, tokens, spec.memory_dim, s.tp)
        if mode == "peer_read":
            return costs.peer_read_lookup_s(gpu, s.hw.topo, hits * s.tp, spec.row_bytes, s.tp)
        return costs.hbm_gather_s(gpu, hits, spec.row_bytes)

    def _compute(self, seconds: float):
        """GPU compute is a plain delay. A CPU standing in for the GPU runs it as a flow of
        thread-seconds on the host's cores, so a prefetch thread gathering rows slows it."""
        gpu = self.setup.hw.gpu
        if not gpu.compute_on_host or seconds <= 0:
            return self.env.timeout(seconds)
        threads = gpu.compute_threads or self.setup.hw.host.cpu_cores
        return self.net.transfer(seconds * threads, [(self.host.cpu, 1.0)], cap=threads, cap_name="compute threads")

    def _look_ahead(self):
        """Start the fetch for the prompts the next prefill step will admit: all their tokens
        are known now, so their rows can arrive while this step computes."""
        following = self.scheduler.peek_prefill()
        if following:
            tokens = sum(len(q) for q in following)
            rows, pending = yield from self._hash_and_fetch(tokens, len(following))
            self.lookahead = Lookahead(tuple(q.id for q in following), rows, pending)

    def _hash_and_fetch(self, tokens: int, seqs: int, host_hidden: float = 0.0):
        """Hash `tokens` on the host thread that launches steps (so it delays the forward pass,
        unless an async engine hid it behind the previous step), copy the indices to the GPU
        for gathers that run there, then start the fetches when prefetching; returns (rows per
        layer, pending fetches)."""
        s = self.setup
        spec = s.model.engram
        hashing = costs.hash_s(s.hw.host, tokens, len(spec.layer_ids), spec.heads_per_layer)
        hashing += self.cpu_scale * seqs * s.workload.engine.engram_seq_host_s
        shown = max(0.0, hashing - host_hidden)
        self.stats.hash_s += shown
        # Gathers that run on the GPU need the indices there; copy paths and RDMA post from the
        # host, and a unified pool has no link to copy them over.
        index = (
            costs.index_copy_s(s.hw.link, tokens, spec.heads_per_layer)
            if s.placement.path in ("uva", "hbm") and s.hw.link
            else 0.0
        )
        self.stats.index_s += index
        handoff = len(spec.layer_ids) * s.hw.host.prefetch_handoff_s if s.prefetch else 0.0
        yield self.env.timeout(shown + index + handoff)
        rows = {l: self._rows(tokens, l) for l in spec.layer_ids}
        self.fetch_started = {l: self.env.now for l in spec.layer_ids}
        self.fetch_done = {}
        pending = {l: self._fetch(rows[l], l) for l in spec.layer_ids} if s.prefetch else {}
        for layer, event in pending.items():
            event.callbacks.append(lambda _, layer=layer: self.fetch_done.__setitem__(layer, self.env.now))
        return rows, pending

    def _rows(self, tokens: int, layer: int) -> LayerRows:
        key = (tokens, layer)
        if key not in self.unique_rows:  # a row model answers for (tokens, layer) alone
            self.unique_rows[key] = self.setup.row_model.unique_rows(tokens, layer)
        unique = self.unique_rows[key]
        if self.setup.placement.rank_rows == "shard":
            unique /= self.setup.tp
        if self.setup.placement.memory == "hbm":
            return LayerRows(unique, 0.0, 0.0)
        hit = self._hit_rate(layer)
        self.lookups[layer] += tokens * self.setup.model.engram.heads_per_layer
        self.stats.fetched_rows += unique * (1 - hit)
        self.stats.hit_rows += unique * hit
        return LayerRows(unique * hit, unique * (1 - hit), self._dram_hit_rate(hit, layer))

    def _hit_rate(self, layer: int) -> float:
        """The hot-row cache's hit rate now: steady state, or where a cold cache has warmed to."""
        if not self.cache_rows:
            return 0.0
        steady = self.setup.row_model.hit_rate(self.cache_rows, layer)
        return steady * self.warmup[layer].at(self.lookups[layer]) if self.warmup else steady

    def _dram_hit_rate(self, hbm_hit: float, layer: int) -> float:
        """The ssd tier's DRAM hit rate: given as a page-cache rate, or from a DRAM hot-row cache."""
        if not self.dram_cache_rows:
            return self.setup.placement.ssd_dram_hit_rate
        both = self.setup.row_model.hit_rate(self.cache_rows + self.dram_cache_rows, layer)
        return costs.dram_cache_hit_rate(hbm_hit, both)

    def _fetch(self, rows: LayerRows, layer: int):
        events = [f.start(rows.fetched_rows, rows.dram_hit_rate) for f in self.fetchers]
        event = events[0] if len(events) == 1 else simpy.AllOf(self.env, events)
        if self.recorder:
            self.recorder.fetch(self.index, layer, self.env.now, event, self.env, rows.hbm_rows, rows.fetched_rows)
        return event

    def _stall(self, seconds: float, prefill: bool, layer: int):
        self.stats.stall_s += seconds
        self.stats.stall_by_layer_s[layer] = self.stats.stall_by_layer_s.get(layer, 0.0) + seconds
        if prefill:
            self.stats.prefill_stall_s += seconds
        if self.recorder:
            self.recorder.stall(self.index, layer, self.env.now - seconds, self.env.now)


def run_server(setup: ServerSetup, requests: Requests, recorder=None, finished=None) -> RawRun:
    """Simulate `setup.gpus / setup.tp` replicas serving `requests`; returns the raw outcome.
    A `recorder` (engramsim.report.timeline.RunRecorder) is told every step, stall and fetch;
    `finished(n)` hears of finished sequences, about a hundred times per run."""
    env = simpy.Environment()
    net = FlowNetwork(env)
    net.recorder = recorder
    hw = setup.hw
    pool = pool_resources(hw)
    n_hosts = -(-setup.gpus // hw.gpus_per_host)
    hosts = [HostResources(hw, i, pool) for i in range(n_hosts)]
    links = [Resource(f"gpu{g}.link", hw.link.h2d_Bps) for g in range(setup.gpus)] if hw.link else []
    stats = StepStats()
    replicas = []
    for r in range(setup.gpus // setup.tp):
        gpus = range(r * setup.tp, (r + 1) * setup.tp)
        fetchers = (
            [
                Fetcher(
                    env,
                    net,
                    hw,
                    setup.placement,
                    setup.model.engram.row_bytes,
                    links[g] if links else None,
                    hosts[g // hw.gpus_per_host],
                    g % hw.gpus_per_host,
                    setup.model.engram.table_bytes,
                    setup.io,
                )
                for g in gpus
            ]
            if setup.placement and setup.model.engram
            else []
        )
        replicas.append(Replica(env, setup, fetchers, stats, net, hosts[gpus[0] // hw.gpus_per_host], r, recorder))
    seqs = [
        Seq(i, float(requests.arrival_s[i]), int(requests.input_len[i]), int(requests.output_len[i]))
        for i in range(len(requests))
    ]
    done = _Done(finished, len(seqs))
    shared = list(dict.fromkeys(r for h in hosts for r in h.resources()))  # a pool once, not per host
    resources = links + shared + [r for r in pool_list(pool) if r not in shared]
    if recorder:
        recorder.resources(resources, hw)
    completions = simpy.Store(env) if setup.workload.kind == "closed" else None
    if completions is None:
        env.process(_arrivals(env, seqs, replicas))
    else:
        env.process(_closed_loop(env, seqs, replicas, setup.workload.concurrency, completions))
    for rep in replicas:
        env.process(rep.run(len(seqs), done, completions))
    env.run()
    done.report()
    if len(done) != len(seqs):
        raise RuntimeError(f"simulation ended with {len(seqs) - len(done)} unfinished sequences")
    return RawRun(
        seqs,
        env.now,
        stats,
        resources,
        sum(r.scheduler.preemptions for r in replicas),
        dict(net.limited_s),
        {k: dict(v) for k, v in net.bounds.items()},
    )


class _Done(list):
    """The finished sequences; tells `finished(n)` of every ~1% of them."""

    def __init__(self, finished, total: int):
        super().__init__()
        self.finished, self.every, self.told = finished, max(1, total // 100), 0

    def extend(self, seqs):
        super().extend(seqs)
        if self.finished and len(self) - self.told >= self.every:
            self.report()

    def report(self):
        if self.finished and len(self) > self.told:
            self.finished(len(self) - self.told)
            self.told = len(self)


def _arrivals(env, seqs: list[Seq], replicas: list[Replica]):
    """Requests go to replicas round-robin at their arrival times."""
    for i, seq in enumerate(seqs):
        if seq.arrival_s > env.now:
            yield env.timeout(seq.arrival_s - env.now)
        replicas[i % len(replicas)].submit(seq)


def _closed_loop(env, seqs: list[Seq], replicas: list[Replica], concurrency: int, completions: simpy.Store):
    """`concurrency` streams: the first requests go out at once, and each completion sends the
    next request (arriving now, so its TTFT counts from then), round-robin over replicas."""
    for i, seq in enumerate(seqs):
        if i >= concurrency:
            yield completions.get()
        seq.arrival_s = env.now
        replicas[i % len(replicas)].submit(seq)
