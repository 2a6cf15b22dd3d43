"""Server topology: sockets and their DRAM, the socket link, PCIe switches, NICs, the rdma tier,
NUMA table layouts, sharded-table lookups in HBM, per-layer stalls and what bounds each fetch."""

import math
from dataclasses import replace

import pytest
from clikit import run_cli
from simkit import scenario, tiny_workload, with_link

from engramsim import costs
from engramsim.errors import UserError
from engramsim.hardware import hardware_from_dict, load_hardware
from engramsim.model import load_model
from engramsim.presets import load_toml, resolve
from engramsim.published import CHECKS_DIR, run_check
from engramsim.sim.run import simulate
from engramsim.sim.tiers import Placement
from engramsim.topology import Topology, check_path

GiB = 2.0**30


def h200(drop=(), **tables):
    """The h200 preset with some keys of its tables replaced and some tables dropped."""
    data = load_toml(resolve("hardware", "h200"))
    for table, keys in tables.items():
        data[table] = {**data[table], **keys}
    return hardware_from_dict({k: v for k, v in data.items() if k not in drop}, "test")


# --- bad input: one line each ----------------------------------------------------------------


def test_gpu_affinity_to_a_missing_socket_is_one_line():
    with pytest.raises(UserError, match=r"GPU 7 has affinity to socket 2, but the host has 2 socket\(s\)"):
        h200(topology={"gpu_socket": [0, 0, 0, 0, 1, 1, 1, 2]})


def test_nic_bandwidth_must_be_positive():
    for bad in (0, -400):
        with pytest.raises(UserError, match=r"\[rdma\]: 'nic_Gbps' must be a number in \(0, 3200\]"):
            h200(rdma={"nic_Gbps": bad})


def test_a_gpu_without_a_path_to_the_table_is_refused():
    hw = h200(topology={"socket_dram_GiB": [2048, 0]})
    with pytest.raises(
        UserError, match="GPU 4 has no path to the table: with the per-numa layout its rows sit on socket 1"
    ):
        check_path(hw, "dram-uva", "per-numa")
    check_path(hw, "dram-uva", "node0")  # one copy on socket 0 reaches every GPU
    with pytest.raises(UserError, match="no GPU has a path to a remote table"):
        check_path(load_hardware("h800"), "rdma", "per-numa")


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    text = (
        resolve("hardware", "h200")
        .read_text()
        .replace("nic_switch = [0, 0, 1, 1, 2, 2, 3, 3]", "nic_switch = [0, 0, 1, 1, 2, 2, 3, 3]\nnic_Gbps = 0")
    )
    bad.write_text(text)
    res = run_cli("simulate", "--hw", bad, "--tier", "rdma")
    assert (
        res.returncode == 2 and res.stderr.count("\n") == 1 and "'nic_Gbps' must be a number in (0, 3200]" in res.stderr
    )
    res = run_cli("simulate", "--hw", "h800", "--tier", "rdma")
    assert res.returncode == 2 and "no GPU has a path to a remote table" in res.stderr


def test_sockets_agree_with_the_hosts_numa_nodes():
    with pytest.raises(UserError, match="'sockets' is 1 but \\[host\\] 'numa_nodes' is 2"):
        h200(topology={"sockets": 1, "socket_dram_GiB": [2048], "gpu_socket": [0] * 8})


def test_switch_and_nic_lists_must_match_the_host():
    with pytest.raises(UserError, match="NIC 7 sits behind switch 4, but the host has 4 PCIe switch"):
        h200(rdma={"nic_switch": [0, 0, 1, 1, 2, 2, 3, 4]})
    with pytest.raises(UserError, match="'gpu_socket' gives 4 GPUs, the host has 8"):
        h200(topology={"gpu_socket": [0, 0, 1, 1]})


# --- pure costs ------------------------------------------------------------------------------


def test_read_latency_follows_the_numa_layout():
    hw = load_hardware("h200")
    local = costs.host_read_latency_s(hw.host, hw.topo, "per-numa", 1, 1e11)
    inter = costs.host_read_latency_s(hw.host, hw.topo, "interleave", 1, 1e11)
    node0 = costs.host_read_latency_s(hw.host, hw.topo, "node0", 1, 1e11)
    assert local == pytest.approx(115e-9)
    assert inter == pytest.approx(115e-9 + 0.5 * 75e-9)  # half the rows on the other socket
    assert node0 == pytest.approx(115e-9 + 75e-9)  # all of them


