"""Text for address traces: the offline default corpus, text files and token-id files.

The default corpus is real technical text that ships offline, so nothing is downloaded. It has
three parts, since DeepSeek's users write Chinese and code as much as English:

* `en` (1.5 MB): the Python standard library's own documentation (PSF licence).
  1. `pydoc_data.topics`: the language reference topics that `help()` shows (~0.7 MB), one
     document per topic, in sorted topic order;
  2. then the triple-quoted string literals (docstrings, almost all) of the standard library's
     `.py` files in sorted path order, skipping tests, site-packages and idlelib, one document
     per string, until the part reaches 1.5 MB.
* `code` (1.0 MB): whole `.py` source files of the standard library (PSF licence), one document
  per file, continuing the same sorted walk after the files whose docstrings `en` took, so no
  text is in both parts.
* `zh` (1.0 MB of the 3.4 MB there): Simplified Chinese manual pages from Debian's
  `manpages-zh` package (GFDL-1.2+, github.com/man-pages-zh/manpages-zh; `apt-get install
  manpages-zh`), read from /usr/share/man/zh_CN with the roff markup stripped, one document per
  page, in sorted path order. Without the package this part is absent and the corpus says so.

The parts' documents are interleaved (`interleave`), so the first half of the corpus, on which a
static hot-row cache is trained, holds half of each part. The exact text depends on the Python version and the installed manual pages, so traces built
from it are keyed by `default_corpus_key`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engramsim.errors import UserError
from engramsim.fileio import input_file, read_input_text

DEFAULT_MAX_BYTES = 1_500_000  # the `en` part
PART_BYTES = {"en": DEFAULT_MAX_BYTES, "code": 1_000_000, "zh": 1_000_000}
PARTS = tuple(PART_BYTES)
ZH_MAN_ROOT = Path("/usr/share/man/zh_CN")
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


def default_corpus(parts=PARTS, zh_root: Path = ZH_MAN_ROOT) -> Corpus:
    """The offline default corpus, or some of its parts (see the module docstring)."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise UserError(f"unknown corpus part '{unknown[0] if unknown else ''}' (parts: {', '.join(PARTS)})")
    sources = _stdlib_sources()
    en, en_desc = stdlib_corpus_part(sources)  # walks the sources `code` continues from
    chosen = {"en": (en, en_desc)}
    if "code" in parts:
        chosen["code"] = _code_part(sources, PART_BYTES["code"])
    if "zh" in parts:
        chosen["zh"] = _zh_part(zh_root, PART_BYTES["zh"])
    docs = interleave([chosen[p][0] for p in PARTS if p in parts])
    return Corpus(tuple(docs), "; ".join(chosen[p][1] for p in PARTS if p in parts))


def interleave(parts: list[list[str]]) -> list[str]:
    """The documents of all parts, each part kept in order and spread evenly by its text: a
    document sits at the middle of its byte span within its part. So any leading share of the
    corpus (the training half of a hot-row cache) holds that share of every part."""
    keyed = []
    for p, docs in enumerate(parts):
        sizes = [len(d.encode("utf-8")) for d in docs]
        total, before = max(1, sum(sizes)), 0
        for d, n in zip(docs, sizes):
            keyed.append(((before + n / 2) / total, p, d))
            before += n
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [d for _, _, d in keyed]


def default_corpus_key(zh_root: Path = ZH_MAN_ROOT) -> str:
    """What the default corpus's text depends on, cheaply: the Python version and the
    installed Chinese manual pages (names and sizes)."""
    h = hashlib.sha256(sys.version.encode())
    for path in _zh_pages(zh_root):
        h.update(f"{path.relative_to(zh_root)}:{path.stat().st_size}".encode())
    return h.hexdigest()[:16]


def stdlib_corpus_part(sources, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[list[str], str]:
    """The `en` part: pydoc topics, then docstrings of `sources` until `max_bytes`."""
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics) if topics[k].strip()]
    size = sum(len(d.encode("utf-8")) for d in docs)
    n_topics, n_files = len(docs), 0
    for path in sources:
        strings = _docstrings(path)
        if strings:
            n_files += 1
        for s in strings:
            docs.append(s)
            size += len(s.encode("utf-8"))
        if size >= max_bytes:
            break
    desc = (
        f"en: Python {_version()} stdlib docs ({n_topics} pydoc topics + docstrings of {n_files} "
        f"modules, {size / 1e6:.2f} MB)"
    )
    return docs, desc


