import json

import pytest

from engramsim.errors import UserError
from engramsim.plan import SLOs, TableSearch, candidate_grid, pareto_front, usd_per_hour
from engramsim.prices import HOURS_PER_YEAR, load_prices
from engramsim.sweep import build
from tests.clikit import run_cli as cli

TINY_WORKLOAD = """
name = "tiny"
kind = "offline"
num_seqs = 16
input_len_min = 64
input_len_max = 256
output_len_min = 16
output_len_max = 64
[engine]
max_num_seqs = 8
"""


@pytest.fixture
def workload(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_WORKLOAD)
    return str(path)


def test_the_price_preset_loads_with_a_price_for_every_server():
    prices = load_prices("cloud-2026")
    for hw in ("h100", "h200", "h800", "b200", "gh200"):
        assert prices.per_gpu_hour(hw) > 0
    assert prices.memory_usd_per_hour("dram", 1e9) == pytest.approx(10.0 / (3 * HOURS_PER_YEAR))


def test_a_purchase_price_is_spread_over_the_amortization_period(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "mine"\ndate = "2026-11"\namortize_years = 2.0\ndram_usd_per_GB = 5\n'
        "cxl_usd_per_GB = 6\nssd_usd_per_GB = 0.1\n[gpu.h100]\nusd_per_gpu = 17520\n"
    )
    assert load_prices(str(path)).per_gpu_hour("h100") == pytest.approx(1.0)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'name = "x"\ndate = "d"\namortize_years = 3\ndram_usd_per_GB = 1\ncxl_usd_per_GB = 1\n[gpu.h100]\nusd_per_gpu_hour = 1\n',
            "missing key 'ssd_usd_per_GB'",
        ),
        (
            'name = "x"\ndate = "d"\namortize_years = 3\ndram_usd_per_GB = 1\ncxl_usd_per_GB = 1\nssd_usd_per_GB = 1\n',
            "missing [gpu.<hardware>]",
        ),
        (
            'name = "x"\ndate = "d"\namortize_years = 3\ndram_usd_per_GB = 1\ncxl_usd_per_GB = 1\nssd_usd_per_GB = 1\n'
            "[gpu.h100]\nusd_per_gpu_hour = 1\nusd_per_gpu = 9\n",
            "give one of usd_per_gpu_hour or usd_per_gpu",
        ),
    ],
)
def test_a_price_file_with_missing_parts_is_one_error(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_prices(str(path))


def test_a_server_without_a_price_is_named():
    with pytest.raises(UserError, match="no GPU price for hardware 'tpu'"):
        load_prices("cloud-2026").per_gpu_hour("tpu")


def test_cost_per_hour_is_gpu_hours_plus_the_memory_holding_the_table(workload):
    prices = load_prices("cloud-2026")
    grid = candidate_grid("dense-4b-engram100b", workload, ["h100"], [2], [1], ["dram-copy", "hbm"], [0.0])
    dram, hbm = grid.configs
    table = build.presets(dram)[1].engram.table_bytes
    assert usd_per_hour(hbm, prices) == pytest.approx(2 * 3.00)
    # nano-vLLM runs one process per DP replica, each with its own copy of the table in DRAM.
    assert usd_per_hour(dram, prices) == pytest.approx(2 * 3.00 + 2 * table / 1e9 * 10.0 / (3 * HOURS_PER_YEAR))


def test_layouts_that_do_not_divide_are_not_candidates(workload):
    grid = candidate_grid("dense-4b-engram100b", workload, ["h100"], [1, 2], [1, 2], ["ssd"], [0.0])
    assert [(c["gpus"], c["tp"]) for c in grid.configs] == [(1, 1), (2, 1), (2, 2)]


def test_slo_misses_are_relative_excesses():
    slos = SLOs(max_p99_ttft_ms=100, min_tok_s=1000, max_overhead_pct=2)
    row = {"fits": True, "p99_ttft_ms": 150, "p99_tpot_ms": 10, "output_throughput": 800, "overhead_pct": 1.0}
    assert slos.misses(row) == pytest.approx({"p99_ttft_ms": 0.5, "output_throughput": 0.2})
    assert slos.misses({**row, "fits": False}) == {"fits": float("inf")}


def test_the_pareto_front_keeps_only_undominated_choices_and_one_of_each_tie():
    pts = [
        dict(n=1, tok_s_per_gpu=1000.0, tok_s_per_user=10.0),
        dict(n=2, tok_s_per_gpu=800.0, tok_s_per_user=30.0),
        dict(n=3, tok_s_per_gpu=700.0, tok_s_per_user=20.0),
        dict(n=4, tok_s_per_gpu=1000.0, tok_s_per_user=10.0),
    ]
    assert [p["n"] for p in pareto_front(pts)] == [1, 2]


def test_table_search_brackets_then_bisects_to_the_largest_feasible_scale(workload):
    grid = candidate_grid("dense-4b-engram100b", workload, ["h100"], [1], [1], ["dram-copy"], [0.0])
    search = TableSearch(grid.configs[0])
    limit = 3.7  # pretend a table above 3.7x today's no longer meets the bound
    while not search.done:
        ok = search.scale <= limit
        search.record(ok, search.probe_config(), {"fits": ok, "overhead_pct": 1.0})
    result = search.result()
    assert limit / 1.006 <= result["scale"] <= limit
    assert result["limited_by"] == "capacity"  # the probe above the limit did not fit
    base = build.presets(grid.configs[0])[1].engram.table_bytes / 2**30
    assert result["table_GiB"] == pytest.approx(base * result["scale"], rel=1e-3)


def test_plan_json_ranks_choices_by_usd_per_mtok(workload):
    r = cli(
        "plan",
        "--workload",
        workload,
        "--hw",
        "h100",
        "--hw",
        "h200",
        "--gpus",
        "1",
        "--tier",
        "dram-copy",
        "--tier",
        "ssd",
        "--max-overhead-pct",
        "50",
        "--no-table-search",
        "--workers",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    costs = [c["usd_per_mtok"] for c in data["choices"]]
    assert len(costs) == 4 and costs == sorted(costs)
    for key in ("hw", "gpus", "tp", "dp", "tier", "cache_GiB", "output_throughput", "overhead_pct", "usd_per_mtok"):
        assert key in data["choices"][0]
    assert data["pareto"] and data["largest_table"] == []


def test_plan_finds_the_largest_table_per_tier(workload):
    r = cli(
        "plan",
        "--workload",
        workload,
        "--hw",
        "h100",
        "--gpus",
        "1",
        "--tier",
        "hbm",
        "--max-overhead-pct",
        "50",
        "--workers",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    (largest,) = json.loads(r.stdout)["largest_table"]
    # 80 GB of HBM cannot hold a 100B-parameter table: the search shrinks it until it fits.
    assert largest["tier"] == "hbm" and 0 < largest["scale"] < 1 and largest["limited_by"] == "capacity"


def test_nothing_feasible_lists_the_closest_misses_and_exits_zero(workload):
    r = cli(
        "plan",
        "--workload",
        workload,
        "--hw",
        "h100",
        "--gpus",
        "1",
        "--tier",
        "ssd",
        "--tier",
        "dram-copy",
        "--max-p99-tpot-ms",
        "0.001",
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert "no feasible choice" in r.stdout and "p99_tpot_ms" in r.stdout


def test_an_unknown_server_price_is_one_line(workload):
    r = cli("plan", "--workload", workload, "--hw", "h100", "--prices", "missing/prices.toml")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not found" in r.stderr


def test_a_price_file_with_missing_parts_is_one_line_on_the_command_line(tmp_path, workload):
    prices = tmp_path / "p.toml"
    prices.write_text('name = "x"\ndate = "d"\namortize_years = 3\n[gpu.h100]\nusd_per_gpu_hour = 1\n')
    r = cli("plan", "--workload", workload, "--hw", "h100", "--prices", str(prices))
    assert r.returncode == 2 and "missing key 'dram_usd_per_GB'" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_context_and_concurrency_set_the_served_point():
    from engramsim.sweep import build

    g = candidate_grid(
        "dense-4b-engram100b", "fixed", ["h200"], [1], [1], ["dram-uva"], [0.0], concurrency=32, context=2048
    )
    workload = build.presets(g.configs[0])[2]
    assert (workload.input_len_min, workload.input_len_max, workload.kind, workload.concurrency) == (
        2048,
        2048,
        "closed",
        32,
    )