def test_huge_pages_widen_tlb_reach():
    topo = Topology(
        sockets=1,
        socket_dram_GiB=(1,),
        gpu_socket=(0,),
        upi_Bps=1.0,
        upi_latency_s=0.0,
        sysmem_tlb_entries=4096,
        table_page_bytes=4096.0,
        page_walk_s=1e-6,
    )
    table = 64 * GiB
    small = costs.translation_s(topo, table)
    huge = costs.translation_s(replace(topo, table_page_bytes=2.0**21), table)
    assert small == pytest.approx((1 - 4096 * 4096 / table) * 1e-6)
    assert huge == pytest.approx((1 - 4096 * 2.0**21 / table) * 1e-6)
    assert costs.translation_s(replace(topo, table_page_bytes=2.0**30), table) == 0.0  # reach > table
    assert costs.translation_s(replace(topo, sysmem_tlb_entries=0), table) == 0.0  # not modelled


def test_rdma_cap_is_reads_in_flight_or_doorbells():
    rdma = load_hardware("h200").rdma
    cap, name = costs.rdma_cap(rdma, 264, 1.0)
    assert name == "RDMA reads in flight" and cap == pytest.approx(128 * 264 / 2e-6)
    slow_posting = replace(rdma, doorbell_s=10e-6, doorbell_batch=4)
    cap, name = costs.rdma_cap(slow_posting, 264, 1.0)
    assert name == "RDMA doorbells" and cap == pytest.approx(4 / 10e-6 * 264)
    assert costs.rdma_wire_factor(rdma, 264) == pytest.approx(294 / 264)


def test_sharded_lookups_by_hand():
    hw = load_hardware("h200")
    gpu = hw.gpu
    rows, row_bytes, tokens, dim, tp = 8192 * 24, 264, 8192, 24 * 256, 8
    gather = rows / tp * 288 / (gpu.hbm_bw_Bps * gpu.gather_efficiency)
    allreduce = gpu.allreduce_latency_s + 2 * 7 / 8 * tokens * dim * 2 / gpu.nvlink_Bps
    assert costs.collective_lookup_s(gpu, rows, row_bytes, tokens, dim, tp) == pytest.approx(gather + allreduce)
    rate = min(gpu.nvlink_Bps, 4096 * 32 / 1e-6)
    peer = gather + 1e-6 + rows * 7 / 8 * 288 / rate
    assert costs.peer_read_lookup_s(gpu, hw.topo, rows, row_bytes, tp) == pytest.approx(peer)


# --- the simulated server --------------------------------------------------------------------

SMALL = tiny_workload(num_seqs=8, inp=(256, 512), out=(4, 8), max_seqs=8)


def run(tiers_or_placements, hw="h200", gpus=2, tp=1, workload=SMALL, model="dense-4b-engram100b", **kw):
    placements = [p if isinstance(p, Placement) else Placement(p, **kw) for p in tiers_or_placements]
    sc = scenario(workload, hw=hw, model=model, gpus=gpus, tp=tp, prefetch=False)
    return sc, {(r.tier, i): r for i, r in enumerate(simulate(sc, placements).runs)}


def test_rdma_is_slower_than_dram_uva_when_rows_are_remote():
    _, runs = run(["dram-uva", "rdma"])
    uva, rdma = runs[("dram-uva", 0)], runs[("rdma", 1)]
    assert rdma.throughput_tok_s < uva.throughput_tok_s
    assert rdma.stall_s > uva.stall_s > 0
    assert "remote_nic" in rdma.resources and "remote_dram" in rdma.resources


def test_rdma_bytes_cross_the_nics_with_their_headers():
    sc, runs = run([Placement("rdma"), Placement("rdma", rdma_path="host")])
    direct, host = runs[("rdma", 0)], runs[("rdma", 1)]
    row = sc.model.engram.row_bytes
    payload = direct.fetched_rows * row / 1e9
    wire = payload * (row + 30) / row
    assert direct.resources["nic"]["moved"] == pytest.approx(wire)
    assert direct.resources["remote_nic"]["moved"] == pytest.approx(wire)
    # GPUDirect: NIC and GPU share a switch, so rows go peer to peer, never through host DRAM.
    assert "dram" not in direct.resources and "pcie_switch" not in direct.resources
    assert direct.resources["link"]["moved"] == pytest.approx(payload)
    # Through host memory: written to DRAM, read back by the copy; both cross the switch uplink.
    assert host.resources["dram"]["moved"] == pytest.approx(2 * payload)
    assert host.resources["pcie_switch"]["moved"] == pytest.approx(2 * payload)
    assert host.throughput_tok_s <= direct.throughput_tok_s


