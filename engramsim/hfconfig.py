"""A Hugging Face `config.json` as a model preset: `--model path/to/config.json`.

Supported: DeepSeek-V4 (`DeepseekV4ForCausalLM`, a flat config), DeepSeek-V4.1
(`DeepseekV41ForCausalLM`, its text model under `text_config`) and the Engram demo config
(deepseek-ai/Engram `engram_demo_v1.py`: the fields of `EngramConfig` and `BackBoneConfig`).
The result is the same tables a models/*.toml preset holds ([backbone], [kv], [engram]), built
and validated by the same code, so a config and a preset that say the same thing give the same
model (tests/test_hfconfig.py checks DeepSeek-V4.1-Flash's config against its preset).

Every field of the config is accounted for: mapped onto a preset key, set aside because it
changes no byte or FLOP the simulator counts (NUMERICS_ONLY), or named in one note line. What a
config.json does not say (KV entry layouts, the engine's weight sharding) comes from the
architecture's reference preset, also with one note line each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from engramsim.errors import UserError
from engramsim.presets import load_json

# Fields that change numerics, not memory or time: read and set aside without a note.
NUMERICS_ONLY = {
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "hidden_act",
    "swiglu_limit",
    "attention_bias",
    "attention_dropout",
    "initializer_range",
    "scoring_func",
    "topk_method",
    "norm_topk_prob",
    "routed_scaling_factor",
    "compress_rope_theta",
    "hc_sinkhorn_iters",
    "hc_eps",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "transformers_version",
    "use_cache",
    "model_type",
    "architectures",
    "auto_map",
    "torch_dtype",
    "dtype",
    "n_group",
    "topk_group",
    "aux_loss_alpha",
    "seq_aux",
    "tokenizer_name_or_path",
    "seed",
    "name_or_path",
    "_name_or_path",
}

# DeepSeek-V4 family: the tokenizer its Engram tables are hashed with, and what config.json does
# not say, from the family's preset (models/deepseek-v4.1-flash.toml cites each figure).
DSV4_KV_ENTRY_BYTES = 584  # fp8 NoPE + scales + bf16 RoPE of the 512-wide head (vllm-ascend PR #9270)
DSV4_INDEX_SCALE_BYTES = 4  # one fp32 scale per indexer key (DeepSeek-V3.2 indexer cache layout)
DSV4_ENGRAM_SCALE_BLOCK = 32  # one E8M0 scale byte per 32 fp8 values of an Engram row (264 B rows)
DSV4_KERNELS_PER_LAYER = 76  # decode kernels per layer, mHC seams fused (vLLM #56503/#56506 census)


@dataclass
class MappedConfig:
    """Preset tables from a config, and one line per field that could not be mapped."""

    name: str
    architecture: str
    tables: dict
    notes: list[str] = field(default_factory=list)


def read_config(path: str | Path) -> dict:
    data = load_json(path, "config")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config.json is a JSON object")
    return data


def map_config(data: dict, where: str, name: str) -> MappedConfig:
    """The preset tables for a parsed config.json (see the module docstring)."""
    arch = architecture(data, where)
    mapper = {"deepseek_v4": _deepseek_v4, "deepseek_v41": _deepseek_v4, "engram_demo": _engram_demo}[arch]
    return mapper(data, where, name, arch)


def architecture(data: dict, where: str) -> str:
    archs = data.get("architectures") or []
    if "DeepseekV41ForCausalLM" in archs or data.get("model_type") == "deepseek_v41":
        return "deepseek_v41"
    if "DeepseekV4ForCausalLM" in archs or data.get("model_type") == "deepseek_v4":
        return "deepseek_v4"
    if {"n_head_per_ngram", "max_ngram_size", "layer_ids"} <= set(_flat_demo(data)):
        return "engram_demo"
    named = ", ".join(map(str, archs)) or data.get("model_type") or "none named"
    raise UserError(
        f"{where}: unknown architecture ({named}); supported: DeepseekV4ForCausalLM, "
        "DeepseekV41ForCausalLM, the Engram demo config (engram_demo_v1.py)"
    )


class _Fields:
    """A config's fields, marking each one read so the rest can be named."""

    def __init__(self, fields: dict, where: str):
        self.fields, self.where, self.used = fields, where, set()

    def get(self, key, default=None, kind: type | None = None):
        """The field, or `default`; a value present must be of `kind` (else of the default's type):
        a config.json is checked here, before any arithmetic on it."""
        self.used.add(key)
        if key not in self.fields or self.fields[key] is None:
            return default
        kind = kind or (type(default) if default is not None else None)
        return self._typed(key, self.fields[key], kind) if kind else self.fields[key]

    def need(self, key, kind: type = int):
        """A field the model cannot be built without (a whole number > 0 unless `kind` says)."""
        self.used.add(key)
        if key not in self.fields:
            raise UserError(f"{self.where}: missing field '{key}'")
        value = self._typed(key, self.fields[key], kind)
        if kind is int and value <= 0:
            raise UserError(f"{self.where}: field '{key}' must be a whole number > 0, got {value!r}")
        return value

    def _typed(self, key, value, kind: type):
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:  # JSON has one number type: 8.0 is 8, 8.5 is not a count
            ok = _whole(value)
            value = int(value) if ok and abs(value) < 2**63 else value  # 1e300 stays short in errors
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif kind is list:  # every list of a config here holds layer ids, sizes or ratios
            ok = isinstance(value, list) and all(_whole(v) for v in value)
        else:
            ok = isinstance(value, kind)
        if not ok:
            want = {
                bool: "true or false",
                int: "a whole number",
                float: "a finite number",
                list: "a list of whole numbers",
                dict: "an object",
                str: "a string",
            }
            raise UserError(f"{self.where}: field '{key}' must be {want.get(kind, kind.__name__)}, got {value!r}")
        return value

    def has(self, key) -> bool:
        return key in self.fields

    def unmapped(self, prefix: str = "") -> list[str]:
        return [
            f"config field '{prefix}{k}' is not mapped (ignored)"
            for k in self.fields
            if k not in self.used and k not in NUMERICS_ONLY
        ]


