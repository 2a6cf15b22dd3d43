"""The CLI in-process (tests/clikit.py), plus one subprocess check of the `cli.py` entry point."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engramsim.hardware import load_hardware
from engramsim.model import load_model
from tests.clikit import run_cli as cli

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--workload", "fixed", "--max-seqs", "16"]


def test_entry_point_help_in_a_fresh_interpreter():
    r = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert r.returncode == 0 and "simulate" in r.stdout and "presets" in r.stdout


def test_simulate_json_is_consistent():
    r = cli("simulate", "--tier", "dram-copy", "--tier", "hbm", "--json", *FAST)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    baseline = data["baseline_tok_s"]
    assert baseline == data["baseline"]["throughput_tok_s"] > 0
    assert baseline == pytest.approx(data["baseline"]["output_tokens"] / data["baseline"]["makespan_s"])
    run, hbm = data["runs"]
    assert run["tier"] == "dram-copy" and run["fits"] is True and run["baseline_tok_s"] == baseline
    assert run["throughput_tok_s"] == pytest.approx(run["output_tokens"] / run["makespan_s"])
    assert run["output_tokens"] == data["baseline"]["output_tokens"]  # same requests, same tokens
    assert run["overhead_pct"] == pytest.approx(100 * (baseline - run["throughput_tok_s"]) / baseline)
    assert 0 < run["ttft_p50_s"] <= run["ttft_p99_s"] and 0 < run["tpot_p50_s"] <= run["tpot_p99_s"]
    assert 0 <= run["prefill_stall_s"] <= run["stall_s"]
    assert run["resources"]["link"]["unit"] == "GB" and run["resources"]["link"]["moved"] > 0
    assert all(0 <= res["utilization"] <= 1 for res in run["resources"].values())
    # The whole table does not fit in one H800's HBM: reported, not simulated.
    assert hbm["tier"] == "hbm" and hbm["fits"] is False and hbm["problems"]
    assert hbm["throughput_tok_s"] is None and hbm["bound"].startswith("does not fit")


def test_same_seed_gives_byte_identical_json():
    a = cli("simulate", "--tier", "ssd", "--json", "--seed", "7", *FAST)
    b = cli("simulate", "--tier", "ssd", "--json", "--seed", "7", *FAST)
    assert a.returncode == 0 and a.stdout == b.stdout and json.loads(a.stdout)["seed"] == 7


def test_simulate_table_shows_the_runs_figures(monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # wide enough that no cell folds
    data = json.loads(cli("simulate", "--tier", "dram-uva", "--json", *FAST).stdout)
    r = cli("simulate", "--tier", "dram-uva", *FAST)
    assert r.returncode == 0, r.stderr
    run = data["runs"][0]
    assert f"no-Engram baseline: {data['baseline_tok_s']:,.1f} output tok/s" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("│ dram-uva"))
    assert f"{run['throughput_tok_s']:,.1f}" in row and f"{run['overhead_pct']:+.2f}%" in row


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulate", "--hw", "nope"], "unknown hardware preset"),
        (["simulate", "--model", "nope"], "unknown model preset"),
        (["simulate", "--workload", "nope"], "unknown workload preset"),
        (["simulate", "--gpus", "0"], "in [1, 1000000]"),
        (["simulate", "--gpus", "3", "--tp", "2"], "not a multiple"),
        (["simulate", "--max-seqs", "0"], "in [1, 1000000]"),
        (["simulate", "--hw", "missing/file.toml"], "not found"),
        (["simulate", "--tier", "floppy"], "floppy"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = cli(*args)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_malformed_toml_path_is_one_line(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text("[gpu\n")
    r = cli("simulate", "--hw", str(bad))
    assert r.returncode == 2 and "malformed TOML" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_presets_json_gives_each_presets_numbers():
    r = cli("presets", "--json")
    data = json.loads(r.stdout)
    hw = {h["name"]: h for h in data["hardware"]}
    assert set(hw) >= {"h800", "gh200"}
    h800 = load_hardware("h800")
    assert hw["h800"]["h2d_GBps"] == pytest.approx(h800.link.h2d_Bps / 1e9)
    assert hw["h800"]["hbm_GiB"] == pytest.approx(h800.gpu.hbm_bytes / 2**30)
    assert hw["h800"]["gpus_per_host"] == h800.gpus_per_host
    models = {m["name"]: m for m in data["models"]}
    flash = load_model("deepseek-v4.1-flash").engram
    assert models["deepseek-v4.1-flash"]["table_GB"] == pytest.approx(flash.table_bytes / 1e9)
    assert models["deepseek-v4.1-flash"]["engram_layers"] == list(flash.layer_ids)
    assert models["deepseek-v4.1-flash"]["row_bytes"] == flash.row_bytes


def test_cache_sweep_and_cxl_pool_options():
    r = cli(
        "simulate",
        "--tier",
        "cxl-uva",
        "--hbm-cache-gib",
        "0",
        "--hbm-cache-gib",
        "10",
        "--cxl",
        "cxl-pool",
        "--json",
        *FAST,
    )
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)["runs"]
    assert [run["hbm_cache_GiB"] for run in runs] == [0.0, 10.0]
    assert runs[1]["hbm_hit_rate"] > 0 and runs[1]["kv_tokens_per_rank"] < runs[0]["kv_tokens_per_rank"]
    assert runs[0]["hbm_hit_rate"] == 0.0
    # The cache serves its hits in HBM: the link carries only the misses.
    moved = [run["resources"]["link"]["moved"] for run in runs]
    assert moved[1] < moved[0]
    assert "switch" in runs[0]["resources"]


def test_unknown_cxl_part_is_one_line():
    r = cli("simulate", "--cxl", "floppy-pool")
    assert r.returncode == 2 and "--cxl: unknown part 'floppy-pool'" in r.stderr


def test_simulate_json_speaks_vllm_bench_serve():
    r = cli("simulate", "--tier", "dram-copy", "--tier", "hbm", "--json", *FAST)
    data = json.loads(r.stdout)
    assert data["schema_version"] == 2 and list(data)[0] == "schema_version"
    from engramsim.results import BENCH_KEYS

    run, unfit, base = data["runs"][0], data["runs"][1], data["baseline"]
    for d in (run, unfit, base):
        assert set(BENCH_KEYS) <= set(d)
    assert run["output_throughput"] == pytest.approx(run["throughput_tok_s"])
    assert run["duration"] == pytest.approx(run["makespan_s"])
    assert run["median_ttft_ms"] == pytest.approx(1e3 * run["ttft_p50_s"])
    assert run["p99_tpot_ms"] == pytest.approx(1e3 * run["tpot_p99_s"])
    assert base["output_throughput"] == pytest.approx(data["baseline_tok_s"])
    assert unfit["output_throughput"] is None


def test_simulate_at_80_columns_never_wraps(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = cli("simulate", "--tier", "hbm", "--tier", "ssd", "--hbm-cache-gib", "2", *FAST)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "ssd +2GiB HBM" in r.stdout
