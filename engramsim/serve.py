"""Engine flags as the engines spell them: `--engram-config JSON`, the common serve flags, and a
whole `vllm serve ...` / `python -m sglang.launch_server ...` command line (`--from-cmd`).

Everything here is parsing: the result (`ServeSettings`) says which tiers, engine overrides,
parallel layout and KV dtype the command asks for, with one line per flag saying what it became.
A flag that changes nothing the simulator models is said to be read and not modeled; a flag this
module does not know is an error that names it, so nothing is ignored silently.

Keys of `--engram-config`:
  vLLM    cpu_offload (true: tables in pinned host memory read by a UVA gather -> `dram-uva`;
          false: `hbm`), dp_shared_memory (one host copy per node instead of per replica),
          use_thp (transparent huge pages for the host copy: read, not modeled),
          enable_engram_dp_sharding (one table split over the node's DP x TP ranks).
  SGLang  placement gpu|cpu (`hbm` | the host-DRAM tiers), replication none|per_node (host copies
          per replica | per node), lookup collective|peer_read (how TP>=8 ranks read a table
          sharded in HBM: read, not modeled; each rank's gather is timed as a local one).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from engramsim.errors import UserError
from engramsim.presets import MAX_BATCHED_TOKENS, MAX_CONTEXT, MAX_GPUS, MAX_SEQS, MAX_TP

ENGINES = ("vllm", "sglang")
ENGRAM_KEYS = {
    "vllm": ("cpu_offload", "dp_shared_memory", "use_thp", "enable_engram_dp_sharding"),
    "sglang": ("placement", "replication", "lookup"),
}
KV_DTYPES = {
    "auto": None,
    "fp8": "fp8",
    "fp8_e4m3": "fp8",
    "fp8_e5m2": "fp8",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
}


@dataclass
class ServeSettings:
    engine: str | None = None
    model: str | None = None
    tiers: tuple[str, ...] = ()
    tp: int | None = None
    dp: int | None = None
    ep: int | None = None
    kv_dtype: str | None = None
    max_model_len: int | None = None
    spec_tokens: int | None = None  # --speculative-config num_speculative_tokens
    engine_overrides: dict = field(default_factory=dict)  # EngineSpec field -> value
    lines: list[str] = field(default_factory=list)  # what each flag became, in order


# --- --engram-config ---------------------------------------------------------------------------


def apply_engram_config(settings: ServeSettings, engine: str, text: str) -> None:
    """Read an `--engram-config` JSON object with `engine`'s keys into `settings`."""
    if engine not in ENGINES:
        raise UserError(f"--engram-config needs --engine vllm or sglang (got {engine})")
    cfg = _json_object("--engram-config", text, example=""", e.g. '{"cpu_offload": true}'""")
    unknown = sorted(set(cfg) - set(ENGRAM_KEYS[engine]))
    if unknown:
        raise UserError(
            f"--engram-config: unknown {engine} key(s) {', '.join(unknown)} (known: {', '.join(ENGRAM_KEYS[engine])})"
        )
    (_vllm_engram if engine == "vllm" else _sglang_engram)(settings, cfg)


def _bool(cfg: dict, key: str) -> bool:
    if not isinstance(cfg[key], bool):
        raise UserError(f"--engram-config: {key} must be true or false, got {cfg[key]!r}")
    return cfg[key]


def _choice(cfg: dict, key: str, allowed: tuple[str, ...]) -> str:
    if cfg[key] not in allowed:
        raise UserError(f"--engram-config: {key} must be one of {', '.join(allowed)}, got {cfg[key]!r}")
    return cfg[key]


def _vllm_engram(s: ServeSettings, cfg: dict) -> None:
    if "cpu_offload" in cfg:
        s.tiers = ("dram-uva",) if _bool(cfg, "cpu_offload") else ("hbm",)
        s.lines.append(f"engram cpu_offload={str(cfg['cpu_offload']).lower()} -> tier {s.tiers[0]}")
    if "dp_shared_memory" in cfg:
        copies = "per-node" if _bool(cfg, "dp_shared_memory") else "per-replica"
        s.engine_overrides["host_copies"] = copies
        s.lines.append(f"engram dp_shared_memory={str(cfg['dp_shared_memory']).lower()} -> host copies {copies}")
    if "enable_engram_dp_sharding" in cfg:
        sharded = _bool(cfg, "enable_engram_dp_sharding")
        s.engine_overrides["engram_dp_sharding"] = sharded
        s.lines.append(
            f"engram enable_engram_dp_sharding={str(sharded).lower()} -> "
            + ("one table over the node's ranks" if sharded else "a table per replica")
        )
    if "use_thp" in cfg:
        _bool(cfg, "use_thp")
        s.lines.append("engram use_thp: read, not modeled (huge pages change host TLB misses of the UVA gather)")


