"""Hostile input to the features that came after tests/test_bad_input.py: check files, config.json
models, sweep grids, nvbandwidth files, empty flag values, repeated candidates. Each class of bug
a review found has a test here: one line on stderr, exit 2, nothing on stdout."""

from __future__ import annotations

import json
import math
import re

import click
import pytest

from engramsim.cli import COMMANDS, cli
from engramsim.commands.numbers import Number
from engramsim.presets import ROOT
from tests.clikit import run_cli

CHECK = ROOT / "checks" / "b300-blog-hbm-vs-uva-c8.toml"
HF = ROOT / "tests" / "fixtures" / "hf"


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result
    assert result.stdout == "", result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def lines_at_80(monkeypatch, *argv) -> list[str]:
    """The command's output at 80 columns, held to them: no line wider, no figure cut to '…'."""
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli(*argv)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.stdout
    return lines


def with_key(text: str, key: str, value: str) -> str:
    new, n = re.subn(rf"^{re.escape(key)} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    assert n == 1, key
    return new


@pytest.mark.parametrize(
    "key, value",
    [
        ("gpus", '"8"'),
        ("gpus", "[]"),
        ("gpus", "nan"),
        ("gpus", "0"),
        ("tp", "1.5"),
        ("tp", "true"),
        ("ep", "{ a = 1 }"),
        ("ep", "1e30"),
        ("max_model_len", '"long"'),
        ("max_model_len", "-1"),
        ("measured_change_pct", '"2.1"'),
        ("measured_change_pct", "nan"),
        ("measured_change_pct", "0"),
        ("measured_change_pct", "-150"),
        ("measured_reference_tok_s", "inf"),
        ("hw", "[]"),
        ("model", "5"),
        ("engine", "true"),
        ("name", "3"),
    ],
)
def test_a_bad_key_in_a_check_file_is_one_line_naming_it(tmp_path, key, value):
    path = tmp_path / "check.toml"
    path.write_text(with_key(CHECK.read_text(), key, value))
    assert_one_line_error(run_cli("checks", path), str(path), f"'{key}'")


@pytest.mark.parametrize("table", ["hw_overrides", "engine_overrides", "reference"])
def test_a_check_table_given_as_a_value_is_one_line(tmp_path, table):
    head = CHECK.read_text().split("\n[", 1)[0]  # the top-level keys, before any table
    reference = "" if table == "reference" else '[reference]\ntier = "hbm"\n'
    path = tmp_path / "check.toml"
    path.write_text(f'{table} = "x"\n{head}\n{reference}[variant]\ntier = "hbm"\n')
    assert_one_line_error(run_cli("checks", path), f"'{table}' must be a table, got a string")


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_hidden_layers", 0),
        ("num_hidden_layers", "43"),
        ("hidden_size", [4096]),
        ("hidden_size", None),
        ("q_lora_rank", True),
        ("quantization_config", "fp8"),
        ("compress_ratios", "4,128"),
        ("compress_ratios", [4, "x"]),
        ("tie_word_embeddings", "no"),
    ],
)
def test_a_config_json_field_of_the_wrong_type_is_one_line_before_any_arithmetic(tmp_path, field, value):
    data = json.loads((HF / "deepseek-v4-flash.json").read_text())
    data[field] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert_one_line_error(run_cli("memory", "--model", path), str(path), f"'{field}'")


