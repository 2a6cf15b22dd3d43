import json

import pytest

from engramsim.errors import UserError
from engramsim.sim import run as sim_run
from engramsim.sweep import build, config_key, parse_grid, run_sweep
from engramsim.sweep.output import read_rows, write_rows
from engramsim.sweep.runner import make_tasks
from tests.clikit import run_cli as cli

FAST = {"model": "dense-4b-engram100b", "workload": "fixed", "max_seqs": 8, "workload.num_seqs": 16}
GRID12 = """
model = "dense-4b-engram100b"
workload = "fixed"
max_seqs = 8
"workload.num_seqs" = 16
hw = ["h800", "h200"]
tier = ["dram-uva", "dram-copy", "ssd"]
hbm_cache_gib = [0, 1]
"""


def grid(**axes):
    return parse_grid({**FAST, **axes}, "test.toml")


def test_the_grid_is_the_product_of_its_axes_minus_excludes():
    g = parse_grid(
        {
            **FAST,
            "hw": ["h800", "h200"],
            "tier": ["dram-uva", "ssd"],
            "gpus": [1, 2],
            "exclude": [{"hw": "h200", "tier": "ssd"}, {"gpus": 2, "tier": ["dram-uva"]}],
        },
        "t",
    )
    assert g.axes == ["hw", "tier", "gpus"]
    combos = [(c["hw"], c["tier"], c["gpus"]) for c in g.configs]
    assert combos == [("h800", "dram-uva", 1), ("h800", "ssd", 1), ("h800", "ssd", 2), ("h200", "dram-uva", 1)]


def test_a_config_key_ignores_how_the_grid_spelled_it():
    a = parse_grid({**FAST, "hbm_cache_gib": 1, "tier": "ssd"}, "a").configs[0]
    b = parse_grid({"tier": "ssd", "hbm_cache_gib": 1.0, **FAST}, "b").configs[0]
    c = parse_grid({**FAST, "hbm_cache_gib": 2, "tier": "ssd"}, "c").configs[0]
    assert config_key(a) == config_key(b) != config_key(c)