def _sglang_engram(s: ServeSettings, cfg: dict) -> None:
    if "placement" in cfg:
        placement = _choice(cfg, "placement", ("gpu", "cpu"))
        s.tiers = ("hbm",) if placement == "gpu" else ("dram-uva", "dram-copy")
        s.lines.append(f"engram placement={placement} -> tier(s) {', '.join(s.tiers)}")
    if "replication" in cfg:
        copies = {"none": "per-replica", "per_node": "per-node"}[_choice(cfg, "replication", ("none", "per_node"))]
        s.engine_overrides["host_copies"] = copies
        s.lines.append(f"engram replication={cfg['replication']} -> host copies {copies}")
    if "lookup" in cfg:
        _choice(cfg, "lookup", ("collective", "peer_read"))
        s.lines.append(
            f"engram lookup={cfg['lookup']}: read, not modeled (a TP>=8 rank's gather of its HBM "
            "shard is timed as a local gather)"
        )


# --- common serve flags ------------------------------------------------------------------------


def apply_serve_flag(s: ServeSettings, flag: str, value) -> None:
    """One serve flag under its vLLM name (SGLang's names map onto these in FLAG_ALIASES)."""
    if flag in ("--gpu-memory-utilization",):
        util = _number(flag, value, float)
        if not 0 < util <= 1:
            raise UserError(f"{flag} must be in (0, 1], got {value}")
        s.engine_overrides["memory_utilization"] = util
        s.lines.append(f"{flag} {value} -> engine memory_utilization {util:g}")
    elif flag in ("--max-num-batched-tokens", "--max-num-seqs"):
        key = flag[2:].replace("-", "_")
        s.engine_overrides[key] = _positive(flag, value, MAX_SEQS if key == "max_num_seqs" else MAX_BATCHED_TOKENS)
        s.lines.append(f"{flag} {value} -> engine {key} {s.engine_overrides[key]}")
    elif flag == "--max-model-len":
        s.max_model_len = _positive(flag, value, MAX_CONTEXT)
        s.lines.append(f"{flag} {value} -> max model length {s.max_model_len:,} tokens")
    elif flag == "--kv-cache-dtype":
        if value not in KV_DTYPES:
            raise UserError(f"--kv-cache-dtype must be one of {', '.join(KV_DTYPES)}, got {value!r}")
        s.kv_dtype = KV_DTYPES[value]
        s.lines.append(f"{flag} {value} -> " + (f"KV cache {s.kv_dtype}" if s.kv_dtype else "the model's KV dtype"))
    elif flag in ("--tensor-parallel-size", "--data-parallel-size"):
        n = _positive(flag, value, MAX_TP if flag.startswith("--tensor") else MAX_GPUS)
        setattr(s, "tp" if flag.startswith("--tensor") else "dp", n)
        s.lines.append(f"{flag} {value} -> {'TP' if flag.startswith('--tensor') else 'DP'} {n}")
    elif flag == "--enable-expert-parallel":
        s.ep = -1  # resolved to TP x DP once both are known (vLLM's expert-parallel size)
        s.lines.append(f"{flag} -> EP = TP x DP")
    elif flag == "--speculative-config":
        _speculative(s, value)
    else:
        raise UserError(f"unknown serve flag {flag}")


def _json_object(flag: str, text: str, example: str = "") -> dict:
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{flag} is not JSON ({e.msg}): {text[:60]}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{flag} must be a JSON object{example}")
    return cfg


def _speculative(s: ServeSettings, value: str) -> None:
    """vLLM's speculative config: its `num_speculative_tokens` drafts per decode step are
    modeled (the acceptance rate is not part of it: `--accept-rate`); the method is read."""
    cfg = _json_object("--speculative-config", value)
    what = ", ".join(f"{k}={v}" for k, v in cfg.items())
    if "num_speculative_tokens" not in cfg:
        s.lines.append(f"--speculative-config {{{what}}}: no num_speculative_tokens, not modeled")
        return
    s.spec_tokens = _positive("--speculative-config num_speculative_tokens", cfg["num_speculative_tokens"], 64)
    s.lines.append(
        f"--speculative-config {{{what}}} -> {s.spec_tokens} drafted tokens verified per sequence "
        "per decode step (acceptance: --accept-rate)"
    )