def test_a_config_json_model_sweeps_as_it_simulates(tmp_path):
    model = HF / "engram-demo.json"
    grid = tmp_path / "grid.toml"
    grid.write_text(f'model = "{model}"\ntier = "hbm"\nworkload = "fixed"\nmax_seqs = 8\n"workload.num_seqs" = 16\n')
    swept = run_cli("sweep", grid, "--workers", "1", "--json")
    assert swept.returncode == 0, swept.stderr
    row = json.loads(swept.stdout)["rows"][0]
    workload = tmp_path / "w.toml"
    fixed = (ROOT / "workloads" / "fixed.toml").read_text().replace("num_seqs = 256", "num_seqs = 16")
    workload.write_text(fixed)
    simulated = run_cli(
        "simulate", "--model", model, "--tier", "hbm", "--workload", workload, "--max-seqs", "8", "--json"
    )
    assert simulated.returncode == 0, simulated.stderr
    run = json.loads(simulated.stdout)["runs"][0]
    assert row["output_throughput"] == pytest.approx(run["throughput_tok_s"], rel=1e-9)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the grid sets no key"),
        ('hw = ["h800", "h800"]\n', "axis 'hw' lists 'h800' twice"),
        ("hbm_cache_gib = [1, 1.0]\n", "axis 'hbm_cache_gib' lists 1.0 twice"),
        (
            f"seed = {list(range(1000))}\nhbm_cache_gib = {[i / 8 for i in range(1000)]}\n",
            "the grid has 6,000,000 configs (seed 1000 x hbm_cache_gib 1000 x tier 6)",
        ),
    ],
)
def test_a_grid_that_is_empty_repeats_itself_or_is_too_large_is_refused_before_running(tmp_path, text, message):
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    assert_one_line_error(run_cli("sweep", grid, "--json"), message)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "--from-cmd", ""], "--from-cmd: expected `vllm serve MODEL"),
        (["simulate", "--engine", "vllm", "--engram-config", ""], "--engram-config is not JSON"),
        (["simulate", "--hw", ""], "empty hardware preset name (known: "),
        (["simulate", "--hw", "h80"], "did you mean 'h800'?"),
        (["plan", "--workload", "chat-"], "did you mean 'chat'?"),
        (["profile", "--only", ","], "--only names no benchmark"),
        (["paper", "--seed", "-1"], "'--seed': must be a whole number in [0, 4294967295]"),
    ],
)
def test_empty_or_misspelled_values_are_one_line(argv, message):
    assert_one_line_error(run_cli(*argv), message)


def test_an_nvbandwidth_file_with_nothing_calibrate_uses_is_an_error(tmp_path):
    case = {"name": "host_to_device_memcpy_ce", "status": "Passed", "bandwidth_matrix": [["N/A"]]}
    path = tmp_path / "nvb.json"
    path.write_text(json.dumps({"nvbandwidth": {"testcases": [case]}}))
    result = run_cli("calibrate", "--nvbandwidth", path, "--out", tmp_path / "hw.toml")
    assert_one_line_error(result, "no measured testcase that calibrate uses", "no measured cell")
    assert not (tmp_path / "hw.toml").exists()


def every_option():
    for name in COMMANDS:
        command = cli.get_command(None, name)
        commands = [command, *getattr(command, "commands", {}).values()]
        for c in commands:
            yield from ((name, p) for p in c.params)


def test_every_numeric_option_rejects_nan_and_out_of_range_values():
    """click's own INT/FLOAT (and its ranges) let NaN or any magnitude through: every numeric
    option goes through commands.numbers.Number, which names the flag, its range and the value."""
    raw = (click.types.IntParamType, click.types.FloatParamType)
    loose = [
        f"{name} {p.opts[0]}"
        for name, p in every_option()
        if isinstance(p.type, raw) and not isinstance(p.type, Number)
    ]
    assert loose == []


def helps():
    yield ["--help"]
    for name in COMMANDS:
        command = cli.get_command(None, name)
        yield [name, "--help"]
        yield from ([name, sub, "--help"] for sub in getattr(command, "commands", {}))


