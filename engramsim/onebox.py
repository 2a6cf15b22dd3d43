"""Checks of the one-box model against public measurements (checks/onebox/*.toml).

Each case describes, in its own TOML, one public A/B measurement of an engine on a one-box
machine (RAM vs SSD, synchronous vs prefetched reads, serial vs parallel reads): the hardware,
the model, the engine, one request at concurrency 1, and per arm the I/O-policy change and the
decode tok/s the source measured. The simulator predicts every arm with the presets as they are:
a case is a check, never a fit. It passes when every consecutive pair of arms moves in the
measured direction and every arm's prediction is within 2x of the measurement.

One arm of a case may be marked `fit = true`: the engine's per-step host cost on that model was
fitted on it (the engine preset's [fitted_step_host_us]; `engramsim onebox --fit` recomputes
it), so it is shown but not checked: the other arms then check the Engram effect against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from engramsim import costs
from engramsim.capacity import Parallel, plan_memory
from engramsim.engine import load_engine
from engramsim.errors import UserError
from engramsim.hardware import OS, PARTS_DIR, SSD, load_hardware
from engramsim.iopolicy import IOPolicy
from engramsim.measure.onebox import measure
from engramsim.model import load_model, with_row_dtype
from engramsim.presets import ROOT, build, check_keys, load_toml
from engramsim.results import summarize_run
from engramsim.sim.engine import ServerSetup, run_server
from engramsim.sim.run import Scenario, simulate
from engramsim.sim.tiers import Placement, tier_for
from engramsim.workload import Workload, with_engine

CHECKS_DIR = ROOT / "checks" / "onebox"
CASE_KEYS = {
    "name",
    "source",
    "what",
    "hardware",
    "pool_GiB",
    "model",
    "engine",
    "row_dtype",
    "prompt_tokens",
    "output_tokens",
    "spec_tokens",
    "accept_rate",
    "arms",
    "measured_tok_s",
}
ARM_KEYS = {"name", "tier", "measured_tok_s", "io", "fit"}
WITHIN = 2.0
GiB = 2.0**30


@dataclass(frozen=True)
class ArmResult:
    name: str
    tier: str
    measured_tok_s: float
    predicted_tok_s: float
    # The engine's per-step cost was fitted on this arm: shown, not checked.
    fit: bool = False

    @property
    def ratio(self) -> float:
        return self.predicted_tok_s / self.measured_tok_s


@dataclass(frozen=True)
class CaseResult:
    name: str
    source: str
    what: str
    arms: list[ArmResult]
    note: str = ""

    @property
    def direction_right(self) -> bool:
        pairs = zip(self.arms, self.arms[1:])
        return all(
            (b.predicted_tok_s - a.predicted_tok_s) * (b.measured_tok_s - a.measured_tok_s) > 0
            or b.measured_tok_s == a.measured_tok_s
            for a, b in pairs
        )

    @property
    def within_2x(self) -> bool:
        return all(1 / WITHIN <= a.ratio <= WITHIN for a in self.arms if not a.fit)

    def to_dict(self) -> dict:
        return asdict(self) | {
            "direction_right": self.direction_right,
            "within_2x": self.within_2x,
            "arms": [asdict(a) | {"ratio": a.ratio} for a in self.arms],
        }


@dataclass(frozen=True)
class OneboxReport:
    cases: list[CaseResult]

    def to_dict(self) -> dict:
        return {"cases": [c.to_dict() for c in self.cases]}

    def __rich_console__(self, console, options):
        from engramsim.report.width import narrow_table

        # Each case is a bold row of its own (its name folds across the arm column), its arms
        # below it: the table reads at 80 columns and wider alike.
        t = narrow_table("One-box checks: predicted vs measured decode tok/s (no per-case tuning)")
        t.add_column("case / arm", overflow="fold", min_width=16)
        t.add_column("tier", no_wrap=True)
        for col in ("meas.\ntok/s", "pred.\ntok/s", "pred/\nmeas", "sign", "within\n2x"):
            t.add_column(col, justify="right", no_wrap=True)
        for c in self.cases:
            verdicts = ("right" if c.direction_right else "WRONG", "yes" if c.within_2x else "NO")
            t.add_row(c.name, "", "", "", "", *verdicts, style="bold")
            for a in c.arms:
                t.add_row(
                    f"  {a.name}",
                    a.tier,
                    f"{a.measured_tok_s:.2f}",
                    f"{a.predicted_tok_s:.2f}",
                    "fit" if a.fit else f"{a.ratio:.2f}",
                    "",
                    "",
                )
        yield t
        from rich.padding import Padding
        from rich.text import Text

        for c in self.cases:
            yield Text(c.name, style="bold")
            yield Padding(c.source + (f"; {c.note}" if c.note else ""), (0, 0, 0, 2))


def run_case(path: Path) -> CaseResult:
    data = load_toml(path)
    where = str(path)
    check_keys(data, CASE_KEYS, where)
    hw, model, engine, workload = _setup(data, path)
    arms = []
    for arm in data["arms"]:
        check_keys(arm, ARM_KEYS, f"{where} [[arms]]")
        tier = tier_for(hw, arm["tier"])
        tpot = _arm_tpot_s(hw, model, engine, workload, arm, f"{where}: arm '{arm['name']}'")
        arms.append(ArmResult(arm["name"], tier, float(arm["measured_tok_s"]), 1.0 / tpot, bool(arm.get("fit"))))
    note = ""
    if data.get("spec_tokens") and not speculation_modeled():
        note = f"ran without its {data['spec_tokens']}-token speculative decoding (not in this build)"
    return CaseResult(data["name"], data["source"], data.get("what", ""), arms, note)


def _arm_tpot_s(hw, model, engine, workload, arm: dict, where: str) -> float:
    """The simulated decode time per token of one arm: its tier and I/O policy, one request."""
    io = replace(engine.io, **arm.get("io", {}))
    scenario = Scenario(hw=hw, model=model, workload=workload, engine=engine, io=io, prefetch=io.prefetch)
    run = simulate(scenario, [Placement(tier_for(hw, arm["tier"]))]).runs[0]
    if not run.fits:
        raise UserError(f"{where} does not fit: {run.bound}")
    return run.tpot_p50_s


def fit_step_host_us(path: Path) -> dict:
    """The engine's per-step host cost on the case's model that makes the case's `fit = true` arm
    come out as measured. The time per token is linear in it (one request decodes alone), so
    two simulations, without it and with a probe value, give it exactly."""
    data = load_toml(path)
    fit_arms = [a for a in data.get("arms", []) if a.get("fit")]
    if len(fit_arms) != 1:
        raise UserError(f"{path}: a case to fit needs exactly one arm with fit = true, found {len(fit_arms)}")
    arm = fit_arms[0]
    probe_s = 0.01
    tpots = []
    for step_host_s in (0.0, probe_s):
        hw, model, engine, workload = _setup(data, path, step_host_s)
        tpots.append(_arm_tpot_s(hw, model, engine, workload, arm, f"{path}: arm '{arm['name']}'"))
    per_step = (tpots[1] - tpots[0]) / probe_s
    fitted_s = (1.0 / arm["measured_tok_s"] - tpots[0]) / per_step
    return {
        "case": data["name"],
        "arm": arm["name"],
        "engine": data["engine"],
        "model": model.name,
        "measured_tok_s": arm["measured_tok_s"],
        "simulated_without_step_host_tok_s": 1.0 / tpots[0],
        "step_host_us": fitted_s * 1e6,
    }


def fit_all(directory: Path = CHECKS_DIR) -> list[dict]:
    """Every calibration of the one-box checks: the M3 Ultra's per-step cost (ds4) and each
    case's fitted arm (an engine's per-step host cost on that case's model)."""
    cases = sorted(p for p in directory.glob("*.toml") if any(a.get("fit") for a in load_toml(p).get("arms", [])))
    return [fit_step_overhead_us()] + [fit_step_host_us(p) for p in cases]