def _number(flag, value, kind):
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} needs a number, got {value!r}") from None


def _positive(flag, value, hi: int) -> int:
    """A whole number in [1, hi] (the bounds of the same flags given directly)."""
    n = _number(flag, value, int)
    if not 1 <= n <= hi:
        raise UserError(f"{flag} must be a whole number in [1, {hi}], got {value}")
    return n


def resolve_ep(s: ServeSettings) -> None:
    if s.ep == -1:
        s.ep = (s.tp or 1) * (s.dp or 1)


# --- whole launch commands ---------------------------------------------------------------------

VALUE_FLAGS = (
    "--gpu-memory-utilization",
    "--max-num-batched-tokens",
    "--max-num-seqs",
    "--max-model-len",
    "--kv-cache-dtype",
    "--tensor-parallel-size",
    "--data-parallel-size",
    "--speculative-config",
)
SWITCHES = ("--enable-expert-parallel",)
# SGLang's spellings of the same settings (python/sglang/srt/server_args.py) and vLLM's short forms.
FLAG_ALIASES = {
    "-tp": "--tensor-parallel-size",
    "-dp": "--data-parallel-size",
    "--tp-size": "--tensor-parallel-size",
    "--tp": "--tensor-parallel-size",
    "--dp-size": "--data-parallel-size",
    "--dp": "--data-parallel-size",
    "--mem-fraction-static": "--gpu-memory-utilization",
    "--chunked-prefill-size": "--max-num-batched-tokens",
    "--max-running-requests": "--max-num-seqs",
    "--context-length": "--max-model-len",
    "--enable-ep-moe": "--enable-expert-parallel",
}
# Flags that change nothing the simulator models (network, logging, files, names): read and said so.
NOT_MODELED_VALUE = (
    "--host",
    "--port",
    "--served-model-name",
    "--api-key",
    "--download-dir",
    "--tokenizer",
    "--seed",
    "--uvicorn-log-level",
    "--log-level",
    "--tool-call-parser",
    "--reasoning-parser",
    "--chat-template",
    "--dist-init-addr",
    "--nnodes",
    "--node-rank",
    "--revision",
    "--dtype",
)
VALUED_OTHER = ("--engram-config", "--model-path", "--model")
NOT_MODELED_SWITCHES = (
    "--trust-remote-code",
    "--disable-log-requests",
    "--disable-log-stats",
    "--enable-auto-tool-choice",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
)


def parse_serve_command(cmd: str) -> ServeSettings:
    """A whole launch command: `vllm serve MODEL --flag ...` or `python -m sglang.launch_server
    --model-path MODEL --flag ...`. Unknown flags are one error that names them all."""
    try:
        words = shlex.split(cmd)
    except ValueError as e:
        raise UserError(f"--from-cmd: cannot split the command ({e})") from None
    s = ServeSettings()
    rest = _engine_and_model(s, words)
    unknown, i = [], 0
    while i < len(rest):
        word = rest[i]
        flag, eq, inline = word.partition("=")
        flag = FLAG_ALIASES.get(flag, flag)
        known = flag in VALUE_FLAGS + SWITCHES + NOT_MODELED_VALUE + NOT_MODELED_SWITCHES + VALUED_OTHER
        # An unknown flag takes the word after it as its value when that is not a flag.
        takes_value = flag in VALUE_FLAGS + NOT_MODELED_VALUE + VALUED_OTHER or (
            not known and not eq and i + 1 < len(rest) and not rest[i + 1].startswith("-")
        )
        value = inline if eq else (rest[i + 1] if takes_value and i + 1 < len(rest) else None)
        i += 1 if eq or not takes_value else 2
        if takes_value and value is None:
            raise UserError(f"--from-cmd: {flag} needs a value")
        if flag in VALUE_FLAGS or flag in SWITCHES:
            n, spelled = len(s.lines), word.partition("=")[0]
            apply_serve_flag(s, flag, value)
            s.lines[n:] = [line.replace(flag, spelled, 1) for line in s.lines[n:]]  # as the user wrote it
        elif flag == "--engram-config":
            apply_engram_config(s, s.engine, value)
        elif flag in ("--model-path", "--model"):
            s.model = value
            s.lines.append(f"{flag} {value} -> model")
        elif flag in NOT_MODELED_VALUE or flag in NOT_MODELED_SWITCHES:
            s.lines.append(f"{flag}{' ' + value if value is not None else ''}: read, not modeled")
        else:
            unknown.append(word if eq or value is None else f"{word} {value}")
    if unknown:
        raise UserError(f"--from-cmd: cannot map {', '.join(unknown)}")
    resolve_ep(s)
    return s