def test_interleaved_table_is_no_faster_than_per_numa_copies():
    for tier in ("dram-uva", "dram-copy"):
        _, runs = run([Placement(tier), Placement(tier, numa="interleave")], gpus=8, tp=1)
        per_numa, inter = runs[(tier, 0)], runs[(tier, 1)]
        assert inter.throughput_tok_s <= per_numa.throughput_tok_s
        assert "upi" not in per_numa.resources
        # Half of every GPU's rows (whole cache lines) come across the socket link.
        lines = costs.lines_per_row_bytes(160) * 160
        assert inter.resources["upi"]["moved"] == pytest.approx(inter.fetched_rows * lines / 2 / 1e9)


def test_gather_threads_on_the_other_socket_send_the_copy_across():
    _, runs = run([Placement("dram-copy"), Placement("dram-copy", gather_socket="remote")])
    local, remote = runs[("dram-copy", 0)], runs[("dram-copy", 1)]
    assert "upi" not in local.resources
    assert remote.resources["upi"]["moved"] == pytest.approx(remote.fetched_rows * 160 / 1e9)  # the DMA crosses
    assert remote.throughput_tok_s <= local.throughput_tok_s


def test_per_numa_copies_count_against_each_socket():
    hw = h200(topology={"socket_dram_GiB": [150, 150]})
    sc = scenario(SMALL, hw=hw, gpus=2, tp=2)  # one replica, one copy set
    table_GiB = sc.model.engram.table_bytes / GiB
    per_numa, inter = simulate(sc, [Placement("dram-uva"), Placement("dram-uva", numa="interleave")]).runs
    assert not per_numa.fits and per_numa.throughput_tok_s is None
    assert f"socket 0 holds {table_GiB:.1f} GiB of the table (per-numa) > its 150.0 GiB" in per_numa.problems[0]
    assert inter.fits  # half a copy per socket fits
    # Two replicas that keep their own copies (the engine's per-replica host copies) need twice that.
    two = simulate(scenario(SMALL, hw=hw, gpus=2, tp=1), [Placement("dram-uva", numa="interleave")]).runs[0]
    assert not two.fits and f"socket 1 holds {table_GiB:.1f} GiB of the table (interleave)" in " ".join(two.problems)


def test_gpus_behind_one_switch_share_its_uplink():
    shared = h200(topology={"switch_uplink_GBps": 5})
    alone = h200(drop=("rdma",), topology={"gpus_per_switch": 0})
    _, a = run(["dram-copy"], hw=shared, gpus=2)
    _, b = run(["dram-copy"], hw=alone, gpus=2)
    assert a[("dram-copy", 0)].stall_s > b[("dram-copy", 0)].stall_s
    assert a[("dram-copy", 0)].fetch_bounds.get("pcie_switch", 0) > 0


def test_fetch_bounds_and_layer_stalls_are_reported():
    _, runs = run(["dram-uva", "rdma"])
    for r in runs.values():
        assert sum(r.stall_by_layer_s.values()) == pytest.approx(r.stall_s)
        assert sum(r.fetch_bounds.values()) > 0
    assert set(runs[("rdma", 1)].fetch_bounds) <= {"RDMA reads in flight", "remote_nic", "nic", "latency", "link"}


def test_a_layer_1_engram_layer_stalls_where_layer_14_does_not():
    # DeepSeek-V4.1-Flash (Engram at layers 1 and 14) on one TP-8 replica of an H200 host, as
    # SGLang serves it from its shared host table: every rank fetches every head's rows. During
    # 16k-token prefill steps (no lookahead) one layer does not hide the fetch; fourteen do.
    wl = tiny_workload(num_seqs=32, inp=(1024, 1024), out=(4, 4), max_seqs=32)
    wl = replace(wl, engine=replace(wl.engine, max_num_batched_tokens=16384, prefill_lookahead=False))
    sc = scenario(wl, hw="h200", model="deepseek-v4.1-flash", gpus=8, tp=8)
    shared, own_heads = simulate(
        sc, [Placement("dram-uva", numa="node0", rank_rows="all"), Placement("dram-uva", numa="node0")]
    ).runs
    assert shared.stall_by_layer_s["1"] > 0 and shared.stall_by_layer_s["14"] == 0
    assert shared.fetched_rows == pytest.approx(8 * own_heads.fetched_rows)  # TP 8: 8x the rows
    assert own_heads.stall_by_layer_s["1"] == 0  # a rank's own heads only: hidden by layer 0