def _setup(data: dict, path: Path, step_host_s: float | None = None):
    """The hardware, model, engine and one-request workload a case or calibration describes
    (`step_host_s`: this per-step host cost for the case's model instead of the engine's)."""
    """The hardware, model, engine and one-request workload a case or calibration describes."""
    here = path.parent
    hw = load_hardware(_local(here, data["hardware"]))
    if "pool_GiB" in data:  # another memory size of the same machine
        pool = data["pool_GiB"] * GiB
        hw = replace(hw, gpu=replace(hw.gpu, hbm_bytes=pool), host=replace(hw.host, dram_bytes=pool))
    model = load_model(_local(here, data["model"]))
    if data.get("row_dtype"):
        model = with_row_dtype(model, data["row_dtype"])
    engine = load_engine(_local(here, data["engine"]))
    if step_host_s is not None:
        fitted = dict(engine.steps.fitted_step_host_s) | {model.name: step_host_s}
        engine = replace(engine, steps=replace(engine.steps, fitted_step_host_s=tuple(sorted(fitted.items()))))
    workload = with_engine(
        Workload(
            name=data["name"],
            kind="closed",
            concurrency=1,
            num_seqs=1,
            input_len_min=data["prompt_tokens"],
            input_len_max=data["prompt_tokens"],
            output_len_min=data["output_tokens"],
            output_len_max=data["output_tokens"],
        ),
        engine,
    )
    return hw, model, engine, _with_speculation(workload, data, str(path))


