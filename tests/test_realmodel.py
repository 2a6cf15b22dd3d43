"""The real Engram model: exact addressing and fusion, identical activations on every row path,
KV-cache decode equal to a full forward, and the measured-case shape."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from engramsim.errors import UserError

torch = pytest.importorskip("torch")

from engramsim import engram  # noqa: E402
from engramsim.realmodel import PLACEMENTS, measure_placements, placement, tiny_config, to_model_spec  # noqa: E402
from engramsim.realmodel.config import RealModelConfig, engram_spec  # noqa: E402
from engramsim.realmodel.engram_module import Addressing  # noqa: E402
from engramsim.realmodel.harness import GenerationRequests, build_models, make_requests, run_workload  # noqa: E402
from engramsim.realmodel.model import KVCache  # noqa: E402
from engramsim.realmodel.placements import TableStore, check_room, make_source  # noqa: E402

ROW_PATHS = ("device", "host-sync", "host-prefetch", "mmap-sync-warm", "mmap-prefetch-warm", "mmap-sync-cold")


def two_layer_config(tmp_path):
    """Two Engram layers, so the layer offsets inside the one table are exercised too."""
    cfg = tiny_config(str(tmp_path))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, engram_layer_ids=(0, 2)))


def setup(cfg):
    addressing = Addressing(engram_spec(cfg.model))
    store = TableStore(addressing.total_rows, cfg.model.row_dim, cfg.model.seed, cfg.table_dir)
    reqs = make_requests(cfg.workload, cfg.model.vocab_size)
    model = build_models(cfg, reqs.max_len)[True]
    return addressing, store, reqs, model


def open_table(store, name):
    p = placement(name)
    if p.tier == "mmap":
        return store.open_mmap(p.cache_state)[0]
    return store.host_copy() if p.tier == "host" else store.table


def capture_engram(model):
    """Record every Engram fusion call: (hidden, memory rows, conv state) in, output out."""
    calls = []
    for layer, fusion in model.engram.items():
        fusion.register_forward_hook(
            lambda m, args, out, layer=int(layer): calls.append((layer, [a.clone() for a in args], out[0].clone()))
        )
    return calls


def rms_norm(x, norm):
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight


def fusion_by_hand(fusion, hidden, memory, kernel_size, dilation):
    """engram_demo_v1.py Engram.forward with hc_mult = 1, written out on whole sequences."""
    key = rms_norm(memory @ fusion.key_proj.weight.T + fusion.key_proj.bias, fusion.key_norm)
    query = rms_norm(hidden, fusion.query_norm)
    gate = (key * query).sum(-1) / hidden.shape[-1] ** 0.5
    gate = torch.sigmoid(torch.sign(gate) * gate.abs().clamp_min(1e-6).sqrt())[..., None]
    value = gate * (memory @ fusion.value_proj.weight.T + fusion.value_proj.bias)
    normed = rms_norm(value, fusion.conv_norm)
    conv = torch.zeros_like(value)
    w = fusion.conv.weight[:, 0, :]  # [d, kernel]
    for t in range(value.shape[1]):
        for j in range(kernel_size):
            src = t - (kernel_size - 1 - j) * dilation  # causal: zeros before the sequence start
            if src >= 0:
                conv[:, t] += w[:, j] * normed[:, src]
    return value + torch.nn.functional.silu(conv)


def test_engram_output_matches_direct_computation(tmp_path):
    cfg = two_layer_config(tmp_path)
    addressing, store, _, model = setup(cfg)
    spec = engram_spec(cfg.model)
    prompt = np.random.default_rng(7).integers(0, cfg.model.vocab_size, size=12)
    calls = capture_engram(model)
    run_workload(model, make_source(placement("device"), store.table), addressing, GenerationRequests([prompt], [1]))
    table = store.table.numpy()
    base = 0
    for layer, (hidden, memory, state), out in calls:
        # Offsets by hand: each head table starts after the primes before it, layers in order.
        primes = [p for heads in engram.table_sizes(spec)[layer] for p in heads]
        offsets = base + np.concatenate([[0], np.cumsum(primes)[:-1]])
        base += sum(primes)
        idx = engram.hash_ngrams(prompt[None], spec, layer)[0] + offsets  # [T, heads]
        rows = torch.from_numpy(table[idx].reshape(1, len(prompt), -1))
        assert torch.equal(memory, rows)
        assert not state.any()  # a prompt starts with an empty conv context
        fusion = model.engram[str(layer)]
        expected = fusion_by_hand(fusion, hidden, rows, cfg.model.kernel_size, cfg.model.max_ngram_size)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert [c[0] for c in calls] == [0, 2]


def test_the_baseline_runs_on_the_engram_models_own_backbone_tensors(tmp_path):
    from engramsim.realmodel.model import EngramLM

    cfg = tiny_config(str(tmp_path))
    reqs = make_requests(cfg.workload, cfg.model.vocab_size)
    models = build_models(cfg, reqs.max_len)
    engram, base = models[True], models[False]
    assert engram.engram_layers == sorted(cfg.model.engram_layer_ids) and base.engram_layers == []
    shared = dict(base.named_parameters())
    assert shared and all(p is shared[name] for name, p in engram.named_parameters() if not name.startswith("engram."))
    assert base.rope_cos is engram.rope_cos
    # The same numbers as a baseline built on its own from the same seed.
    torch.manual_seed(cfg.model.seed)
    alone = EngramLM(cfg.model, reqs.max_len, with_engram=False).eval()
    ours = run_workload(base, None, None, reqs, keep_logits=True)
    theirs = run_workload(alone, None, None, reqs, keep_logits=True)
    assert np.array_equal(ours.tokens, theirs.tokens)
    assert all(torch.equal(a, b) for a, b in zip(ours.logits, theirs.logits))


def test_every_row_path_gives_identical_activations(tmp_path):
    cfg = two_layer_config(tmp_path)
    addressing, store, reqs, model = setup(cfg)
    seen = {}
    for name in ROW_PATHS:
        calls = capture_engram(model)
        source = make_source(placement(name), open_table(store, name))
        result = run_workload(model, source, addressing, reqs, keep_logits=True)
        source.close()
        seen[name] = (calls, result)
        for m in model.engram.values():
            m._forward_hooks.clear()
    store.close()
    ref_calls, ref = seen["device"]
    assert len(ref_calls) == len(ref.records) * 2  # both Engram layers, every step
    for name in ROW_PATHS[1:]:
        calls, result = seen[name]
        assert np.array_equal(result.tokens, ref.tokens), name
        assert all(torch.equal(a, b) for a, b in zip(result.logits, ref.logits)), name
        for (la, ina, outa), (lb, inb, outb) in zip(calls, ref_calls):
            assert la == lb and torch.equal(outa, outb) and torch.equal(ina[1], inb[1]), name
    assert seen["host-prefetch"][1].records[0].stall_s >= 0.0


def test_kv_cache_decode_equals_a_full_forward(tmp_path):
    """Decode through the KV cache and the conv state gives the logits of re-running the
    whole sequence at once: the cached path is the same model."""
    cfg = two_layer_config(tmp_path)
    addressing, store, _, model = setup(cfg)
    source = make_source(placement("host-sync"), store.table)
    prompt = np.random.default_rng(3).integers(0, cfg.model.vocab_size, size=6)
    result = run_workload(model, source, addressing, GenerationRequests([prompt], [5]), keep_logits=True)
    seq = result.tokens[0]
    for step, logits in enumerate(result.logits):
        length = len(prompt) + step  # the decode step's context ends at this position
        prefix = seq[:length]
        source.begin_step({layer: addressing.rows(prefix[None], layer) for layer in model.engram_layers})
        conv = {layer: model.engram[str(layer)].initial_state(1) for layer in model.engram_layers}
        with torch.inference_mode():
            full = model(
                torch.from_numpy(prefix)[None],
                torch.arange(length)[None],
                KVCache(cfg.model, 1, length),
                conv,
                source.rows,
                prefill_row=0,
            )
        torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-5)


def test_measure_placements_reports_every_case(tmp_path):
    cfg = tiny_config(str(tmp_path))
    messages = []
    cases = measure_placements(cfg, PLACEMENTS, progress=messages.append)
    assert [c.placement for c in cases] == list(PLACEMENTS)
    assert len([m for m in messages if m.startswith("round 1: measuring")]) == len(PLACEMENTS)
    reqs = make_requests(cfg.workload, cfg.model.vocab_size)
    decode_steps = max(reqs.output_lens) - 1
    by_name = {c.placement: c for c in cases}
    for c in cases:
        assert c.output_tokens == sum(reqs.output_lens)
        assert c.steps == cfg.workload.n_seqs + decode_steps
        assert c.measured_tok_s == pytest.approx(c.output_tokens / c.wall_s)
        assert {p.phase for p in c.phases} == {"prefill", "decode"}
        assert c.torch_threads == 1
        if not c.prefetch:
            assert c.stall_s == 0.0 and c.prefetch_busy_s == 0.0
    engram_digests = {c.tokens_digest for c in cases if c.tier != "none"}
    assert len(engram_digests) == 1  # every placement generated the very same tokens
    assert by_name["baseline"].table_bytes == 0 and by_name["device"].table_bytes > 0
    assert by_name["mmap-sync-warm"].resident_before == 1.0
    assert "cold" in by_name["mmap-sync-cold"].cache_note
    # Cold faults are timed on the table file at each round's start, given to the mmap cases only.
    cold = by_name["mmap-sync-cold"]
    assert len(cold.page_fault_s_rounds) == 1 and cold.page_fault_s == cold.page_fault_s_rounds[0] > 0
    assert by_name["device"].page_fault_s is None and by_name["device"].page_fault_s_rounds == ()
    # ...and again on a thread of the prefetch thread's cores, where a prefetching map faults.
    assert len(cold.prefetch_page_fault_s_rounds) == 1 and cold.prefetch_page_fault_s_rounds[0] > 0
    # The handoff to the prefetch thread is timed once, for the prefetching placements only.
    assert all((c.prefetch_handoff_s is not None) == (c.prefetch and c.tier != "none") for c in cases)
    assert by_name["host-prefetch"].prefetch_handoff_s >= 0.0
    # The LM head is timed apart from the rest of the step, in every step.
    assert all(0 < r.head_s < r.total_s for r in by_name["baseline"].step_records)
    # New pages are counted from each step's row ids: never more than the rows, none without Engram.
    recs = cold.step_records
    assert all(0 <= r.new_pages <= 2 * r.rows for r in recs) and 0 < sum(r.new_pages for r in recs)
    assert all(r.new_pages == 0 for r in by_name["baseline"].step_records)
    json.dumps([c.to_dict() for c in cases], default=str)
    assert list(tmp_path.iterdir()) == []  # the table file is removed
    for c in cases:  # one round (tiny_config.repeats); steps carry the main thread's CPU time
        (run,) = c.runs
        assert run.tok_s == c.measured_tok_s and len(run.steps) == c.steps
        assert all(0 < r.thread_cpu_s for r in run.steps) and run.noise.wall_s == pytest.approx(c.wall_s, rel=0.01)
        assert c.pinned.startswith(("compute on cores", "not pinned"))


def test_rounds_go_on_until_the_stopping_rule_says_stop(tmp_path):
    cfg = tiny_config(str(tmp_path))
    seen = []

    def until(runs, spent_s):
        seen.append((sorted(runs), [len(r) for r in runs.values()], spent_s > 0))
        return "enough" if len(seen) == 3 else None

    cases = measure_placements(cfg, ("baseline", "device"), until=until)
    assert [len(c.runs) for c in cases] == [3, 3] and len(cases[0].tok_s_runs) == 3
    assert seen == [(["baseline", "device"], [k, k], True) for k in (1, 2, 3)]


def test_to_model_spec_describes_the_same_model():
    cfg = tiny_config()
    spec = to_model_spec(cfg)
    m = cfg.model
    b = spec.backbone
    assert (b.n_layers, b.hidden_size, b.n_heads, b.head_dim, b.n_kv_heads, b.intermediate_size, b.vocab_size) == (
        m.n_layers,
        m.hidden_size,
        m.n_heads,
        m.head_dim,
        m.n_kv_heads,
        m.intermediate_size,
        m.vocab_size,
    )
    assert spec.engram.row_bytes == m.row_dim * 4 and spec.engram.layer_ids == m.engram_layer_ids
    addressing = Addressing(spec.engram)
    assert addressing.total_rows == sum(engram.layer_rows(spec.engram, layer) for layer in m.engram_layer_ids)


def test_table_size_follows_table_MiB():
    spec = engram_spec(RealModelConfig(table_MiB=64))
    assert spec.table_bytes == pytest.approx(64 * 2**20, rel=0.01)


def test_bad_requests_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="placement"):
        placement("ssd")
    with pytest.raises(UserError, match="RAM"):
        check_room(2**60, 1, False, tmp_path, 0.0)
    with pytest.raises(UserError, match="engram_layer_ids"):
        RealModelConfig(n_layers=2, engram_layer_ids=(2,))


def test_importing_the_package_needs_no_torch():
    code = "import sys, engramsim.realmodel; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- device selection and the GPU placements' pure parts (run everywhere) ---------------------


def test_device_selection():
    from engramsim.realmodel import CPU_PLACEMENTS, GPU_PLACEMENTS, placements_for, resolve_device

    assert resolve_device("auto", True) == "cuda" and resolve_device("auto", False) == "cpu"
    assert resolve_device("cpu", True) == "cpu"  # forcing the CPU on a GPU machine
    with pytest.raises(UserError, match="no CUDA"):
        resolve_device("cuda", False)
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu", True)
    assert placements_for("cpu") == CPU_PLACEMENTS == PLACEMENTS
    assert placements_for("cuda")[0] == "baseline" and set(GPU_PLACEMENTS[1:]).isdisjoint(CPU_PLACEMENTS)


def test_gpu_placement_names_parse():
    got = {
        n: (p.tier, p.prefetch, p.on_gpu)
        for n in ("gpu-hbm", "pinned-copy-prefetch", "pinned-copy-sync", "pinned-uva-prefetch", "pinned-uva-sync")
        for p in [placement(n)]
    }
    assert got == {
        "gpu-hbm": ("hbm", False, True),
        "pinned-copy-prefetch": ("pinned-copy", True, True),
        "pinned-copy-sync": ("pinned-copy", False, True),
        "pinned-uva-prefetch": ("pinned-uva", True, True),
        "pinned-uva-sync": ("pinned-uva", False, True),
    }
    assert not placement("host-prefetch").on_gpu and not placement("baseline").has_engram


def test_placements_of_the_other_device_are_refused():
    from engramsim.realmodel.config import check_placements

    check_placements("cuda", ["baseline", "pinned-uva-sync"])
    check_placements("cpu", ["baseline", "mmap-sync-cold"])
    with pytest.raises(UserError, match="needs device cuda"):
        check_placements("cpu", ["gpu-hbm"])
    with pytest.raises(UserError, match="needs device cpu"):
        check_placements("cuda", ["host-sync"])


def test_run_config_rejects_an_unknown_device():
    from engramsim.realmodel import RunConfig

    with pytest.raises(UserError, match="unknown device"):
        RunConfig(device="gpu")


def test_staging_holds_the_largest_step():
    from engramsim.realmodel.config import staging_rows

    assert staging_rows([5, 40, 9], 3, 16) == 40 * 16  # the longest prefill
    assert staging_rows([5, 4], 64, 16) == 64 * 16  # a decode step of the whole batch


def test_gpu_quick_config_is_sized_for_a_gpu():
    from engramsim.realmodel import gpu_quick_config

    cfg = gpu_quick_config()
    spec = to_model_spec(cfg)
    assert cfg.device == "cuda" and spec.backbone.dtype == "bf16" and spec.engram.row_bytes == cfg.model.row_dim * 2
    assert 3 * 2**30 < spec.engram.table_bytes < 5 * 2**30  # a few GiB: far beyond any cache
    with pytest.raises(UserError, match="dtype"):
        RealModelConfig(dtype="fp8")


def test_cpu_runs_stay_on_the_cpu_and_in_fp32(tmp_path):
    """Forcing the CPU keeps the CPU placements, whatever the machine has; GPU ones are refused."""
    cfg = dataclasses.replace(tiny_config(str(tmp_path)), device="cpu")
    cases = measure_placements(cfg, ("baseline", "device"))
    assert [c.device for c in cases] == ["cpu", "cpu"]
    with pytest.raises(UserError, match="needs device cuda"):
        measure_placements(cfg, ("gpu-hbm",))


def test_bf16_model_runs_on_the_cpu_too(tmp_path):
    """The GPU quick config's dtype runs through the same code: rows, caches and rope in bf16."""
    cfg = tiny_config(str(tmp_path))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="bf16"))
    cases = measure_placements(cfg, ("device", "host-prefetch", "host-sync"))
    assert len({c.tokens_digest for c in cases}) == 1
    assert cases[0].table_bytes == pytest.approx(2**20, rel=0.05)  # bf16 halves the bytes per row
    with pytest.raises(UserError, match="fp32"):
        measure_placements(cfg, ("mmap-sync-warm",))


def test_each_round_starts_with_its_micro_timing(monkeypatch):
    from engramsim.realmodel import harness

    monkeypatch.setattr(harness, "_timed", lambda run, reqs: run)
    plist = [placement("baseline"), placement("device")]
    order = []
    runs = harness._rounds(
        plist,
        lambda p, r: order.append((p.name, r)) or p.name,
        "reqs",
        "warm",
        lambda timed, spent: "done" if len(timed["device"]) == 2 else None,
        lambda msg: None,
        each_round=lambda: order.append("timing"),
    )
    assert runs == {"baseline": ["baseline"] * 2, "device": ["device"] * 2}
    assert order == [
        "timing",
        ("baseline", "warm"),
        ("baseline", "reqs"),
        ("device", "warm"),
        ("device", "reqs"),
        "timing",
        ("baseline", "reqs"),
        ("device", "reqs"),
    ]
