"""Published measurements described to the simulator: each checks/*.toml names its source, the
server (a hardware preset, optionally with table overrides), the model, a workload, and two
placements whose measured relative change the simulator must predict.

A check passes when the predicted change has the measured sign and lies within a factor of two
of it. Nothing here is fitted: the presets' constants are used as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from engramsim.engine import engine_from_dict
from engramsim.errors import UserError
from engramsim.hardware import hardware_from_dict
from engramsim.model import load_model
from engramsim.presets import MAX_CONTEXT, MAX_EP, MAX_GPUS, MAX_TP, ROOT, build, load_toml, resolve, spec
from engramsim.sim.run import Scenario, simulate
from engramsim.sim.tiers import Placement
from engramsim.workload import load_workload, with_engine

CHECKS_DIR = ROOT / "checks"


@dataclass(frozen=True)
class CheckSpec:
    """A checks/*.toml file, each key typed and bounded as presets are (presets.spec)."""

    name: str = spec("name", kind=str)
    source: str = spec("source", kind=str)
    model: str = spec("model", kind=str)
    hw: str = spec("hw", kind=str)
    workload: str = spec("workload", kind=str)
    reference: dict = spec("reference", kind=dict)
    variant: dict = spec("variant", kind=dict)
    # A relative change of output throughput: above -100% (the variant still runs), at most 100x.
    measured_change_pct: float = spec("measured_change_pct", lo=-100.0, hi=1e4)
    what: str = spec("what", kind=str, default="")
    notes: str = spec("notes", kind=str, default="")
    engine: str = spec("engine", kind=str, default="nano-vllm")
    hw_overrides: dict = spec("hw_overrides", kind=dict, default_factory=dict)
    engine_overrides: dict = spec("engine_overrides", kind=dict, default_factory=dict)
    gpus: int = spec("gpus", lo=1, lo_open=False, hi=MAX_GPUS, default=1, kind=int)
    tp: int = spec("tp", lo=1, lo_open=False, hi=MAX_TP, default=1, kind=int)
    ep: int = spec("ep", lo=1, lo_open=False, hi=MAX_EP, default=1, kind=int)
    max_model_len: int = spec("max_model_len", lo_open=False, hi=MAX_CONTEXT, default=0, kind=int)  # 0: the model's
    measured_reference_tok_s: float | None = spec("measured_reference_tok_s", hi=1e9, default=None)


@dataclass(frozen=True)
class CheckResult:
    name: str
    source: str
    what: str
    reference_tok_s: float
    variant_tok_s: float
    predicted_change_pct: float
    measured_change_pct: float
    bounds: dict
    # The reference arm's published throughput, when the source gives it: how far the simulated
    # baseline is from the measured one says how much a relative change can be trusted.
    measured_reference_tok_s: float | None = None

    @property
    def baseline_ratio(self) -> float | None:
        """Simulated over measured reference throughput (None when the source gives no figure)."""
        if self.measured_reference_tok_s is None:
            return None
        return self.reference_tok_s / self.measured_reference_tok_s

    @property
    def predicted_added_us_per_token(self) -> float:
        """What the variant adds to each output token's share of wall time, simulated (µs)."""
        return 1e6 * (1 / self.variant_tok_s - 1 / self.reference_tok_s)

    @property
    def measured_added_us_per_token(self) -> float | None:
        """The same from the source's own figures (None without its reference throughput): an
        absolute cost that does not lean on the simulated baseline being right."""
        if self.measured_reference_tok_s is None:
            return None
        variant = self.measured_reference_tok_s * (1 + self.measured_change_pct / 100)
        return 1e6 * (1 / variant - 1 / self.measured_reference_tok_s)

    @property
    def direction_right(self) -> bool:
        return (self.predicted_change_pct > 0) == (self.measured_change_pct > 0) and self.predicted_change_pct != 0

    @property
    def ratio(self) -> float:
        """Predicted over measured change (1 = exact)."""
        return self.predicted_change_pct / self.measured_change_pct

    @property
    def passes(self) -> bool:
        return self.direction_right and 0.5 <= self.ratio <= 2.0

    def to_dict(self) -> dict:
        return asdict(self) | {
            "direction_right": self.direction_right,
            "ratio": self.ratio,
            "passes": self.passes,
            "baseline_ratio": self.baseline_ratio,
            "predicted_added_us_per_token": self.predicted_added_us_per_token,
            "measured_added_us_per_token": self.measured_added_us_per_token,
        }


def check_paths(paths=()) -> list[Path]:
    found = [Path(p) for p in paths] or sorted(CHECKS_DIR.glob("*.toml"))
    if not found:
        raise UserError(f"no checks found under {CHECKS_DIR}")
    return found


def run_check(path: Path) -> CheckResult:
    check = load_check(path)
    where = str(path)
    hw = _hardware(check.hw, check.hw_overrides, path)
    engine = _engine(check.engine, check.engine_overrides, path)
    workload = with_engine(load_workload(_near(check.workload, path)), engine)
    scenario = Scenario(
        hw=hw,
        model=load_model(check.model),
        workload=workload,
        engine=engine,
        gpus=check.gpus,
        tp=check.tp,
        ep=check.ep,
        max_model_len=check.max_model_len,
        prefetch=engine.prefetch,
    )
    placements = [
        _placement(table, f"{where} [{k}]") for k, table in (("reference", check.reference), ("variant", check.variant))
    ]
    ref, var = simulate(scenario, placements).runs
    for run in (ref, var):
        if not run.fits:
            raise UserError(f"{where}: {run.tier} does not fit: {'; '.join(run.problems)}")
    change = 100.0 * (var.throughput_tok_s - ref.throughput_tok_s) / ref.throughput_tok_s
    return CheckResult(
        check.name,
        check.source,
        check.what,
        ref.throughput_tok_s,
        var.throughput_tok_s,
        change,
        check.measured_change_pct,
        var.fetch_bounds,
        check.measured_reference_tok_s,
    )


def load_check(path: Path) -> CheckSpec:
    """A check file's keys, typed and bounded; one line naming the file and key otherwise."""
    check = build(CheckSpec, load_toml(path), str(path))
    if check.measured_change_pct == 0:
        raise UserError(f"{path}: 'measured_change_pct' must not be 0 (a check compares the predicted change to it)")
    return check


def _near(name: str, path: Path) -> str:
    """A file named relative to the check, else a preset name."""
    local = path.parent / name
    return str(local) if local.is_file() else name


def _hardware(name: str, overrides: dict, path: Path):
    """A hardware preset with some of its tables' keys replaced (`[hw_overrides.<table>]`)."""
    src = resolve("hardware", _near(name, path))
    data = load_toml(src)
    for table, keys in overrides.items():
        if not isinstance(keys, dict):
            raise UserError(f"{path}: [hw_overrides.{table}] must be a table")
        data[table] = {**data.get(table, {}), **keys}
    return hardware_from_dict(data, f"{src} (with overrides from {path.name})", src)


def _engine(name: str, overrides: dict, path: Path):
    """An engine preset with some of its keys replaced (`[engine_overrides]`), e.g. a setting
    the measured run changed from the engine's default."""
    if not isinstance(overrides, dict):
        raise UserError(f"{path}: [engine_overrides] must be a table")
    src = resolve("engine", _near(name, path))
    data = load_toml(src)
    data.setdefault("name", src.stem)
    return engine_from_dict({**data, **overrides}, f"{src} (with overrides from {path.name})", src)


def _placement(table: dict, where: str) -> Placement:
    if not isinstance(table, dict) or "tier" not in table:
        raise UserError(f"{where}: needs a 'tier'")
    allowed = {f.name for f in fields(Placement)}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")
    for key, value in table.items():
        want = {"prefetch": bool}.get(key, (int, float) if key.endswith(("_bytes", "_rate")) else str)
        if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            raise UserError(f"{where}: '{key}' has the wrong type ({value!r})")
    return Placement(**table)