def fit_step_overhead_us(path: Path = CHECKS_DIR / "calibration-m3-ultra-ds4.toml") -> dict:
    """The per-step cost that makes the calibration's no-Engram decode rate come out as measured:
    the measured time per token less the simulated one without any step cost."""
    data = load_toml(path)
    hw, model, engine, workload = _setup(data, path)
    hw = replace(hw, gpu=replace(hw.gpu, step_overhead_s=0.0))
    par = Parallel()
    plan = plan_memory(hw, model, engine, par, None, context_tokens=workload.max_seq_len)
    setup = ServerSetup(
        hw=hw,
        model=model,
        workload=workload,
        placement=None,
        gpus=1,
        tp=1,
        kv_blocks=plan.kv_blocks_per_rank,
        row_model=None,
    )
    tpot = summarize_run(run_server(setup, workload.requests(0)))["tpot_p50_s"]
    return {
        "source": data["source"],
        "measured_tok_s": data["measured_tok_s"],
        "simulated_without_step_cost_tok_s": 1.0 / tpot,
        "step_overhead_us": (1.0 / data["measured_tok_s"] - tpot) * 1e6,
    }


def _with_speculation(workload: Workload, data: dict, where: str) -> Workload:
    """Speculative decoding as the case ran it, where the engine model has it (issue #10's
    Engine.spec_tokens / accept_rate); without it the case runs without, and says so."""
    k = data.get("spec_tokens", 0)
    if not k or not speculation_modeled():
        return workload
    return replace(workload, engine=replace(workload.engine, spec_tokens=k, accept_rate=data["accept_rate"]))


def speculation_modeled() -> bool:
    from engramsim.workload import Engine

    return "spec_tokens" in {f.name for f in fields(Engine)}


def _local(here: Path, name: str) -> str:
    """A file next to the case, or a preset name."""
    return str(here / name) if (here / name).is_file() else name


def run_checks(directory: Path = CHECKS_DIR) -> OneboxReport:
    cases = sorted(p for p in directory.glob("*.toml") if "arms" in load_toml(p))
    return OneboxReport([run_case(p) for p in cases])


# --- the CPU validation harness: this machine's reads, measured and predicted ------------------


@dataclass(frozen=True)
class HarnessRow:
    what: str
    measured: float
    predicted: float
    unit: str

    @property
    def ratio(self) -> float:
        return self.predicted / self.measured if self.measured else float("nan")