def _engine_and_model(s: ServeSettings, words: list[str]) -> list[str]:
    """Which engine the command launches, its positional model if any, and the flags after."""
    if len(words) >= 2 and words[0].endswith("vllm") and words[1] == "serve":
        s.engine, rest = "vllm", words[2:]
        if rest and not rest[0].startswith("-"):
            s.model, rest = rest[0], rest[1:]
            s.lines.append(f"vllm serve {s.model} -> engine vllm, model {s.model}")
        return rest
    for i, w in enumerate(words):
        if (
            w == "-m"
            and i + 1 < len(words)
            and words[i + 1] in ("sglang.launch_server", "vllm.entrypoints.openai.api_server")
        ):
            s.engine = "sglang" if words[i + 1].startswith("sglang") else "vllm"
            s.lines.append(f"{words[i + 1]} -> engine {s.engine}")
            return words[i + 2 :]
    raise UserError(
        "--from-cmd: expected `vllm serve MODEL ...` or `python -m sglang.launch_server ...`, "
        f"got `{' '.join(words[:3])}`"
    )


# --- applying the settings ---------------------------------------------------------------------


def served_model(name: str) -> str:
    """The model a launch command serves, as `--model` takes it: a local config.json or model
    directory as is, else a hub id whose last part names a preset (deepseek-ai/DeepSeek-V4.1-Flash
    -> deepseek-v4.1-flash)."""
    from pathlib import Path

    from engramsim.presets import preset_names

    if Path(name).exists():
        return name
    preset = name.rstrip("/").split("/")[-1].lower()
    if preset not in preset_names("model"):
        raise UserError(
            f"--from-cmd: model {name}: no preset named {preset} (known: {', '.join(preset_names('model'))}); "
            "pass --model PRESET or a config.json"
        )
    return preset


def apply_to_model(s: ServeSettings, model):
    """The model with the command's KV dtype (a model whose [kv] layout fixes its entry bytes
    keeps them, and the settings say so)."""
    from dataclasses import replace

    if not s.kv_dtype:
        return model
    if model.kv is not None:
        s.lines.append(
            f"KV cache dtype {s.kv_dtype}: {model.name}'s [kv] layout fixes {model.kv.entry_bytes} B "
            "per entry; not applied"
        )
        return model
    return replace(model, backbone=replace(model.backbone, kv_dtype=s.kv_dtype))


def apply_to_workload(s: ServeSettings, workload):
    """The scheduler limits the command sets win over the workload preset's."""
    from dataclasses import replace

    limits = {k: s.engine_overrides[k] for k in ("max_num_seqs", "max_num_batched_tokens") if k in s.engine_overrides}
    return replace(workload, engine=replace(workload.engine, **limits)) if limits else workload


def settings_from_cli(
    from_cmd: str | None, engine: str, engram_config: str | None, flags: dict, tiers: tuple[str, ...]
) -> ServeSettings:
    """The settings `simulate` was given: a whole command, or the flags one by one (TP and DP
    under either spelling go straight through; the others say what they became)."""
    given = {k: v for k, v in flags.items() if v is not None}
    if from_cmd is not None:  # an empty value is a mistake, not "no command"
        if given or engram_config is not None:
            raise UserError(
                f"--from-cmd carries the serve flags; do not also give {', '.join(sorted(given)) or '--engram-config'}"
            )
        s = parse_serve_command(from_cmd)
        if s.model:
            s.model = served_model(s.model)
    else:
        s = ServeSettings(tp=given.pop("--tensor-parallel-size", None), dp=given.pop("--data-parallel-size", None))
        for flag, value in given.items():
            apply_serve_flag(s, flag, None if value is True else value)
        if engram_config is not None:
            apply_engram_config(s, engine, engram_config)
        resolve_ep(s)
    if tiers and s.tiers:
        raise UserError("give --tier or an --engram-config that places the table, not both")
    return s
