"""Text for address traces: the offline default corpus, text files and token-id files.

The default corpus is real English technical prose that every Python installation carries, so
nothing is downloaded: the Python standard library's own documentation.

1. `pydoc_data.topics`: the language reference topics that `help()` shows (~0.7 MB of English),
   one document per topic, in sorted topic order;
2. then the triple-quoted string literals (docstrings, almost all) of the standard library's
   `.py` files in sorted path order, skipping tests, site-packages and idlelib, one document per
   string, until the corpus reaches `max_bytes`.

The exact text depends on the Python version, so traces built from it are keyed by its digest.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engramsim.errors import UserError

DEFAULT_MAX_BYTES = 1_500_000
_TRIPLE = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.S)
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "idlelib", "idle_test", "__pycache__"}


@dataclass(frozen=True)
class Corpus:
    documents: tuple[str, ...]
    description: str

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for d in self.documents:
            h.update(d.encode("utf-8", errors="surrogatepass"))
            h.update(b"\0")
        return h.hexdigest()[:16]


def stdlib_corpus(max_bytes: int = DEFAULT_MAX_BYTES) -> Corpus:
    """The offline default corpus (see the module docstring)."""
    from pydoc_data.topics import topics
    docs = [topics[k] for k in sorted(topics) if topics[k].strip()]
    size = sum(len(d.encode("utf-8")) for d in docs)
    n_topics, n_files = len(docs), 0
    for path in _stdlib_sources():
        if size >= max_bytes:
            break
        strings = _docstrings(path)
        if strings:
            n_files += 1
        for s in strings:
            docs.append(s)
            size += len(s.encode("utf-8"))
    version = ".".join(map(str, sys.version_info[:3]))
    desc = (f"Python {version} stdlib docs: {n_topics} pydoc topics + docstrings of {n_files} modules, "
            f"{size / 1e6:.2f} MB")
    return Corpus(tuple(docs), desc)


def _stdlib_sources():
    """Standard-library .py files in sorted path order, pruning skipped folders while walking
    (site-packages alone can be far larger than the standard library)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test_"):
                yield Path(dirpath) / name


def _docstrings(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for m in _TRIPLE.finditer(text):
        s = (m.group(1) if m.group(1) is not None else m.group(2)).strip()
        if len(s) >= 40:  # skip one-word strings and empty literals: not prose
            out.append(s)
    return out


def text_corpus(paths: list[str | Path]) -> Corpus:
    """Each text file is one document."""
    docs = []
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise UserError(f"cannot read {p}: {e.strerror}") from None
        if not text.strip():
            raise UserError(f"{p}: empty text")
        docs.append(text)
    if not docs:
        raise UserError("no text given")
    size = sum(len(d) for d in docs)
    return Corpus(tuple(docs), f"{len(docs)} text file(s), {size / 1e6:.2f} MB")


def read_token_ids(path: str | Path) -> list[np.ndarray]:
    """Token-id sequences from a .npy file (1-D: one sequence; 2-D: one per row) or a text file
    (whitespace-separated integers, one sequence per non-empty line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"token-id file not found: {path}")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise UserError(f"{path}: not a numpy array file ({e})") from None
        if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f"{path}: expected a 1-D or 2-D integer array, got {arr.ndim}-D {arr.dtype}")
        seqs = [arr] if arr.ndim == 1 else list(arr)
    else:
        seqs = []
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if line.strip():
                try:
                    seqs.append(np.array([int(v) for v in line.split()], dtype=np.int64))
                except ValueError:
                    raise UserError(f"{path}:{n}: not a list of integer token ids") from None
    seqs = [np.asarray(s, dtype=np.int64) for s in seqs if len(s)]
    if not seqs:
        raise UserError(f"{path}: no token ids")
    return seqs
