import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, check=False):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


FAST = ["--workload", "fixed", "--max-seqs", "16"]


def test_simulate_json_has_the_documented_keys():
    r = cli("simulate", "--tier", "dram-copy", "--tier", "hbm", "--json", *FAST)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    run = data["runs"][0]
    for key in ("tier", "fits", "throughput_tok_s", "baseline_tok_s", "overhead_pct", "ttft_p50_s",
                "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "stall_s", "resources", "bound"):
        assert key in run
    assert data["runs"][1]["fits"] is False and data["runs"][1]["problems"]


def test_same_seed_gives_byte_identical_json():
    a = cli("simulate", "--tier", "ssd", "--json", "--seed", "7", *FAST)
    b = cli("simulate", "--tier", "ssd", "--json", "--seed", "7", *FAST)
    assert a.returncode == 0 and a.stdout == b.stdout


def test_simulate_renders_a_table():
    r = cli("simulate", "--tier", "dram-uva", *FAST)
    assert r.returncode == 0 and "dram-uva" in r.stdout and "baseline" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["simulate", "--hw", "nope"], "unknown hardware preset"),
    (["simulate", "--model", "nope"], "unknown model preset"),
    (["simulate", "--workload", "nope"], "unknown workload preset"),
    (["simulate", "--gpus", "0"], "at least 1"),
    (["simulate", "--gpus", "3", "--tp", "2"], "not a multiple"),
    (["simulate", "--max-seqs", "0"], "at least 1"),
    (["simulate", "--hw", "missing/file.toml"], "not found"),
    (["simulate", "--tier", "floppy"], "floppy"),
])
def test_bad_input_is_one_line_and_nonzero(args, message):
    r = cli(*args)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3


def test_malformed_toml_path_is_one_line(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text("[gpu\n")
    r = cli("simulate", "--hw", str(bad))
    assert r.returncode == 2 and "malformed TOML" in r.stderr and "Traceback" not in r.stderr


def test_presets_json_lists_all_kinds():
    r = cli("presets", "--json")
    data = json.loads(r.stdout)
    assert {h["name"] for h in data["hardware"]} >= {"h800", "gh200"}
    assert any(m["name"] == "deepseek-v4.1-flash" for m in data["models"])


def test_help_lists_commands():
    r = cli("--help")
    assert r.returncode == 0 and "simulate" in r.stdout and "presets" in r.stdout


def test_cache_sweep_and_cxl_pool_options():
    r = cli("simulate", "--tier", "cxl-uva", "--hbm-cache-gib", "0", "--hbm-cache-gib", "10",
            "--cxl", "cxl-pool", "--json", *FAST)
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)["runs"]
    assert [run["hbm_cache_GiB"] for run in runs] == [0.0, 10.0]
    assert runs[1]["hbm_hit_rate"] > 0 and runs[1]["kv_tokens_per_replica"] < runs[0]["kv_tokens_per_replica"]
    assert "switch" in runs[0]["resources"]


def test_unknown_cxl_part_is_one_line():
    r = cli("simulate", "--cxl", "floppy-pool")
    assert r.returncode == 2 and "--cxl: unknown part 'floppy-pool'" in r.stderr
