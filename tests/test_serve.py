"""Engine flags as the engines spell them: --engram-config, serve flags, whole launch commands."""

import pytest

from engramsim.errors import UserError
from engramsim.serve import ServeSettings, apply_engram_config, parse_serve_command

VLLM = (
    "vllm serve deepseek-ai/DeepSeek-V4.1-Flash --tensor-parallel-size 4 --data-parallel-size 2 "
    "--enable-expert-parallel --gpu-memory-utilization=0.85 --max-num-batched-tokens 16384 --max-num-seqs 256 "
    '--max-model-len 131072 --kv-cache-dtype fp8 --engram-config \'{"cpu_offload": true, "dp_shared_memory": true, '
    '"use_thp": true}\' --speculative-config \'{"method": "mtp", "num_speculative_tokens": 2}\' '
    "--port 8000 --trust-remote-code"
)


def test_vllm_command_maps_every_flag():
    s = parse_serve_command(VLLM)
    assert (s.engine, s.model, s.tiers) == ("vllm", "deepseek-ai/DeepSeek-V4.1-Flash", ("dram-uva",))
    assert (s.tp, s.dp, s.ep, s.kv_dtype, s.max_model_len) == (4, 2, 8, "fp8", 131072)
    assert s.engine_overrides == {
        "memory_utilization": 0.85,
        "max_num_batched_tokens": 16384,
        "max_num_seqs": 256,
        "host_copies": "per-node",
    }
    text = "\n".join(s.lines)
    # one line per flag, none left out
    for flag in (
        "--tensor-parallel-size",
        "--data-parallel-size",
        "--enable-expert-parallel",
        "--gpu-memory-utilization",
        "--max-num-batched-tokens",
        "--max-num-seqs",
        "--max-model-len",
        "--kv-cache-dtype",
        "cpu_offload",
        "dp_shared_memory",
        "use_thp",
        "--speculative-config",
        "--port",
        "--trust-remote-code",
    ):
        assert flag in text, flag
    assert "use_thp: read, not modeled" in text and "--speculative-config {method=mtp" in text
    assert s.spec_tokens == 2 and "2 drafted tokens verified per sequence" in text


def test_sglang_spellings_and_keys():
    s = parse_serve_command(
        "python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-V4.1-Flash --tp 8 "
        "--mem-fraction-static 0.8 --chunked-prefill-size 8192 --max-running-requests 128 "
        '--engram-config \'{"placement": "gpu", "replication": "per_node", "lookup": "peer_read"}\''
    )
    assert (s.engine, s.tp, s.tiers) == ("sglang", 8, ("hbm",))
    assert s.engine_overrides == {
        "memory_utilization": 0.8,
        "max_num_batched_tokens": 8192,
        "max_num_seqs": 128,
        "host_copies": "per-node",
    }
    assert any(line.startswith("--tp 8 -> TP 8") for line in s.lines)
    cpu = ServeSettings()
    apply_engram_config(cpu, "sglang", '{"placement": "cpu"}')
    assert cpu.tiers == ("dram-uva", "dram-copy")


@pytest.mark.parametrize(
    "engine, text, tier", [("vllm", '{"cpu_offload": true}', "dram-uva"), ("vllm", '{"cpu_offload": false}', "hbm")]
)
def test_cpu_offload_picks_the_tier(engine, text, tier):
    s = ServeSettings()
    apply_engram_config(s, engine, text)
    assert s.tiers == (tier,)


@pytest.mark.parametrize(
    "engine, text, message",
    [
        ("vllm", "{cpu_offload: true}", "not JSON"),
        ("vllm", '{"cpu_offload": true, "placement": "cpu"}', r"unknown vllm key\(s\) placement"),
        ("sglang", '{"cpu_offload": true}', r"unknown sglang key\(s\) cpu_offload"),
        ("vllm", '["cpu_offload"]', "must be a JSON object"),
        ("vllm", '{"cpu_offload": "yes"}', "must be true or false"),
        ("sglang", '{"placement": "disk"}', "must be one of gpu, cpu"),
        ("nano-vllm", '{"cpu_offload": true}', "needs --engine vllm or sglang"),
    ],
)
def test_bad_engram_config_is_one_line(engine, text, message):
    with pytest.raises(UserError, match=message):
        apply_engram_config(ServeSettings(), engine, text)


@pytest.mark.parametrize(
    "cmd, message",
    [
        ("vllm serve m --tensor-parallel-size 4 --foo 3 --bar --baz=2", "cannot map --foo 3, --bar, --baz=2"),
        ("vllm serve m --max-num-seqs 0", r"--max-num-seqs must be a whole number in \[1, 1000000\]"),
        ("vllm serve m --gpu-memory-utilization 1.5", r"must be in \(0, 1\]"),
        ("vllm serve m --kv-cache-dtype int3", "--kv-cache-dtype must be one of"),
        ("vllm serve m --max-model-len", "--max-model-len needs a value"),
        ("torchrun train.py", "expected `vllm serve MODEL"),
        ("vllm serve m --speculative-config 'not json'", "--speculative-config is not JSON"),
        ("vllm serve 'unclosed", "cannot split"),
    ],
)
def test_bad_commands_are_one_line(cmd, message):
    with pytest.raises(UserError, match=message):
        parse_serve_command(cmd)


def test_vllm_engram_dp_sharding_reaches_the_engine():
    s = ServeSettings()
    apply_engram_config(s, "vllm", '{"enable_engram_dp_sharding": true}')
    assert s.engine_overrides == {"engram_dp_sharding": True}
    assert "one table over the node's ranks" in "\n".join(s.lines)
    with pytest.raises(UserError, match="enable_engram_dp_sharding"):
        apply_engram_config(ServeSettings(), "vllm", '{"enable_engram_dp_sharding": "yes"}')