@pytest.mark.parametrize("argv", list(helps()), ids=" ".join)
def test_every_help_fits_80_columns_and_explains_every_option(argv, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli(*argv)
    assert result.returncode == 0, result.stderr
    wide = [line for line in result.stdout.splitlines() if len(line) > 80]
    assert wide == []
    options = result.stdout.split("Options:", 1)[1].split("Commands:", 1)[0].splitlines()
    # An option with no help: its line holds only the name (and type), and the next line is
    # another option (a long name puts its help on the next line, indented deeper).
    bare = [
        line
        for line, after in zip(options, [*options[1:], ""])
        if line.startswith("  -")
        and len(re.split(r"\s{2,}", re.sub(r"\[default: [^\]]*\]", "", line).strip())) == 1
        and not after.startswith("   ")
    ]
    assert bare == []


def test_checks_read_at_80_columns_with_whole_names(monkeypatch):
    lines = lines_at_80(monkeypatch, "checks", ROOT / "checks" / "mooncake-4065-local-1k-c1.toml")
    assert "mooncake-4065-local-1k-c1" in lines  # its note heading, whole
    row = next(line for line in lines if line.strip().startswith("mooncake-4065-"))
    assert "-0.40%" in row.split()  # the measured change, in the row of the (folded) name


def plan_choice(**changes) -> dict:
    choice = {
        "hw": "h800",
        "engine": "nano-vllm",
        "gpus": 8,
        "tp": 2,
        "dp": 4,
        "ep": 1,
        "tier": "dram-copy",
        "cache_GiB": 2.0,
        "usd_per_mtok": 0.1434,
        "usd_per_hour": 24.6,
        "output_throughput": 47912.0,
        "tok_s_per_gpu": 5989.0,
        "tok_s_per_user": 27.9,
        "overhead_pct": 1.13,
        "p99_ttft_ms": 3395.0,
        "p99_tpot_ms": 42.1,
        "problems": "",
    }
    return {**choice, **changes}


@pytest.mark.parametrize("feasible", [True, False])
def test_a_plan_reads_at_80_columns_without_cut_figures(feasible):
    from io import StringIO

    from rich.console import Console

    from engramsim.plan import PlanResult

    slos = {"max_p99_ttft_ms": 500.0, "max_p99_tpot_ms": None, "min_tok_s": None, "max_overhead_pct": 3.0}
    choice = plan_choice()
    miss = plan_choice(missed={"p99_ttft_ms": 5.79})
    unfit = plan_choice(missed={"fits": math.inf}, problems="does not fit", overhead_pct=None, output_throughput=None)
    result = PlanResult(
        "dense-4b-engram100b", "fixed", "cloud-2026 (2026-05)", slos,
        [choice] if feasible else [], [choice] if feasible else [], [], [] if feasible else [miss, unfit], 1,
    )  # fmt: skip
    out = StringIO()
    Console(file=out, width=80, color_system=None).print(result)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    row = next(line for line in text.splitlines() if "dram-copy" in line)
    if feasible:
        assert ["0.143", "47,912", "+1.13%", "3,395", "42.1"] == row.split()[-5:]
    else:
        assert "TTFT p99 3,395 ms" in text and "> 500" in text  # the figure against its bound
        assert "-%" not in text


def test_presets_read_at_80_columns_with_whole_names_and_no_dropped_column(monkeypatch):
    from engramsim.presets import preset_names

    lines = lines_at_80(monkeypatch, "presets")
    names = {line.split()[0] for line in lines if line.strip()}
    for kind in ("hardware", "model", "engine", "workload"):
        assert set(preset_names(kind)) <= names
    engines = "\n".join(lines).split("Engines (engines/)", 1)[1].split("Workloads", 1)[0]
    copies = engines.count("per-replica") + engines.count("per-node")  # vllm: per-node (#57651)
    assert "copies" in engines and copies == len(preset_names("engine"))


def test_onebox_reads_at_80_columns_with_every_figure_whole(monkeypatch):
    lines = lines_at_80(monkeypatch, "onebox")
    data = json.loads(run_cli("onebox", "--json").stdout)
    for case in data["cases"]:
        for arm in case["arms"]:
            row = next(line for line in lines if f"{arm['measured_tok_s']:.2f}" in line.split())
            assert f"{arm['predicted_tok_s']:.2f}" in row.split()


def test_a_gpu_benchmark_without_a_gpu_is_an_error_not_an_empty_profile(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has the GPU the benchmark needs")
    out = tmp_path / "p.json"
    result = run_cli("profile", "--only", "hbm_gather", "--quick", "--out", out)
    assert_one_line_error(result, "--only hbm_gather needs a CUDA device")
    assert not out.exists()


def test_memory_says_what_would_make_room_when_the_weights_fit_no_rank(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli("memory", "--tier", "none")  # DeepSeek-V4.1-Flash on one H200
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    plan = json.loads(run_cli("memory", "--tier", "none", "--json").stdout)["plans"][0]
    weights, usable = plan["per_rank_GiB"]["weights"], plan["usable_GiB"]
    assert weights > usable
    assert f"nothing fits: the weights alone take {weights:.1f} GiB per rank of {usable:.1f} usable" in text
    assert "nothing fits" not in run_cli("memory", "--tier", "none", "--tp", "8").stdout
