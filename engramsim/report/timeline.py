"""Chrome/Perfetto traces of simulated runs (`simulate --timeline run.json`).

The trace is the Trace Event Format (`{"traceEvents": [...]}`, timestamps and durations in µs):
one process per simulated run (the baseline, then each placement), and in each
  - a thread per replica with its steps ("prefill" / "decode" complete events whose args give the
    batch size and tokens) and, nested inside them, the stalls where a step waited for rows;
  - async slices "fetch L<layer>" from the moment a layer's rows were requested to the moment
    they were in HBM, with the rows fetched and the rows served by the HBM cache;
  - counters: utilization of each shared resource kind (link, DRAM, SSD IOPS and bandwidth,
    CPU, CXL), transfers in flight, SSD reads in flight (IOPS x latency), KV blocks used and the
    hot-row hit rate per replica.

The engine calls a recorder only when one is given; without one nothing is recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

US = 1e6


class Timeline:
    """Every run of one `simulate` call, as one trace."""

    def __init__(self):
        self.events: list[dict] = []
        self.runs = 0

    def run(self, label: str) -> RunRecorder:
        self.runs += 1
        pid = self.runs
        self.events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": label}})
        self.events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
        return RunRecorder(self.events, pid)

    def to_dict(self) -> dict:
        meta = [e for e in self.events if e["ph"] == "M"]
        timed = sorted((e for e in self.events if e["ph"] != "M"), key=lambda e: (e["pid"], e["ts"], -e.get("dur", 0)))
        return {
            "traceEvents": meta + timed,
            "displayTimeUnit": "ms",
            "otherData": {"generator": "engramsim simulate --timeline", "time_unit": "us"},
        }

    def write(self, path: str | Path):
        from engramsim.fileio import write_atomic

        write_atomic(path, json.dumps(self.to_dict(), separators=(",", ":")))


class RunRecorder:
    """What the engine and the flow network report during one run, as trace events."""

    def __init__(self, events: list[dict], pid: int):
        self.events, self.pid = events, pid
        self.capacity: dict[str, float] = {}
        self.ssd_latency_s = 0.0
        self.named: set[int] = set()
        self.last: dict[str, dict] = {}
        self.next_id = 0

    def resources(self, resources, hw=None):
        """The run's shared resources: utilization is load over the summed capacity of a kind.
        With the hardware, SSD reads in flight follow from the IOPS by Little's law."""
        self.ssd_latency_s = hw.ssd.latency_s if hw is not None and hw.ssd else 0.0
        for r in resources:
            self.capacity[r.kind] = self.capacity.get(r.kind, 0.0) + r.capacity
        self._counter(0.0, "utilization", {kind: 0.0 for kind in sorted(self.capacity)})

    def step(
        self, replica: int, start_s: float, end_s: float, prefill: bool, batch: int, tokens: int, kv_blocks_used: int
    ):
        self._name_thread(replica)
        self.events.append(
            {
                "ph": "X",
                "name": "prefill" if prefill else "decode",
                "cat": "step",
                "pid": self.pid,
                "tid": replica,
                **_span(start_s, end_s),
                "args": {"batch_size": batch, "tokens": tokens},
            }
        )
        self._counter(end_s, f"replica {replica} KV blocks used", {"blocks": kv_blocks_used})

    def stall(self, replica: int, layer: int, start_s: float, end_s: float):
        if end_s > start_s:
            self.events.append(
                {
                    "ph": "X",
                    "name": f"stall L{layer}",
                    "cat": "stall",
                    "pid": self.pid,
                    "tid": replica,
                    **_span(start_s, end_s),
                }
            )

    def fetch(self, replica: int, layer: int, start_s: float, event, env, hbm_rows: float, fetched_rows: float):
        """An async slice from now until `event` fires (its rows are in HBM)."""
        self.next_id += 1
        ident = f"{self.pid}.{replica}.{self.next_id}"
        name = f"fetch L{layer}"
        looked_up = hbm_rows + fetched_rows
        self.events.append(
            {
                "ph": "b",
                "name": name,
                "cat": "fetch",
                "id": ident,
                "pid": self.pid,
                "tid": replica,
                "ts": _us(start_s),
                "args": {"rows_fetched": fetched_rows, "rows_from_hbm": hbm_rows},
            }
        )
        if fetched_rows and looked_up:
            self._counter(start_s, f"replica {replica} hot-row hit rate", {"hit_rate": hbm_rows / looked_up})
        end = lambda _: self.events.append(
            {"ph": "e", "name": name, "cat": "fetch", "id": ident, "pid": self.pid, "tid": replica, "ts": _us(env.now)}
        )
        if event.callbacks is None:  # already processed
            end(None)
        else:
            event.callbacks.append(end)

    def flows(self, now_s: float, flows):
        """After every change of rates: utilization per resource kind and transfers in flight."""
        load = {kind: 0.0 for kind in self.capacity}
        for f in flows:
            for r, c in f.loads:
                load[r.kind] = load.get(r.kind, 0.0) + f.rate * c
        self._counter(
            now_s, "utilization", {k: v / self.capacity[k] for k, v in sorted(load.items()) if k in self.capacity}
        )
        self._counter(now_s, "transfers in flight", {"transfers": len(flows)})
        if self.ssd_latency_s:
            # A fluid model has no discrete reads: ops/s x latency is the mean number in flight.
            self._counter(now_s, "SSD reads in flight", {"reads": load.get("ssd_iops", 0.0) * self.ssd_latency_s})

    def _counter(self, now_s: float, name: str, values: dict):
        """A counter sample, only when a value changed (a trace of repeats is large and says nothing)."""
        values = {k: round(v, 6) for k, v in values.items()}
        if self.last.get(name) == values:
            return
        self.last[name] = values
        self.events.append({"ph": "C", "name": name, "pid": self.pid, "tid": 0, "ts": _us(now_s), "args": values})

    def _name_thread(self, replica: int):
        if replica not in self.named:
            self.named.add(replica)
            self.events.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": self.pid,
                    "tid": replica,
                    "args": {"name": f"replica {replica}"},
                }
            )


def _us(seconds: float) -> float:
    """Seconds to µs, kept to the ns: finer digits only make the file larger."""
    return round(seconds * US, 3)


def _span(start_s: float, end_s: float) -> dict:
    """ts and dur rounded so that ts + dur is the rounded end: a span that ends when the next
    begins never appears to overlap it, which would break nesting in the viewer."""
    ts = _us(start_s)
    return {"ts": ts, "dur": round(_us(end_s) - ts, 3)}