def _code_part(sources, max_bytes: int) -> tuple[list[str], str]:
    docs, size = [], 0
    for path in sources:
        if size >= max_bytes:
            break
        text = _read_utf8(path)
        if text and text.strip():
            docs.append(text)
            size += len(text.encode("utf-8"))
    return docs, f"code: Python {_version()} stdlib source ({len(docs)} .py files, {size / 1e6:.2f} MB)"


def _zh_part(root: Path, max_bytes: int) -> tuple[list[str], str]:
    docs, size = [], 0
    for path in _zh_pages(root):
        if size >= max_bytes:
            break
        try:
            text = roff_to_text(gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace"))
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        if text.strip():
            docs.append(text)
            size += len(text.encode("utf-8"))
    if not docs:
        return [], f"zh: absent (no Chinese manual pages under {root}: apt-get install manpages-zh)"
    return docs, f"zh: Debian manpages-zh ({len(docs)} Simplified Chinese man pages, {size / 1e6:.2f} MB)"


def _zh_pages(root: Path) -> list[Path]:
    return sorted(root.glob("man*/*.gz")) if root.is_dir() else []


def _version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


# roff: drop comments and requests, keep the text arguments of font and heading macros, turn
# escapes into the characters they print (the common ones) or nothing.
_ROFF_TEXT_MACROS = {"SH", "SS", "B", "I", "BI", "BR", "IB", "IR", "RB", "RI", "SB", "SM", "IP", "TP", "HP", "Nm", "Nd"}
_ROFF_CHARS = {
    "em": "—",
    "en": "–",
    "aq": "'",
    "dq": '"',
    "lq": "“",
    "rq": "”",
    "bu": "•",
    "co": "©",
    "mi": "-",
    "hy": "-",
    "ga": "`",
    "ti": "~",
    "ha": "^",
    "rs": "\\",
    "oq": "‘",
    "cq": "’",
}
_ROFF_ESCAPE = re.compile(r"\\(?:f(?:\[[^\]]*\]|\(..|.)|s[-+]?\d+|\*(?:\[[^\]]*\]|\(..|.)|\((..)|\[([^\]]*)\]|(.))")


def roff_to_text(roff: str) -> str:
    lines = []
    for line in roff.splitlines():
        if line.lstrip(".'").startswith('\\"'):  # a comment
            continue
        if line[:1] in ".'":
            name, _, args = line[1:].strip().partition(" ")
            if name not in _ROFF_TEXT_MACROS or not args.strip():
                continue
            line = args.replace('"', "")
        lines.append(_ROFF_ESCAPE.sub(_roff_escape, line))
    return "\n".join(lines).strip()


def _roff_escape(m: re.Match) -> str:
    name = m.group(1) or m.group(2)
    if name is not None:
        return _ROFF_CHARS.get(name, "")
    return {"-": "-", "e": "\\", " ": " ", "~": " ", "0": " ", ".": ".", "\\": "\\"}.get(m.group(3) or "", "")


def _stdlib_sources():
    """Standard-library .py files in sorted path order, pruning skipped folders while walking
    (site-packages alone can be far larger than the standard library)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test_"):
                yield Path(dirpath) / name


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _docstrings(path: Path) -> list[str]:
    text = _read_utf8(path)
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
        text = read_input_text(p, "text")
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
    path = input_file(path, "token-id")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{path}: not a numpy array file ({e})") from None
        if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f"{path}: expected a 1-D or 2-D integer array, got {arr.ndim}-D {arr.dtype}")
        seqs = [arr] if arr.ndim == 1 else list(arr)
    else:
        seqs = []
        for n, line in enumerate(read_input_text(path, "token-id").splitlines(), 1):
            if line.strip():
                try:
                    seqs.append(np.array([int(v) for v in line.split()], dtype=np.int64))
                except ValueError:
                    raise UserError(f"{path}:{n}: not a list of integer token ids") from None
    seqs = [np.asarray(s, dtype=np.int64) for s in seqs if len(s)]
    if not seqs:
        raise UserError(f"{path}: no token ids")
    return seqs
