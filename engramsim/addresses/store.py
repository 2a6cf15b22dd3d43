"""Trace files (.npz: the id stream, its statistics and a JSON header) and the cache of the
default-corpus trace."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from engramsim.addresses.stats import ARRAY_FIELDS, BATCH_REF, GEOMETRY, LayerStats, TraceStats, geometry
from engramsim.addresses.trace import AddressTrace
from engramsim.corpus import PART_BYTES, default_corpus_key
from engramsim.errors import UserError
from engramsim.fileio import atomic_output, check_output_dir, input_file
from engramsim.model import EngramSpec

TRACE_FORMAT = 1


def save_trace(path: str | Path, trace: AddressTrace, stats: TraceStats) -> Path:
    """One .npz: the compressed id stream and document starts, plus the statistics and a JSON
    header (format, geometry, sources). Written atomically."""
    path = trace_file_path(path)
    meta = {"format": TRACE_FORMAT, **stats.header()}
    arrays = {"ids": trace.ids, "seq_starts": trace.seq_starts, "meta": np.array(json.dumps(meta))}
    for layer, ls in stats.layers.items():
        for name in ARRAY_FIELDS:
            arrays[f"L{layer}_{name}"] = np.asarray(getattr(ls, name))
    with atomic_output(path) as f:
        np.savez(f, **arrays)
    return path


def trace_file_path(path: str | Path) -> Path:
    """Where `save_trace` writes for `path`: trace files end in .npz."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_suffix(".npz")


def load_stats(path: str | Path) -> TraceStats:
    path = input_file(path, "trace")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != TRACE_FORMAT:
                raise UserError(f"{path}: trace format {meta.get('format')} (this engramsim reads {TRACE_FORMAT})")
            layers = {}
            for key, scalars in meta["layers"].items():
                layer = int(key)
                arrays = {name: z[f"L{layer}_{name}"] for name in ARRAY_FIELDS}
                layers[layer] = LayerStats(**scalars, **arrays)
    except UserError:
        raise
    except Exception as e:  # not a zip, not our keys, bad JSON: one line, no traceback
        # numpy's own words for a text file ("pickled data ... load it unsafely") would invite
        # a user to unpickle it; say what an engramsim trace is instead.
        raise UserError(
            f"{path}: not an engramsim trace file (expected the .npz `engramsim trace --save` writes; "
            f"{type(e).__name__})"
        ) from None
    return TraceStats(
        geometry=meta["geometry"],
        compressed_vocab_size=meta["compressed_vocab_size"],
        corpus=meta["corpus"],
        tokenizer=meta["tokenizer"],
        n_tokens=meta["n_tokens"],
        n_sequences=meta["n_sequences"],
        batch_ref=meta["batch_ref"],
        layers=layers,
    )


def load_trace(path: str | Path, spec: EngramSpec) -> AddressTrace:
    """The id stream of a saved trace, re-hashable for `spec` (its geometry must match)."""
    stats = load_stats(path)
    check_geometry(stats, spec, path)
    with np.load(path, allow_pickle=False) as z:
        ids, starts = z["ids"], z["seq_starts"]
    spec = dataclasses.replace(spec, compressed_vocab_size=stats.compressed_vocab_size)
    return AddressTrace(spec=spec, ids=ids, seq_starts=starts, corpus=stats.corpus, tokenizer=stats.tokenizer)


def check_geometry(stats: TraceStats, spec: EngramSpec, where) -> None:
    want = geometry(spec)
    for k in GEOMETRY:
        if stats.geometry.get(k) != want[k]:
            raise UserError(f"{where}: trace was built for {k}={stats.geometry.get(k)}, the model has {want[k]}")


def default_cache_dir() -> Path:
    """$ENGRAMSIM_CACHE_DIR, else $XDG_CACHE_HOME/engramsim, else ~/.cache/engramsim."""
    if os.environ.get("ENGRAMSIM_CACHE_DIR"):
        return Path(os.environ["ENGRAMSIM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "engramsim"


def usable_cache_dir() -> Path:
    """The trace cache directory, created if need be, or one line naming the variable that
    chose it; checked before a trace is built, so minutes of work are never lost to it."""
    flag = next(
        (f"${v}" for v in ("ENGRAMSIM_CACHE_DIR", "XDG_CACHE_HOME") if os.environ.get(v)),
        "the cache directory (set $ENGRAMSIM_CACHE_DIR)",
    )
    return check_output_dir(default_cache_dir() / "traces", flag, create=True)


def default_trace_path(spec: EngramSpec) -> Path:
    """Cache file of the default-corpus trace for this geometry and tokenizer, this corpus (this
    Python's stdlib, the installed Chinese manual pages) and this trace format."""
    key = json.dumps(
        {
            "geometry": geometry(spec),
            "pad": spec.compressed_pad_id,
            "tokenizer": spec.tokenizer,
            "corpus": default_corpus_key(),
            "parts": PART_BYTES,
            "format": TRACE_FORMAT,
            "batch_ref": BATCH_REF,
        },
        sort_keys=True,
    )
    return usable_cache_dir() / f"stdlib-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
