"""Shared bandwidth: a fluid model of concurrent transfers over shared resources.

A resource (a host link, a host's DRAM, a CXL switch, an SSD's IOPS, a pool of CPU gather
threads) has a capacity in units per second. A flow moves `amount` units of work and loads
each resource on its path by a coefficient per unit (DRAM sees 2 bytes per gathered byte when
rows are read and written to staging; an SSD sees 1/row_bytes operations per byte). Flows may
also carry a private rate cap (the in-flight limit of one GPU's zero-copy reads).

Whenever a flow starts or ends, rates are recomputed by progressive filling (weighted max-min
fairness): all unfrozen flows grow at the same rate until a resource saturates or a flow hits
its cap, then those flows freeze. This is what lets eight GPUs contend for one host's DRAM.

Time is a float, so its resolution shrinks as the clock grows (at 1e4 s one tick is ~2e-12 s).
Every tolerance is therefore relative: a flow is done when what is left of it would take less
than a few ticks of the clock at its rate, or is below rounding of the amount it started with.
A wake-up is never planned closer than those few ticks, so each one finishes at least one flow
and the network cannot reschedule itself at the same instant.
"""

from __future__ import annotations

import math

import simpy

# Rounding left over from subtracting moved amounts: this share of a flow's amount counts as done.
AMOUNT_REL_TOL = 1e-12
# A flow whose remaining time is within this many ticks of the clock (ulp of `now`) is done.
CLOCK_TICKS = 4


def clock_tolerance_s(now: float) -> float:
    """The shortest interval the simulated clock can still resolve at `now`, with a margin."""
    return CLOCK_TICKS * math.ulp(max(now, 1.0))


class Resource:
    def __init__(self, name: str, capacity: float, unit: str = "B"):
        if not capacity > 0:
            raise ValueError(f"resource {name} needs a positive capacity")
        self.name = name
        self.capacity = capacity
        self.unit = unit
        self.units = 0.0  # total units of load carried, for utilisation and bytes moved

    @property
    def kind(self) -> str:
        """`host0.dram` -> `dram`: instances of one kind are summed in reports."""
        return self.name.rsplit(".", 1)[-1]


class Flow:
    __slots__ = (
        "amount",
        "remaining",
        "loads",
        "cap",
        "cap_name",
        "rate",
        "done",
        "limit",
        "tag",
        "latency_s",
        "started",
        "since",
        "spent",
    )

    def __init__(
        self,
        amount: float,
        loads: list[tuple[Resource, float]],
        cap: float,
        cap_name: str,
        done,
        tag: str = "",
        latency_s: float = 0.0,
    ):
        self.amount = amount
        self.remaining = amount
        self.loads = loads
        self.cap = cap
        self.cap_name = cap_name
        self.rate = 0.0
        self.done = done
        self.limit = ""  # what holds this flow's rate back: a resource's kind or its cap's name
        self.tag, self.latency_s = tag, latency_s
        self.started = self.since = 0.0  # when it started moving; when its limit last changed
        self.spent: dict[str, float] = {}  # seconds spent limited by each kind or cap


