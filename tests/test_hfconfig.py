"""--model path/to/config.json: Hugging Face configs mapped onto the preset schema.

Fixtures under tests/fixtures/hf/ are written from public configs (their README says which)."""

import json
import shutil
from pathlib import Path

import pytest

from engramsim.errors import UserError
from engramsim.hfconfig import map_config
from engramsim.model import load_model
from tests.clikit import run_cli

HF = Path(__file__).parent / "fixtures" / "hf"


def _config(name):
    return json.loads((HF / f"{name}.json").read_text())


def test_deepseek_v41_flash_config_is_its_preset():
    # The preset cites the same config; every field the simulator uses must agree.
    from_config, preset = load_model(HF / "deepseek-v4.1-flash.json"), load_model("deepseek-v4.1-flash")
    assert from_config.backbone == preset.backbone
    assert from_config.kv == preset.kv
    assert from_config.engram == preset.engram
    assert from_config.engram.tokenizer == "deepseek-v4" and from_config.engram.compressed_vocab_size == 99_092
    assert from_config.backbone.attn_params_per_layer == 126_615_552
    assert from_config.backbone.extra_params_per_layer == 3_833_856


def test_every_unmapped_field_is_named_once():
    notes = load_model(HF / "deepseek-v4.1-flash.json").notes
    for field in ("text_config.index_topk", "text_config.dspark_markov_rank", "vision_config", "image_token_id"):
        assert sum(f"'{field}'" in n for n in notes) == 1, field
    # numerics-only fields are set aside without a note
    assert not any("rms_norm_eps" in n or "rope_scaling" in n for n in notes)
    data = _config("deepseek-v4.1-flash")
    data["text_config"]["frobnicate_factor"] = 3
    assert "config field 'text_config.frobnicate_factor' is not mapped (ignored)" in map_config(data, "x", "x").notes


def test_deepseek_v4_flash_config():
    m = load_model(HF / "deepseek-v4-flash.json")
    bb = m.backbone
    assert m.engram is None and (bb.n_layers, bb.n_mtp_layers, bb.hidden_size) == (43, 1, 4096)
    assert (bb.n_routed_experts, bb.n_active_experts, bb.moe_intermediate_size) == (256, 6, 2048)
    assert (bb.dtype, bb.expert_dtype) == ("fp8-b128", "fp4")
    # V4's indexer sits on its ratio-4 (CSA) layers, which the config does not list: derived, said.
    assert m.kv.index_source_layer_ids == tuple(i for i, r in enumerate(m.kv.compress_ratios) if r == 4)
    assert any(n.startswith("index_source_layer_ids: not in config.json") for n in m.notes)
    assert any("'num_hash_layers'" in n for n in m.notes)


def test_engram_demo_config():
    m = load_model(HF / "engram-demo.json")
    e = m.engram
    assert (e.layer_ids, e.max_ngram_size, e.n_head_per_ngram, e.engram_vocab_size) == ((1, 15), 3, 8, (646400, 646400))
    assert e.row_bytes == 512 // 8 * 2 and e.kernel_size == 4 and e.compressed_pad_id == 2
    assert (m.backbone.n_layers, m.backbone.hidden_size, m.backbone.hc_mult) == (30, 1024, 4)
    assert any("ASSUMPTION" in n for n in m.notes)


def test_a_model_directory_holding_config_json(tmp_path):
    d = tmp_path / "DeepSeek-V4.1-Flash"
    d.mkdir()
    shutil.copy(HF / "deepseek-v4.1-flash.json", d / "config.json")
    m = load_model(d)
    assert m.name == "DeepSeek-V4.1-Flash" and m.engram.layer_ids == (1, 14)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}',
            r"unknown architecture \(LlamaForCausalLM\)",
        ),
        ('{"model_type": "deepseek_v41"}', "keeps its text model under 'text_config'"),
        ('{"architectures": ["DeepseekV4ForCausalLM"], "hidden_size": 4096}', "missing field 'num_attention_heads'"),
        ("{not json", "not JSON"),
        ("[1, 2]", "a config.json is a JSON object"),
    ],
)
def test_bad_configs_are_one_line(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_model(path)
    r = run_cli("simulate", "--model", path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0


def test_simulate_takes_a_config_and_names_what_it_did_not_map():
    r = run_cli(
        "simulate",
        "--model",
        HF / "deepseek-v4.1-flash.json",
        "--hw",
        "h200",
        "--gpus",
        "8",
        "--tp",
        "4",
        "--workload",
        "fixed",
        "--engine",
        "vllm",
        "--tier",
        "dram-uva",
        "--max-seqs",
        "32",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["model"] == "deepseek-v4.1-flash" and data["runs"][0]["fits"]
    assert "note: config field 'text_config.index_topk' is not mapped (ignored)" in r.stderr


def test_engram_config_cpu_offload_gives_the_dram_uva_tier():
    base = (
        "simulate",
        "--model",
        "deepseek-v4.1-flash",
        "--hw",
        "h200",
        "--gpus",
        "8",
        "--tp",
        "4",
        "--workload",
        "fixed",
        "--engine",
        "vllm",
        "--max-seqs",
        "32",
        "--json",
    )
    runs = {
        flag: json.loads(run_cli(*base, "--engram-config", flag).stdout)["runs"]
        for flag in ('{"cpu_offload": true}', '{"cpu_offload": false}')
    }
    assert [r["tier"] for r in runs['{"cpu_offload": true}']] == ["dram-uva"]
    assert [r["tier"] for r in runs['{"cpu_offload": false}']] == ["hbm"]


def test_from_cmd_runs_the_command_and_says_what_it_understood():
    cmd = (
        "vllm serve deepseek-ai/DeepSeek-V4.1-Flash --tensor-parallel-size 4 --data-parallel-size 2 "
        "--gpu-memory-utilization 0.85 --max-num-seqs 32 --engram-config '{\"cpu_offload\": true}' --port 8000"
    )
    r = run_cli("simulate", "--hw", "h200", "--workload", "fixed", "--json", "--from-cmd", cmd)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert (data["model"], data["gpus"], data["tp"]) == ("deepseek-v4.1-flash", 8, 4)
    assert [run["tier"] for run in data["runs"]] == ["dram-uva"]
    for said in (
        "TP 4",
        "DP 2",
        "memory_utilization 0.85",
        "max_num_seqs 32",
        "tier dram-uva",
        "--port 8000: read, not modeled",
    ):
        assert said in r.stderr, said


@pytest.mark.parametrize(
    "args, message",
    [
        (("--engine", "vllm", "--engram-config", "{cpu_offload}"), "--engram-config is not JSON"),
        (("--engine", "vllm", "--engram-config", '{"cpu_offload": true, "mmap": 1}'), r"unknown vllm key\(s\) mmap"),
        (
            ("--from-cmd", "vllm serve deepseek-ai/DeepSeek-V4.1-Flash --tp 4 --frobnicate 3"),
            "cannot map --frobnicate 3",
        ),
        (("--from-cmd", "vllm serve m --tp 4", "--max-num-seqs", "8"), "--from-cmd carries the serve flags"),
        (
            ("--engine", "vllm", "--tier", "ssd", "--engram-config", '{"cpu_offload": true}'),
            "give --tier or an --engram-config",
        ),
    ],
)
def test_bad_engine_flags_are_one_line(args, message):
    r = run_cli("simulate", "--model", "deepseek-v4.1-flash", "--hw", "h200", "--workload", "fixed", *args)
    assert r.returncode == 2 and message.replace("\\", "") in r.stderr.replace("\\", "")
    assert r.stderr.strip().count("\n") == 0