def test_an_absent_tier_sweeps_every_tier_as_simulate_does():
    assert [c["tier"] for c in grid().configs] == ["hbm", "dram-uva", "dram-copy", "cxl-uva", "cxl-copy", "ssd"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"foo": 1}, "unknown grid key 'foo'"),
        ({"tier": []}, "axis 'tier' is empty"),
        ({"tier": "floppy"}, "unknown tier 'floppy'"),
        ({"gpus": "two"}, "'gpus' takes int values"),
        ({"exclude": [{"hw.gpu.hbm_GiB": 80}]}, "[[exclude]] names 'hw.gpu.hbm_GiB'"),
        ({"tier": "ssd", "exclude": [{"tier": "ssd"}]}, "every config is excluded"),
        ({"hbm_cache_gib": float("inf")}, "'hbm_cache_gib' must be in [0, 16384], got inf"),
        ({"accept_rate": float("nan")}, "'accept_rate' must be in [0, 1.0], got nan"),
        ({"tp": 10**11}, "'tp' must be in [0, 1024]"),
    ],
)
def test_bad_grids_are_one_clear_error(data, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_grid({**FAST, **data}, "g.toml")


def test_configs_sharing_a_backbone_share_one_task_and_one_baseline(monkeypatch):
    g = grid(tier=["dram-uva", "ssd"], prefetch=[True, False], seed=[0, 1])
    tasks = make_tasks(g.configs)
    assert len(tasks) == 2 and all(len(t) == 4 for t in tasks)
    assert {g.configs[i]["seed"] for i in tasks[0]} == {0}
    calls = []
    real = sim_run.run_baseline
    spy = lambda s, *rest, **kw: calls.append(s) or real(s, *rest, **kw)  # noqa: E731
    monkeypatch.setattr("engramsim.sweep.runner.run_baseline", spy)
    result = run_sweep(g)
    assert len(calls) == 2 and result.ran == 8


def test_a_row_holds_what_simulate_gives_for_that_config():
    g = grid(tier="ssd", hbm_cache_gib=1.0, seed=3)
    row = run_sweep(g).rows[0]
    config = g.configs[0]
    run = sim_run.simulate(build.scenario(config), [build.placement(config)]).runs[0]
    assert row["key"] == config_key(config)
    assert row["output_throughput"] == run.throughput_tok_s
    assert row["overhead_pct"] == run.overhead_pct
    assert row["p99_tpot_ms"] == pytest.approx(1e3 * run.tpot_p99_s)
    assert row["kv_tokens_per_rank"] == run.kv_tokens_per_rank
    assert row["mem_hot_cache_GiB"] == 1.0


def test_preset_fields_are_axes_that_change_the_result():
    g = grid(tier="dram-copy", **{"hw.gpu.hbm_bw_GBps": [1000, 4000]})
    slow, fast = run_sweep(g).rows
    assert slow["hw.gpu.hbm_bw_GBps"] == 1000 and fast["output_throughput"] > slow["output_throughput"]


def test_a_config_the_simulator_rejects_is_a_row_that_says_why():
    rows = run_sweep(grid(tier="dram-copy", gpus=[1, 3], tp=[2])).rows
    assert rows[0]["fits"] is False and "ranks exceed the 1 GPUs" in rows[0]["problems"]
    assert rows[1]["fits"] is False and "not a multiple" in rows[1]["problems"]


def test_engine_dp_and_ep_are_axes_and_gpus_default_to_dp_x_tp():
    g = grid(tier="dram-copy", engine=["nano-vllm", "vllm"], dp=[1, 2])
    assert [(c["engine"], c["dp"], c["gpus"]) for c in g.configs] == [
        ("nano-vllm", 1, 1),
        ("nano-vllm", 2, 2),
        ("vllm", 1, 1),
        ("vllm", 2, 2),
    ]
    rows = run_sweep(g).rows
    assert all(r["fits"] for r in rows)
    # Two replicas serve the same requests faster; another engine plans another KV budget.
    assert rows[1]["output_throughput"] > rows[0]["output_throughput"]
    assert rows[0]["kv_tokens_per_rank"] != rows[2]["kv_tokens_per_rank"]


def test_a_placement_the_simulator_rejects_spoils_only_its_own_row():
    rows = run_sweep(grid(tier="ssd", ssd_dram_hit=[0.0, 0.5], ssd_dram_cache_gib=[0.0, 4.0])).rows
    assert [r["fits"] for r in rows] == [True, True, True, False]
    assert "not both" in rows[3]["problems"]


def test_a_bad_preset_field_fails_before_anything_runs():
    with pytest.raises(UserError, match="unknown key 'nope'"):
        run_sweep(grid(**{"hw.gpu.nope": [1, 2]}))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_results_files_round_trip(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    rows = [
        {
            "key": "0123456789012345",
            "hw": "h800",
            "fits": True,
            "output_throughput": 1.5,
            "problems": "",
            "p99_ttft_ms": None,
            "kv_tokens_per_rank": 512,
        }
    ]
    path = tmp_path / f"r{suffix}"
    write_rows(path, rows)
    back = read_rows(path)
    assert back[0]["key"] == "0123456789012345" and back[0]["fits"] is True
    assert back[0]["output_throughput"] == 1.5 and back[0]["p99_ttft_ms"] is None
    assert not list(tmp_path.glob(".*tmp"))


def test_twelve_configs_give_twelve_rows_and_resume_reruns_nothing(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(GRID12)
    out = tmp_path / "results.csv"
    first = cli("sweep", str(grid_file), "--out", str(out), "--workers", "2", "--json")
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["ran"] == 12 and len(data["rows"]) == 12 and len(read_rows(out)) == 12
    again = cli("sweep", str(grid_file), "--out", str(out), "--resume", "--json")
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["ran"] == 0 and resumed["resumed"] == 12
    assert [r["key"] for r in resumed["rows"]] == [r["key"] for r in data["rows"]]
    assert resumed["rows"][3]["output_throughput"] == pytest.approx(data["rows"][3]["output_throughput"])


def test_worker_processes_give_the_rows_one_process_gives():
    g = grid(tier=["dram-uva", "ssd"], seed=[0, 1, 2])
    assert run_sweep(g, workers=2).rows == run_sweep(g, workers=1).rows


def test_ray_and_local_give_identical_rows():
    pytest.importorskip("ray")
    g = grid(tier=["dram-copy", "ssd"], seed=[0, 1])
    assert run_sweep(g, executor="ray", workers=2).rows == run_sweep(g, workers=1).rows


@pytest.mark.parametrize(
    "grid_text, extra, message",
    [
        ("foo = 1\n", [], "unknown grid key 'foo'"),
        ("tier = []\n", [], "axis 'tier' is empty"),
        ('tier = "ssd"\n', ["--executor", "ray", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
        ('tier = "ssd"\n', ["--resume"], "--resume needs --out"),
        ('tier = "ssd"\n', ["--out", "r.xlsx"], "ending in .csv"),
    ],
)
def test_bad_sweep_input_is_one_line(tmp_path, grid_text, extra, message):
    if "ray" in extra:
        pytest.importorskip("ray")
    grid_file = tmp_path / "g.toml"
    grid_file.write_text(grid_text)
    r = cli("sweep", str(grid_file), *extra)
    assert r.returncode == 2 and message in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_an_interrupted_sweep_keeps_the_rows_it_finished(tmp_path, monkeypatch):
    g = grid(tier=["dram-copy", "ssd"], seed=[0, 1, 2])
    out = tmp_path / "r.jsonl"
    done = []

    def interrupt_after_one(task_index, rows, real):
        real(task_index, rows)
        done.append(task_index)
        raise KeyboardInterrupt

    real_run_tasks = __import__("engramsim.sweep.executors", fromlist=["run_tasks"]).run_tasks
    monkeypatch.setattr(
        "engramsim.sweep.run.run_tasks",
        lambda tasks, on_result, *a: real_run_tasks(tasks, lambda i, r: interrupt_after_one(i, r, on_result), *a),
    )
    with pytest.raises(KeyboardInterrupt):
        run_sweep(g, out=out)
    assert len(read_rows(out)) == 2  # one task: one seed's two tiers
    monkeypatch.undo()
    resumed = run_sweep(g, out=out, resume=True)
    assert resumed.ran == 4 and resumed.resumed == 2 and len(read_rows(out)) == 6


def _simulate_options():
    """`simulate`'s options, each named by its first long flag as a grid key spells it."""
    from engramsim.commands.simulate import command

    return {next(o for o in p.opts if o.startswith("--"))[2:].replace("-", "_") for p in command.params}


def test_every_numeric_grid_key_has_the_bound_of_its_flag():
    from engramsim.sweep.grid import MAX, OPTIONS

    assert [k for k, (kind, _) in OPTIONS.items() if kind in (int, float) and k not in MAX] == []


def test_every_simulate_option_is_a_grid_key_or_excluded_with_a_reason():
    from engramsim.sweep.grid import NOT_KEYS, OPTIONS

    options = _simulate_options()
    missing = sorted(options - set(OPTIONS) - set(NOT_KEYS))
    assert not missing, f"simulate options neither grid keys nor in grid.NOT_KEYS: {missing}"
    assert not set(OPTIONS) & set(NOT_KEYS) and all(NOT_KEYS.values())
    assert not set(NOT_KEYS) - options, "grid.NOT_KEYS names an option simulate no longer has"


def test_keys_added_later_leave_old_configs_keys_as_they_were():
    import hashlib

    from engramsim.sweep.grid import FIRST_OPTIONS, OPTIONS

    config = grid(tier="ssd").configs[0]
    first = {k: v for k, v in config.items() if k in FIRST_OPTIONS or k not in OPTIONS}
    old = hashlib.sha256(json.dumps(first, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert config_key(config) == old
    assert config_key({**config, "numa": "interleave"}) != old


@pytest.mark.parametrize(
    "keys, flags",
    [
        ({"spec_tokens": 2, "accept_rate": 0.6}, ["--spec-tokens", "2", "--accept-rate", "0.6"]),
        (
            {"gpu_memory_utilization": 0.5, "max_num_batched_tokens": 4096},
            ["--gpu-memory-utilization", "0.5", "--max-num-batched-tokens", "4096"],
        ),
        (
            {"hw": "h200", "tp": 2, "rank_rows": "all", "gather_socket": "remote", "numa": "interleave"},
            ["--hw", "h200", "--tp", "2", "--rank-rows", "all", "--gather-socket", "remote", "--numa", "interleave"],
        ),
        (
            {"hw": "h200", "tier": "rdma", "nic": "connectx7-200g", "rdma_path": "host"},
            ["--hw", "h200", "--tier", "rdma", "--nic", "connectx7-200g", "--rdma-path", "host"],
        ),
        (
            {"tier": "ssd", "readers": 4, "read_at": "prestage", "io": "odirect"},
            ["--tier", "ssd", "--readers", "4", "--read-at", "prestage", "--io", "odirect"],
        ),
        (
            {"concurrency": 4, "row_dtype": "int4", "tier": "dram-uva", "hbm_cache_gib": 1.0, "cache_start": "cold"},
            [
                "--concurrency",
                "4",
                "--row-dtype",
                "int4",
                "--tier",
                "dram-uva",
                "--hbm-cache-gib",
                "1",
                "--cache-start",
                "cold",
            ],
        ),
    ],
)
def test_new_keys_give_what_simulate_gives_with_those_flags(keys, flags, tmp_path):
    """Each key reaches the simulator as simulate's own flag does: the same figures."""
    workload = tmp_path / "small.toml"
    workload.write_text(
        'kind = "offline"\nnum_seqs = 16\ninput_len_min = 1024\ninput_len_max = 1024\n'
        "output_len_min = 256\noutput_len_max = 256\n"
    )
    keys = {"model": FAST["model"], "workload": str(workload), "max_seqs": 8, "tier": "dram-copy", **keys}
    row = run_sweep(parse_grid(keys, "t")).rows[0]
    flags = flags + ([] if "--tier" in flags else ["--tier", "dram-copy"])
    got = cli("simulate", "--json", "--model", FAST["model"], "--workload", workload, "--max-seqs", "8", *flags)
    run = json.loads(got.stdout)["runs"][0]
    assert got.returncode == 0 and row["fits"] and run["fits"]
    assert (row["output_throughput"], row["kv_tokens_per_rank"], row["p99_tpot_ms"]) == (
        run["output_throughput"],
        run["kv_tokens_per_rank"],
        run["p99_tpot_ms"],
    )


def test_new_keys_change_the_figures():
    """...and do act: speculation and a smaller memory share move the figures."""
    plain, spec, small = (
        run_sweep(grid(tier="dram-copy", **k)).rows[0]
        for k in ({}, {"spec_tokens": 2, "accept_rate": 0.6}, {"gpu_memory_utilization": 0.5})
    )
    assert spec["output_throughput"] != plain["output_throughput"]
    assert small["kv_tokens_per_rank"] < plain["kv_tokens_per_rank"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"numa": "everywhere"}, "unknown numa 'everywhere'"),
        ({"accept_rate": 1.5}, "'accept_rate' must be in [0, 1.0]"),
        ({"kv_cache_dtype": "fp4"}, "unknown kv_cache_dtype 'fp4'"),
    ],
)
def test_bad_new_keys_are_one_clear_error(data, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_grid({**FAST, **data}, "g.toml")


def test_a_placement_the_server_cannot_build_is_a_row_not_a_failed_group():
    rows = run_sweep(grid(tier="hbm", hbm_lookup=["local", "collective"])).rows
    assert rows[0]["bound_by"] != "not simulated" and "needs --tp" not in rows[0]["problems"]
    assert rows[1]["bound_by"] == "not simulated" and "needs --tp >= 2" in rows[1]["problems"]


def test_max_steps_turns_too_large_configs_into_rows_that_name_the_flag():
    rows = run_sweep(grid(tier=["dram-uva", "ssd"]), max_steps=10).rows
    assert all(not r["fits"] and "--max-steps" in r["problems"] for r in rows)
    got = cli("sweep", "--max-steps", "0", "x.toml")
    assert got.returncode == 2 and "--max-steps" in got.stderr