def test_a_slow_zero_copy_path_stalls_layer_1_first():
    wl = tiny_workload(num_seqs=32, inp=(1024, 1024), out=(4, 4), max_seqs=32)
    wl = replace(wl, engine=replace(wl.engine, max_num_batched_tokens=16384, prefill_lookahead=False))
    for link_Bps, stalls in ((2e9, True), (55.3e9, False)):
        hw = with_link(load_hardware("h200"), h2d_Bps=link_Bps)
        uva = simulate(scenario(wl, hw=hw, model="deepseek-v4.1-flash", gpus=8, tp=4), [Placement("dram-uva")]).runs[0]
        assert (uva.stall_by_layer_s["1"] > 0) == stalls
        assert uva.stall_by_layer_s["14"] == 0


def test_sharded_hbm_lookups_cost_time_at_tp8():
    wl = tiny_workload(num_seqs=8, inp=(512, 512), out=(4, 4), max_seqs=8)
    sc = scenario(wl, hw="h200", model="deepseek-v4.1-flash", gpus=8, tp=8)
    runs = simulate(
        sc, [Placement("hbm"), Placement("hbm", hbm_lookup="collective"), Placement("hbm", hbm_lookup="peer_read")]
    ).runs
    local, coll, peer = (r.throughput_tok_s for r in runs)
    assert coll < local and peer < local
    with pytest.raises(UserError, match="needs --tp >= 2"):
        simulate(scenario(SMALL, hw="h200"), [Placement("hbm", hbm_lookup="peer_read")])
    with pytest.raises(UserError, match="only applies to the hbm tier"):
        Placement("dram-uva", hbm_lookup="collective")
    with pytest.raises(UserError, match="applies to off-GPU tiers"):
        Placement("hbm", rank_rows="all")


def test_json_carries_what_bounded_each_fetch():
    import json

    res = run_cli(
        "simulate",
        "--hw",
        "h200",
        "--gpus",
        "2",
        "--tier",
        "rdma",
        "--tier",
        "dram-uva",
        "--workload",
        "fixed",
        "--no-prefetch",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    runs = json.loads(res.stdout)["runs"]
    for r in runs:
        assert r["fetch_bounds"] and all(isinstance(v, int) and v > 0 for v in r["fetch_bounds"].values())
        assert set(r["stall_by_layer_s"]) == {
            str(layer) for layer in load_model("dense-4b-engram100b").engram.layer_ids
        }


# --- published measurements ------------------------------------------------------------------


def test_a_published_check_reports_its_own_arithmetic():
    r = run_check(CHECKS_DIR / "mooncake-4065-store-1k.toml")
    assert r.measured_change_pct == -2.8
    assert r.predicted_change_pct == pytest.approx(100 * (r.variant_tok_s - r.reference_tok_s) / r.reference_tok_s)
    assert r.ratio == pytest.approx(r.predicted_change_pct / -2.8)
    assert r.passes == (r.direction_right and 0.5 <= r.ratio <= 2)
    assert math.isfinite(r.reference_tok_s) and r.reference_tok_s > 0
    # The PR's native column: the simulated baseline is compared with it, not fitted to it.
    assert r.measured_reference_tok_s == 74.65
    assert r.baseline_ratio == pytest.approx(r.reference_tok_s / 74.65)
    assert r.to_dict()["baseline_ratio"] == r.baseline_ratio
    # Absolute cost per output token: from the PR's own two figures, and from the two simulated runs.
    assert r.measured_added_us_per_token == pytest.approx(1e6 * (1 / (74.65 * 0.972) - 1 / 74.65))
    assert r.predicted_added_us_per_token == pytest.approx(1e6 * (1 / r.variant_tok_s - 1 / r.reference_tok_s))


@pytest.mark.parametrize("value", ["0", "-3", "true", '"fast"'])
def test_a_bad_measured_baseline_is_one_line(tmp_path, value):
    text = (CHECKS_DIR / "mooncake-4065-store-1k.toml").read_text()
    text = text.replace("measured_reference_tok_s = 74.65", f"measured_reference_tok_s = {value}")
    text = text.replace("workloads/", str(CHECKS_DIR / "workloads") + "/")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(UserError, match="'measured_reference_tok_s' must be a number"):
        run_check(bad)


def test_engine_overrides_reach_the_check_and_bad_ones_are_one_line(tmp_path):
    text = (CHECKS_DIR / "b300-blog-hbm-vs-uva-c8.toml").read_text()
    text = text.replace("workloads/", str(CHECKS_DIR / "workloads") + "/")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("memory_utilization = 0.78", "memory_utilization = 7.8"))
    with pytest.raises(UserError, match="memory_utilization"):
        run_check(bad)
    # Without the run's DP sharding the whole table would sit on every rank and not fit.
    unsharded = tmp_path / "unsharded.toml"
    unsharded.write_text(text.replace("engram_dp_sharding = true", "engram_dp_sharding = false"))
    with pytest.raises(UserError, match="hbm does not fit"):
        run_check(unsharded)