class FlowNetwork:
    def __init__(self, env: simpy.Environment):
        self.env = env
        self.flows: list[Flow] = []
        self._last = 0.0
        self._generation = 0
        # Flow-seconds spent limited by each resource kind or cap: what bounds the fetches.
        self.limited_s: dict[str, float] = {}
        self.recorder = None  # a timeline recorder told every change of rates, or None
        # Per tag (e.g. "fetch"): how many finished transfers each bound held back most,
        # "latency" when the fixed latency outlasted the transfer itself.
        self.bounds: dict[str, dict[str, int]] = {}

    def transfer(
        self,
        amount: float,
        loads: list[tuple[Resource, float]],
        cap: float = math.inf,
        latency_s: float = 0.0,
        cap_name: str = "cap",
        tag: str = "",
    ) -> simpy.Event:
        """An event that fires when `amount` units have moved, after a fixed `latency_s`; a
        `tag` counts the transfer in `bounds` by what held it back most."""
        done = self.env.event()
        if amount <= 0:
            self.env.timeout(latency_s).callbacks.append(lambda _: done.succeed())
            return done
        flow = Flow(amount, [(r, c) for r, c in loads if c > 0], cap, cap_name, done, tag, latency_s)
        if not flow.loads and math.isinf(cap):
            raise ValueError("a flow needs a resource on its path or a rate cap")
        if latency_s > 0:
            self.env.timeout(latency_s).callbacks.append(lambda _: self._start(flow))
        else:
            self._start(flow)
        return done

    def _start(self, flow: Flow):
        self._advance()
        flow.started = flow.since = self._last
        self.flows.append(flow)
        self._reallocate()

    def _advance(self):
        now = self.env.now
        dt = now - self._last
        self._last = now
        if dt <= 0:
            return
        for f in self.flows:
            self.limited_s[f.limit] = self.limited_s.get(f.limit, 0.0) + dt
            moved = min(f.remaining, f.rate * dt)
            f.remaining -= moved
            for r, c in f.loads:
                r.units += moved * c

    def _reallocate(self):
        before = [f.limit for f in self.flows]
        _fill_rates(self.flows)
        now = self.env.now
        for f, old in zip(self.flows, before):
            if f.limit != old:  # charge the time under the old limit (the usual case: none)
                f.spent[old] = f.spent.get(old, 0.0) + now - f.since
                f.since = now
        if self.recorder:
            self.recorder.flows(now, self.flows)
        self._generation += 1
        if not self.flows:
            return
        dt = min(f.remaining / f.rate if f.rate > 0 else math.inf for f in self.flows)
        if math.isinf(dt):
            raise RuntimeError("flows are stuck: a resource on their path has no capacity")
        generation = self._generation
        # Never closer than the clock can resolve: the wake-up then finishes the nearest flow.
        delay = max(dt, clock_tolerance_s(now))
        self.env.timeout(delay).callbacks.append(lambda _: self._wake(generation))

    def _wake(self, generation: int):
        if generation != self._generation:
            return  # rates changed since this wake-up was planned
        self._advance()
        tolerance_s = clock_tolerance_s(self.env.now)
        finished = [f for f in self.flows if f.remaining <= max(f.rate * tolerance_s, f.amount * AMOUNT_REL_TOL)]
        for f in finished:
            for r, c in f.loads:
                r.units += f.remaining * c
            f.remaining = 0.0
            self._count_bound(f)
            f.done.succeed()
        self.flows = [f for f in self.flows if f.remaining > 0]
        self._reallocate()

    def _count_bound(self, f: Flow):
        if not f.tag:
            return
        now = self.env.now
        f.spent[f.limit] = f.spent.get(f.limit, 0.0) + now - f.since
        bound = "latency" if f.latency_s > now - f.started else max(f.spent, key=f.spent.get)
        counts = self.bounds.setdefault(f.tag, {})
        counts[bound] = counts.get(bound, 0) + 1


def _fill_rates(flows: list[Flow]):
    """Weighted max-min fair rates by progressive filling.

    Each round raises every unfrozen flow by the largest common step that no resource or cap
    allows to be exceeded, then freezes the flows held by whatever bound that step (and any
    within rounding of their bound), so each round freezes at least one flow.
    """
    if len(flows) == 1 and _fill_one(flows[0]):
        return
    if flows:
        _fill_rounds(flows)


def _fill_rounds(flows: list[Flow]):
    for f in flows:
        f.rate = 0.0
    residual: dict[Resource, float] = {}
    for f in flows:
        for r, _ in f.loads:
            residual[r] = r.capacity
    unfrozen = list(flows)
    while unfrozen:
        load: dict[Resource, float] = {}
        for f in unfrozen:
            for r, c in f.loads:
                load[r] = load.get(r, 0.0) + c
        by_resource = {r: residual[r] / l for r, l in load.items()}
        by_cap = min(f.cap - f.rate for f in unfrozen)
        step = max(min([by_cap, *by_resource.values()]), 0.0)
        for f in unfrozen:
            f.rate += step
        for r, l in load.items():
            residual[r] -= step * l
        saturated = {r for r, l in load.items() if residual[r] <= 1e-9 * r.capacity or by_resource[r] <= step}
        still = []
        for f in unfrozen:
            hit = next((r for r, _ in f.loads if r in saturated), None)
            if hit is not None:
                f.limit = hit.kind
            elif f.rate >= f.cap * (1 - 1e-12) or f.cap - (f.rate - step) <= step:
                f.limit = f.cap_name
            else:
                still.append(f)
        unfrozen = still


def _fill_one(f: Flow) -> bool:
    """_fill_rates' first round for a lone flow, without its bookkeeping (the common case of
    one transfer in flight): the same arithmetic, so the same rate and limit. A flow that
    names a resource twice takes the general path (returns False)."""
    loads = f.loads
    if len(loads) > 1 and len({r for r, _ in loads}) < len(loads):
        return False
    by_resource = [r.capacity / c for r, c in loads]
    step = max(min([f.cap - 0.0, *by_resource]), 0.0)
    f.rate = 0.0 + step
    for (r, c), by in zip(loads, by_resource):
        if r.capacity - step * c <= 1e-9 * r.capacity or by <= step:
            f.limit = r.kind
            return True
    # No resource binds, so the cap does: the general loop's test, which a lone flow always meets.
    f.limit = f.cap_name
    return True
