"""The offline default corpus: English docs, Python source and Chinese man pages."""

import ast
import gzip

import pytest

from engramsim.corpus import default_corpus, default_corpus_key, roff_to_text
from engramsim.errors import UserError
from engramsim.tokenize import WordTokenizer

ROFF = r""".\" a comment
.TH LS 1 2022年9月 "GNU coreutils 9.1" 用户命令
.SH 名称
ls \- 列出目录内容
.SH 概述
\fBls\fP [\fI\,选项\/\fP]...
.TP
\fB\-a\fP, \fB\-\-all\fP
不要忽略以点号\(lq.\(rq起始的条目
.br
.B "\-\-help"
"""


def test_roff_markup_is_stripped():
    assert roff_to_text(ROFF).splitlines() == [
        "名称",
        "ls - 列出目录内容",
        "概述",
        "ls [选项]...",
        "-a, --all",
        "不要忽略以点号“.”起始的条目",
        "--help",
    ]


def _man_root(tmp_path, pages):
    for i, text in enumerate(pages):
        d = tmp_path / "zh_CN" / "man1"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"p{i}.1.gz").write_bytes(gzip.compress(text.encode()))
    return tmp_path / "zh_CN"


def test_parts_and_their_descriptions(tmp_path):
    root = _man_root(tmp_path, [ROFF, ".SH 描述\n打印文件内容\n"])
    en = default_corpus(("en",), zh_root=root)
    full = default_corpus(zh_root=root)
    assert [d for d in full.documents if d in set(en.documents)] == list(en.documents)
    pages = [roff_to_text(ROFF), "描述\n打印文件内容"]
    zh = [d for d in full.documents if d in pages]
    assert zh == pages
    # Interleaved: each half of the corpus holds one of the two Chinese pages.
    half = len(full.documents) // 2
    assert full.documents.index(zh[0]) < half <= full.documents.index(zh[1])
    assert "zh: Debian manpages-zh (2 Simplified Chinese man pages" in full.description
    code = default_corpus(("code",), zh_root=root)
    code_docs = [d for d in code.documents if d not in set(en.documents)]
    assert "code: Python" in code.description
    for d in code_docs:
        ast.parse(d)  # whole Python source files
    # The code part starts after the files whose docstrings `en` took: no text in both.
    en_text = set(en.documents)
    assert code_docs and not any(d.strip() in en_text for d in code_docs)


def test_absent_chinese_part_is_said(tmp_path):
    c = default_corpus(("en", "zh"), zh_root=tmp_path / "none")
    assert "zh: absent" in c.description and "apt-get install manpages-zh" in c.description
    with pytest.raises(UserError, match="unknown corpus part 'fr'"):
        default_corpus(("fr",))


def test_corpus_key_follows_the_installed_pages(tmp_path):
    root = _man_root(tmp_path, [ROFF])
    before = default_corpus_key(root)
    _man_root(tmp_path, [ROFF, "more"])
    assert default_corpus_key(root) != before


def test_word_tokenizer_splits_chinese_into_characters():
    tok = WordTokenizer.train(["列出目录 列出文件 ls -a"] * 3)
    assert {" 列", "出", "目", "录", "文", "件"} <= set(tok.pieces)


def test_interleave_spreads_each_part_by_its_bytes():
    from engramsim.corpus import interleave

    assert interleave([["a" * 10, "b" * 10], ["x" * 30]]) == ["a" * 10, "x" * 30, "b" * 10]
    assert interleave([["a", "b", "c"]]) == ["a", "b", "c"]
