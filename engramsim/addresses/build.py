"""Build an AddressTrace from real text or token-id files."""

from __future__ import annotations

import dataclasses

import numpy as np

from engramsim import engram
from engramsim.addresses.store import load_trace
from engramsim.addresses.trace import AddressTrace
from engramsim.corpus import Corpus, default_corpus, read_token_ids, text_corpus
from engramsim.errors import UserError
from engramsim.model import EngramSpec, ModelSpec
from engramsim.tokenize import load_tokenizer


def build_trace(
    spec: EngramSpec, corpus: Corpus | None = None, tokenizer_path=None, token_id_files=None
) -> AddressTrace:
    """Tokenize, compress and stream real text (or token-id files) for `spec`.

    With a tokenizer (`tokenizer_path`, else the model's own packaged one, else the built-in
    one), the hash uses that tokenizer's compressed vocabulary size, as the reference derives it
    from its tokenizer. Token-id files without a tokenizer are taken as compressed ids of the
    model's own tokenizer.
    """
    if token_id_files:
        seqs = [s for f in token_id_files for s in read_token_ids(f)]
        source = f"{len(token_id_files)} token-id file(s)"
        if tokenizer_path is None:
            engram.check_ids(np.concatenate(seqs), spec)
            return _stream(spec, seqs, source, "compressed ids as given")
        tok = load_tokenizer(tokenizer_path)
    else:
        corpus = corpus or default_corpus()
        tok = load_tokenizer(tokenizer_path, list(corpus.documents), default=spec.tokenizer)
        seqs = [s for s in tok.encode(list(corpus.documents)) if s.size]
        source = corpus.description
    comp = tok.compression()
    seqs = [comp(s) for s in seqs]
    if comp.size > np.iinfo(np.int64).max // 4 or spec.compressed_pad_id >= comp.size:
        raise UserError(
            f"compressed pad id {spec.compressed_pad_id} is outside the tokenizer's {comp.size} compressed ids"
        )
    spec = dataclasses.replace(spec, compressed_vocab_size=comp.size)
    return _stream(spec, seqs, source, f"{tok.description}, compressed to {comp.size:,} ids")


def _stream(spec, seqs, source, tokenizer) -> AddressTrace:
    seqs = [s for s in seqs if len(s)]
    if not seqs or sum(len(s) for s in seqs) < 2:
        raise UserError("the text gives no tokens to trace")
    ids = np.concatenate(seqs).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum([len(s) for s in seqs[:-1]])]).astype(np.int64)
    return AddressTrace(spec=spec, ids=ids, seq_starts=starts, corpus=source, tokenizer=tokenizer)


def trace_for(model: ModelSpec, texts=(), id_files=(), tokenizer=None, trace_file=None, parts=()) -> AddressTrace:
    """The address trace the CLI asks for: a saved trace file, text files, token-id files, or
    else the offline default corpus (only its `parts` when given)."""
    if model.engram is None:
        raise UserError(f"model {model.name} has no Engram layers to trace")
    if trace_file:
        if texts or id_files or tokenizer or parts:
            raise UserError("give either --trace or text/ids/--corpus/--tokenizer, not both")
        return load_trace(trace_file, model.engram)
    if sum(map(bool, (texts, id_files, parts))) > 1:
        raise UserError("give one of --text, --ids or --corpus")
    corpus = text_corpus(list(texts)) if texts else default_corpus(parts) if parts else None
    return build_trace(model.engram, corpus=corpus, tokenizer_path=tokenizer, token_id_files=list(id_files))