def _whole(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value).is_integer()
    )


# --- DeepSeek-V4 and V4.1 ----------------------------------------------------------------------


def _deepseek_v4(data: dict, where: str, name: str, arch: str) -> MappedConfig:
    text = data.get("text_config") if arch == "deepseek_v41" else data
    if not isinstance(text, dict):
        raise UserError(f"{where}: a DeepseekV41ForCausalLM config keeps its text model under 'text_config'")
    f = _Fields(text, where)
    top = _Fields(data, where) if arch == "deepseek_v41" else f
    notes: list[str] = []
    quant = top.get("quantization_config", kind=dict) or {}
    backbone = _dsv4_backbone(f, quant, notes)
    tables = {"backbone": backbone, "kv": _dsv4_kv(f, backbone, notes)}
    if f.has("engram_layer_ids") and f.fields["engram_layer_ids"]:
        tables["engram"] = _dsv4_engram(f, quant)
    notes += _dsv4_unused(f, top, arch)
    return MappedConfig(name, arch, tables, notes)


def _dsv4_backbone(f: _Fields, quant: dict, notes: list[str]) -> dict:
    h, heads, hd = f.need("hidden_size"), f.need("num_attention_heads"), f.need("head_dim")
    bb = {
        "n_layers": f.need("num_hidden_layers"),
        "n_mtp_layers": f.get("num_nextn_predict_layers", 0),
        "hidden_size": h,
        "vocab_size": f.need("vocab_size"),
        "n_heads": heads,
        "head_dim": hd,
        "n_kv_heads": f.need("num_key_value_heads"),
        "qk_rope_head_dim": f.get("qk_rope_head_dim", 0),
        "attn_params_per_layer": _dsv4_attn_params(f, h, heads, hd),
        # wq_a and wkv: one replicated linear on every TP rank (vLLM fused_wqa_wkv, disable_tp)
        "attn_replicated_params_per_layer": h * (f.need("q_lora_rank") + hd),
        "extra_params_per_layer": _dsv4_extra_params(f, h, hd),
        "n_routed_experts": f.need("n_routed_experts"),
        "n_active_experts": f.need("num_experts_per_tok"),
        "n_shared_experts": f.get("n_shared_experts", 0),
        "moe_intermediate_size": f.need("moe_intermediate_size"),
        "hc_mult": f.get("hc_mult", 1),
        "max_position_embeddings": f.get("max_position_embeddings", 0),
        "tie_embeddings": bool(f.get("tie_word_embeddings", False)),
    }
    if f.get("dspark_n_routed_experts"):
        bb["mtp_routed_experts"] = f.get("dspark_n_routed_experts")
    if f.get("first_k_dense_replace"):
        bb["first_dense_layers"] = f.get("first_k_dense_replace")
        bb["intermediate_size"] = f.need("intermediate_size")
    bb.update(_dsv4_dtypes(quant, f.get("expert_dtype")))
    # KV storage is the engine's choice (--kv-cache-dtype); the family stores fp8 (DeepSeek-V4
    # inference code). vLLM divides the non-expert weights across TP except wq_a|wkv and the extras.
    bb["kv_dtype"] = "fp8"
    bb["tp_shards_dense"] = True
    bb["kernels_per_layer"] = DSV4_KERNELS_PER_LAYER
    notes.append(
        f"kernels_per_layer: not in config.json; {DSV4_KERNELS_PER_LAYER}, a decode layer of the family "
        "with its hyper-connection seams fused (vLLM #56503/#56506 census, the deepseek-v4.1-flash preset)"
    )
    notes.append("kv_dtype: not in config.json; fp8, as DeepSeek-V4's own inference code stores KV")
    notes.append(
        "tp_shards_dense: not in config.json; true, as vLLM serves DeepSeek-V4 (wq_b/wo_a/wo_b, "
        "shared experts and embeddings divided across TP; wq_a|wkv, router, mixers, compressors "
        "and indexers whole on every rank)"
    )
    return bb