def test_topology_and_rdma_survive_the_toml_round_trip():
    from engramsim.hardware import hardware_to_dict

    hw = load_hardware("h200")
    unplaced = replace(hw, rdma=replace(hw.rdma, nic_switch=()), topology=replace(hw.topology, gpus_per_switch=0))
    for h in (hw, unplaced):
        back = hardware_from_dict(hardware_to_dict(h), "round trip")
        assert back.topology == h.topology and back.rdma == h.rdma


def test_nic_parts_swap_and_a_200g_nic_is_slower_when_nics_bound():
    from engramsim.hardware import with_nic_part

    hw = load_hardware("h200")
    slow = with_nic_part(hw, "connectx7-200g")
    assert slow.rdma.nic_Bps == pytest.approx(hw.rdma.nic_Bps / 2)
    assert (slow.rdma.remote_hosts, slow.rdma.nic_switch) == (hw.rdma.remote_hosts, hw.rdma.nic_switch)
    assert with_nic_part(hw, "bluefield3-400g").rdma.read_latency_s > hw.rdma.read_latency_s
    wl = tiny_workload(num_seqs=32, inp=(1024, 1024), out=(4, 4), max_seqs=32)
    wl = replace(wl, engine=replace(wl.engine, max_num_batched_tokens=16384, prefill_lookahead=False))
    fast, half = (
        simulate(
            scenario(wl, hw=h, model="deepseek-v4.1-flash", gpus=8, tp=8), [Placement("rdma", rank_rows="all")]
        ).runs[0]
        for h in (hw, slow)
    )
    assert half.fetch_bounds == {"remote_nic": half.fetch_bounds["remote_nic"]}
    assert half.stall_s > fast.stall_s and half.throughput_tok_s < fast.throughput_tok_s
    with pytest.raises(UserError, match="--nic: h800 has no \\[rdma\\] table"):
        with_nic_part(load_hardware("h800"), "connectx7-200g")


def test_remote_hosts_are_shared_by_every_host_and_counted_once():
    from engramsim.sim.tiers import HostResources, pool_list, pool_resources

    hw = load_hardware("h200")
    pool = pool_resources(hw)
    a, b = HostResources(hw, 0, pool), HostResources(hw, 1, pool)
    assert a.remote is b.remote and len(a.remote) == hw.rdma.remote_hosts
    assert len(pool_list(pool)) == 2 * hw.rdma.remote_hosts
    assert {r.name for r in a.resources()}.isdisjoint(r.name for r in b.resources())  # each host its own
    # Two hosts' GPUs through one remote host's NIC: it carries both hosts' rows.
    one_store = h200(rdma={"remote_hosts": 1})
    _, runs = run(
        [Placement("rdma")],
        hw=one_store,
        gpus=16,
        tp=1,
        workload=tiny_workload(num_seqs=16, inp=(256, 512), out=(4, 8), max_seqs=16),
    )
    r = runs[("rdma", 0)]
    assert r.resources["remote_nic"]["moved"] == pytest.approx(r.resources["nic"]["moved"])


@pytest.mark.parametrize(
    "variant, message",
    [
        ('tier = "dram-uva"\nbogus = 1', "unknown key 'bogus'"),
        ('tier = "dram-uva"\nprefetch = "yes"', "'prefetch' has the wrong type"),
        ('tier = "nope"', "unknown tier 'nope'"),
    ],
)
def test_a_bad_check_file_is_one_line(tmp_path, variant, message):
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "x"\nsource = "s"\nmodel = "dense-4b-engram100b"\nhw = "h800"\nworkload = "fixed"\n'
        f'measured_change_pct = 1\n[reference]\ntier = "dram-uva"\n[variant]\n{variant}\n'
    )
    res = run_cli("checks", path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and message in res.stderr
