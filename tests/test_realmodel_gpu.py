"""The real model's GPU placements end to end on a tiny config. Marked `gpu`: skipped without
CUDA (tests/conftest.py); `benchmarks/gpu_check.sh` runs them on a lent GPU machine."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engramsim.realmodel import GPU_PLACEMENTS, measure_placements, placement, tiny_config  # noqa: E402
from engramsim.realmodel.config import engram_spec, staging_rows  # noqa: E402
from engramsim.realmodel.engram_module import Addressing  # noqa: E402
from engramsim.realmodel.harness import build_models, make_requests, run_workload  # noqa: E402

pytestmark = pytest.mark.gpu

ROW_PATHS = GPU_PLACEMENTS[1:]


def gpu_config(tmp_path, **model):
    cfg = dataclasses.replace(tiny_config(str(tmp_path)), device="cuda")
    # Two Engram layers: the layer offsets in the one table and two side-stream fetches per step.
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, engram_layer_ids=(0, 2), **model))


def run_paths(cfg):
    from engramsim.realmodel.gpu import GpuTables, make_gpu_source

    addressing = Addressing(engram_spec(cfg.model))
    reqs = make_requests(cfg.workload, cfg.model.vocab_size)
    model = build_models(cfg, reqs.max_len, "cuda")[True]
    tables = GpuTables(addressing.total_rows, cfg.model.row_dim, cfg.model.seed, cfg.model.dtype)
    capacity = staging_rows([len(p) for p in reqs.prompts], len(reqs.prompts), addressing.spec.heads_per_layer)
    out = {}
    try:
        for name in ROW_PATHS:
            p = placement(name)
            source = make_gpu_source(p, tables.open(p)[0], model.engram_layers, capacity)
            out[name] = run_workload(model, source, addressing, reqs, keep_logits=True), source
            source.close()
    finally:
        tables.close()
    return out


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_every_gpu_row_path_gives_identical_activations(tmp_path, dtype):
    seen = run_paths(gpu_config(tmp_path, dtype=dtype))
    ref, _ = seen["gpu-hbm"]
    for name in ROW_PATHS[1:]:
        result, source = seen[name]
        assert np.array_equal(result.tokens, ref.tokens), name
        assert all(torch.equal(a, b) for a, b in zip(result.logits, ref.logits)), name
        assert source.stall_s >= 0.0 and (placement(name).prefetch or source.stall_s == 0.0), name
    assert all(r.gather_s >= 0 and r.total_s > 0 for r in ref.records)


def test_gpu_model_computes_what_the_cpu_model_does(tmp_path):
    """Same weights and rows on both devices: the first prefill's logits agree to float error."""
    cfg = gpu_config(tmp_path)
    from engramsim.realmodel.placements import TableStore, make_source

    addressing = Addressing(engram_spec(cfg.model))
    reqs = make_requests(cfg.workload, cfg.model.vocab_size)
    first = dataclasses.replace(reqs, prompts=reqs.prompts[:1], output_lens=[1])
    store = TableStore(addressing.total_rows, cfg.model.row_dim, cfg.model.seed)
    cpu_model = build_models(cfg, reqs.max_len, "cpu")[True]
    gpu_model = build_models(cfg, reqs.max_len, "cuda")[True]
    from engramsim.realmodel.gpu import HbmRows

    cpu = run_workload(cpu_model, make_source(placement("device"), store.table), addressing, first, keep_logits=True)
    gpu = run_workload(gpu_model, HbmRows(store.table.cuda()), addressing, first, keep_logits=True)
    torch.testing.assert_close(gpu.logits[0].cpu(), cpu.logits[0], rtol=2e-2, atol=2e-2)  # TF32 convs on GPU


def test_measure_gpu_placements_end_to_end(tmp_path):
    cfg = gpu_config(tmp_path)
    cases = measure_placements(cfg, progress=lambda msg: None)
    assert [c.placement for c in cases] == list(GPU_PLACEMENTS)
    assert {c.device for c in cases} == {"cuda"}
    assert len({c.tokens_digest for c in cases if c.tier != "none"}) == 1
    for c in cases:
        assert c.measured_tok_s == pytest.approx(c.output_tokens / c.wall_s)
        assert c.steps == len(c.step_records) and all(r.total_s > 0 for r in c.step_records)
        # Step times from CUDA events; the host's noise guards read beside them.
        assert len(c.runs) == cfg.repeats and all(r.noise.wall_s > 0 for r in c.runs)
        assert all(r.thread_cpu_s > 0 for r in c.runs[0].steps)
        if not c.prefetch:
            assert c.stall_s == 0.0
    assert cases[0].table_bytes == 0 and all(c.table_bytes > 0 for c in cases[1:])


def test_closing_the_tables_unregisters_host_memory():
    from engramsim.measure.cuda import mapped_view
    from engramsim.realmodel.gpu import GpuTables

    tables = GpuTables(4096, 16, 0, "fp32")
    view = tables.open(placement("pinned-uva-sync"))[0]
    assert view.is_cuda and torch.equal(view.cpu(), tables.host)
    host = tables.host
    tables.close()
    again = mapped_view(torch, host.view(-1).view(torch.uint8))  # fails if still registered
    del again
    torch.cuda.cudart().cudaHostUnregister(host.data_ptr())