def _dsv4_attn_params(f: _Fields, h: int, heads: int, hd: int) -> int:
    """Low-rank query (wq_a h x q_lora, wq_b q_lora x heads*hd), one shared KV projection (h x
    hd) and the grouped low-rank output (wo_a o_groups x (heads*hd/o_groups x o_lora), wo_b
    (o_groups*o_lora) x h)."""
    q_lora, o_lora, groups = f.need("q_lora_rank"), f.need("o_lora_rank"), f.get("o_groups", 1)
    return h * q_lora + q_lora * heads * hd + h * hd + groups * (heads * hd // groups) * o_lora + groups * o_lora * h


def _dsv4_extra_params(f: _Fields, h: int, hd: int) -> int:
    """Per-layer average of the small weights: router (experts x h), the KV compressor (wkv +
    wgate, h -> hd) on the KV-source layers (vLLM: "Compressors live only on kv-source layers";
    a DeepSeek-V4 config without them: every layer with a compress ratio), the lightning indexer
    (wq_b q_lora x idx_heads*idx_hd, weights h x idx_heads, key compressor 2 x h x idx_hd) on the
    index-source layers. The hyper-connection mixers are derived from hc_mult (fp32). ASSUMPTION,
    as the deepseek-v4.1-flash preset: one compressor branch per layer."""
    n = f.need("num_hidden_layers")
    ratios = list(f.get("compress_ratios", kind=list) or [])[:n]
    sources = [i for i in (f.get("kv_source_layer_ids", kind=list) or []) if i < n]
    compressed = len(sources) if sources else sum(1 for r in ratios if r)
    idx_heads, idx_hd = f.get("index_n_heads", 0), f.get("index_head_dim", 0)
    index_layers = len(_index_layers(f))
    router = f.need("n_routed_experts") * h
    compressor = 2 * h * hd * compressed
    indexer = (f.get("q_lora_rank", 0) * idx_heads * idx_hd + h * idx_heads + 2 * h * idx_hd) * index_layers
    return router + round((compressor + indexer) / n)


def _index_layers(f: _Fields) -> list[int]:
    """Layers that keep lightning-indexer keys: the config's index_source_layer_ids, else (a
    DeepSeek-V4 config) every layer of compress ratio 4, where V4's CSA attention has its indexer."""
    if f.get("index_source_layer_ids", kind=list):
        return list(f.get("index_source_layer_ids", kind=list))
    return (
        [i for i, r in enumerate(f.get("compress_ratios", kind=list) or []) if r == 4] if f.get("index_n_heads") else []
    )


def _dsv4_dtypes(quant: dict, expert_dtype: str | None) -> dict:
    """Dense weights as quantization_config says (fp8 in 32x32 or 128x128 blocks), experts as
    its (or the config's) expert_dtype, embeddings and LM head in the checkpoint's bf16."""
    block = quant.get("weight_block_size")
    block = tuple(block) if isinstance(block, list) else ()
    dense = (
        {(32, 32): "fp8-b32", (128, 128): "fp8-b128"}.get(block, "fp8")
        if quant.get("quant_method") == "fp8"
        else "bf16"
    )
    return {"dtype": dense, "expert_dtype": quant.get("expert_dtype") or expert_dtype or dense, "embed_dtype": "bf16"}


def _dsv4_kv(f: _Fields, bb: dict, notes: list[str]) -> dict:
    layers = bb["n_layers"] + bb["n_mtp_layers"]
    ratios = list(f.get("compress_ratios", kind=list) or [])
    if len(ratios) == bb["n_layers"]:
        ratios += [0] * bb["n_mtp_layers"]
    if not ratios:
        ratios = [0] * layers
        notes.append("compress_ratios: not in config.json; every layer keeps only its sliding window")
    kv = {
        "compress_ratios": ratios,
        "sliding_window": f.get("sliding_window", 0),
        "entry_bytes": DSV4_KV_ENTRY_BYTES,
        "index_logits_dtype": "fp8",
    }
    if f.get("kv_source_layer_ids"):
        kv["kv_source_layer_ids"] = list(f.get("kv_source_layer_ids", kind=list))
    if _index_layers(f):
        kv["index_source_layer_ids"] = _index_layers(f)
        if not f.has("index_source_layer_ids"):
            notes.append(
                "index_source_layer_ids: not in config.json; the layers of compress ratio 4 "
                "(DeepSeek-V4's CSA layers carry the lightning indexer)"
            )
        kv["index_entry_bytes"] = f.need("index_head_dim") + DSV4_INDEX_SCALE_BYTES
    notes.append(
        f"kv entry_bytes: not in config.json; {DSV4_KV_ENTRY_BYTES} B per entry of the "
        f"{bb['head_dim']}-wide head, as the deepseek-v4.1-flash preset (vllm-ascend PR #9270)"
    )
    return kv


def _dsv4_engram(f: _Fields, quant: dict) -> dict:
    orders = f.need("engram_max_ngram_size") - 1
    heads, head_dim = f.need("engram_n_heads"), f.need("engram_head_dim")
    fp8 = quant.get("quant_method") == "fp8"
    engram = {
        "layer_ids": list(f.need("engram_layer_ids", list)),
        "max_ngram_size": orders + 1,
        "n_head_per_ngram": heads,
        "engram_vocab_size": [f.need("engram_vocab_size")] * orders,
        "n_embed_per_ngram": heads * head_dim,
        "compressed_vocab_size": f.need("engram_compressed_vocab_size"),
        "compressed_pad_id": f.get("engram_pad_token_id", 0),
        "tokenizer": "deepseek-v4",
        "dtype": "fp8" if fp8 else "bf16",
    }
    if f.get("engram_num_embeddings"):
        engram["num_embeddings"] = list(f.get("engram_num_embeddings", kind=list))
    if fp8:  # fp8 values plus one E8M0 scale byte per block of 32
        engram["row_bytes"] = head_dim + math.ceil(head_dim / DSV4_ENGRAM_SCALE_BLOCK)
    return engram


def _dsv4_unused(f: _Fields, top: _Fields, arch: str) -> list[str]:
    notes = f.unmapped("text_config." if arch == "deepseek_v41" else "")
    if top is not f:
        top.get("text_config")
        if top.has("vision_config"):
            top.get("vision_config")
            notes.append("config field 'vision_config' is not mapped (the vision encoder is not modeled)")
        notes += top.unmapped()
    return notes


# --- the Engram demo ---------------------------------------------------------------------------


def _flat_demo(data: dict) -> dict:
    """The demo's two dataclasses, flat or as {"engram_config": ..., "backbone_config": ...}."""
    flat = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for key in ("engram_config", "backbone_config"):
        if isinstance(data.get(key), dict):
            flat.update(data[key])
    return flat


def _engram_demo(data: dict, where: str, name: str, arch: str) -> MappedConfig:
    f = _Fields(_flat_demo(data), where)
    h = f.need("hidden_size")
    engram = {
        "layer_ids": list(f.need("layer_ids", list)),
        "max_ngram_size": f.need("max_ngram_size"),
        "n_head_per_ngram": f.need("n_head_per_ngram"),
        "engram_vocab_size": list(f.need("engram_vocab_size", list)),
        "n_embed_per_ngram": f.get("n_embed_per_ngram", 512),
        "kernel_size": f.get("kernel_size", 4),
        "compressed_pad_id": f.get("pad_id", 2),
        "seed": f.get("seed", 0),
    }
    # The demo mocks attention and MoE as identities: it has no shapes for them. The backbone is
    # the paper's dense one at the demo's width (ASSUMPTION, said in the notes).
    backbone = {
        "n_layers": f.need("num_layers"),
        "hidden_size": h,
        "vocab_size": f.get("vocab_size", 129280),
        "hc_mult": f.get("hc_mult", 1),
        "n_heads": max(1, h // 128),
        "head_dim": 128,
        "n_kv_heads": max(1, h // 128),
        "intermediate_size": 4 * h,
    }
    notes = [
        f"attention and MLP: the Engram demo mocks them (no shapes); ASSUMPTION: {h // 128} heads of 128 "
        f"(GQA, as many KV heads) and a gated MLP of {4 * h}",
        "Engram table dtype: not in the demo config; bf16",
    ]
    if f.get("tokenizer_name_or_path") and "DeepSeek-V3" not in str(f.fields.get("tokenizer_name_or_path")):
        notes.append(
            f"tokenizer_name_or_path '{f.fields['tokenizer_name_or_path']}': hashed with the built-in "
            "tokenizer unless --tokenizer is given"
        )
    notes += f.unmapped()
    return MappedConfig(name, arch, {"backbone": backbone, "engram": engram}, notes)