@dataclass(frozen=True)
class HarnessReport:
    machine: dict
    rows: list[HarnessRow]

    def to_dict(self) -> dict:
        return {"machine": self.machine, "rows": [asdict(r) | {"ratio": r.ratio} for r in self.rows]}

    def __rich_console__(self, console, options):
        from rich.table import Table

        t = Table(
            title="One-box reads on this machine: predicted vs measured", title_justify="left", header_style="bold"
        )
        for col in ("what", "measured", "predicted", "pred/meas"):
            t.add_column(col, justify="left" if col == "what" else "right")
        for r in self.rows:
            t.add_row(r.what, f"{r.measured:,.4g} {r.unit}", f"{r.predicted:,.4g} {r.unit}", f"{r.ratio:.2f}")
        yield t


def machine_os(m: dict) -> OS:
    """The os-linux part with what was measured on this machine: its page size, the CPU cost of
    a cached pread, and the read-ahead window of the scratch file's device (the part's default
    where the device's is unknown)."""
    part = build(OS, load_toml(PARTS_DIR / "os-linux.toml"), "os-linux")
    window = m.get("read_ahead_bytes", 0) // m["page_bytes"]
    return replace(
        part,
        page_bytes=m["page_bytes"],
        pread_cpu_s=m["pread_cpu_s"],
        mmap_readahead_pages=max(1, window) if window else part.mmap_readahead_pages,
    )


def fresh_bytes_per_fault(window_bytes: float, file_bytes: float, faults: int) -> float:
    """Bytes a fault reads from storage on average when `faults` faults at random pages each read a
    `window_bytes` window of a `file_bytes` file that starts uncached: later windows overlap
    pages already read, so the file's covered share, 1 - (1 - w/F)^n, is what all of them read."""
    share = min(1.0, window_bytes / file_bytes)
    return file_bytes * (1.0 - (1.0 - share) ** faults) / faults


def harness(scratch: Path, file_bytes: int = 1 << 30, readers: tuple[int, ...] = (1, 8)) -> HarnessReport:
    """Measure this machine's reads (engramsim.measure.onebox), then predict the decode-step
    reads and the mmap fault sizes from the device figures measured apart and the os-linux
    part: the predictions use only the IOPS-by-depth points, the cached-pread CPU cost, the
    page size and the part's read-around, never the decode-step times they are compared with."""
    m = measure(Path(scratch), file_bytes, readers=readers)
    depths = sorted(m["iops_at_depth"])
    ssd = SSD(
        name="this machine",
        devices=1,
        read_iops=max(m["iops_at_depth"].values()),
        read_bw_Bps=1e9,
        latency_s=1.0 / m["iops_at_depth"][depths[0]],
        device_bytes=float(file_bytes),
        page_bytes=m["page_bytes"],
        queue_depth=max(depths),
        iops_qd=tuple(depths),
        iops_at_qd=tuple(round(m["iops_at_depth"][d]) for d in depths),
    )
    os_part = machine_os(m)
    rows = []
    for n in readers:
        plan = costs.ssd_read_plan(ssd, os_part, IOPolicy(readers=n, io="odirect"), m["row_bytes"], m["rows_per_layer"])
        layer_s = plan.lead_s(m["rows_per_layer"]) + m["rows_per_layer"] / plan.rows_per_s
        rows.append(
            HarnessRow(
                f"decode step reads, {m['layers']} x {m['rows_per_layer']} rows, {n} reader(s), O_DIRECT",
                m["decode_step_s"][n] * 1e3,
                m["layers"] * layer_s * 1e3,
                "ms",
            )
        )
    for key, random in (("mmap_default", False), ("mmap_random", True)):
        plan = costs.ssd_read_plan(
            ssd, os_part, IOPolicy(readers=1, io="mmap", madvise_random=random), m["row_bytes"], 1
        )
        fresh = fresh_bytes_per_fault(plan.ssd_bytes, m["file_bytes"], m[key]["faults"])
        rows.append(
            HarnessRow(
                f"mmap fault, {m['page_bytes'] // 1024} KiB pages, "
                f"{'MADV_RANDOM' if random else f'default read-around ({os_part.mmap_readahead_pages} pages)'}",
                m[key]["bytes_per_fault"] / 1024,
                fresh / 1024,
                "KiB",
            )
        )
    machine = {k: m[k] for k in ("page_bytes", "read_ahead_bytes", "iops_at_depth", "pread_cpu_s")}
    return HarnessReport(machine, rows)
