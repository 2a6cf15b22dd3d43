"""Address traces from text, their statistics, trace files and the RowModels built on them."""

import dataclasses
import json
import math

import numpy as np
import pytest

from engramsim import engram
from engramsim.addresses import build as address_build
from engramsim.addresses.build import build_trace
from engramsim.addresses.stats import analyze, zipf_fit
from engramsim.addresses.store import load_stats, load_trace, save_trace
from engramsim.corpus import Corpus, read_token_ids
from engramsim.errors import UserError
from engramsim.model import Backbone, EngramSpec, ModelSpec
from engramsim.rows import trace as row_trace
from engramsim.rows.load import load_row_model
from engramsim.rows.trace import TraceRows, default_row_model
from engramsim.rows.uniform import UniformRows
from engramsim.rows.zipf import ZipfRows
from engramsim.rows.zipf_fit import zipf_row_model
from engramsim.tokenize import Compression, WordTokenizer, normalize_key

SPEC = EngramSpec(
    layer_ids=[1, 3],
    max_ngram_size=3,
    n_head_per_ngram=4,
    engram_vocab_size=[50000, 50000],
    seed=0,
    compressed_vocab_size=99546,
    compressed_pad_id=2,
)
BACKBONE = Backbone(
    n_layers=4, hidden_size=64, vocab_size=1000, n_heads=4, head_dim=16, n_kv_heads=4, intermediate_size=128
)
MODEL = ModelSpec(name="tiny", description="", backbone=BACKBONE, engram=SPEC)

WORDS = (
    "the memory of a model is a table of rows that the hash of recent tokens selects at every "
    "layer where engram reads and the gate decides how much of it to keep"
).split()


def _random_text(n_docs=40, words=120, seed=0):
    rng = np.random.default_rng(seed)
    # Zipf-weighted word choice, like real text.
    p = 1 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    return Corpus(tuple(" ".join(rng.choice(WORDS, size=words, p=p)) for _ in range(n_docs)), "test text")


@pytest.fixture(scope="module")
def trace_and_stats():
    tr = build_trace(SPEC, corpus=_random_text())
    return tr, analyze(tr)


def test_rows_are_the_exact_hash_of_the_compressed_stream(trace_and_stats):
    tr, _ = trace_and_stats
    tok = WordTokenizer.train(list(_random_text().documents))
    first = tok.compression()(tok.encode([_random_text().documents[0]])[0])
    n = len(first)
    np.testing.assert_array_equal(tr.ids[:n], first)
    np.testing.assert_array_equal(tr.rows(3)[:n], engram.row_ids(first, np.array([0]), tr.spec, 3))
    assert tr.spec.compressed_vocab_size == tok.compression().size  # the tokenizer's, as the reference


def test_decode_steps_have_no_more_rows_than_lookups(trace_and_stats):
    _, st = trace_and_stats
    ls = st.layers[1]
    assert ls.unique_decode[0] == SPEC.heads_per_layer  # one token reads one row per head
    assert np.all(ls.unique_decode <= ls.batch_tokens * SPEC.heads_per_layer)
    assert np.all(np.diff(ls.unique_decode) > 0)
    # a 30-word vocabulary repeats n-grams: big steps share many rows
    assert ls.unique_decode[-1] < 0.5 * ls.batch_tokens[-1] * SPEC.heads_per_layer


def test_row_model_interpolates_and_bounds(trace_and_stats, tmp_path):
    tr, st = trace_and_stats
    path = save_trace(tmp_path / "t.npz", tr, st)
    rm = load_row_model(path, MODEL)
    ls = st.layers[1]
    b = int(ls.batch_tokens[3])
    assert rm.unique_rows(b, 1) == pytest.approx(ls.unique_decode[3])
    values = [rm.unique_rows(n, 1) for n in (1, 3, 10, 100, 10**4, 10**6)]
    assert values == sorted(values) and values[-1] <= engram.layer_rows(SPEC, 1)
    hits = [rm.hit_rate(c, 1) for c in (0, 1, 10, 100, 10**4, 10**5)]
    assert hits[0] == 0 and hits == sorted(hits) and rm.hit_rate(10**9, 1) == 1.0
    assert "trace t.npz" in rm.source and "tokens" in rm.source


def test_repetitive_text_fetches_fewer_rows_than_uniform_hashing():
    repeated = Corpus(tuple(["the cat sat on the mat and the dog sat on the log"] * 200), "repeated")
    st = analyze(build_trace(SPEC, corpus=repeated))
    rm = TraceRows(stats=st, heads_per_layer=SPEC.heads_per_layer, source="t")
    uniform = UniformRows(SPEC)
    assert rm.unique_rows(256, 1) < 0.2 * uniform.unique_rows(256, 1)
    assert rm.hit_rate(1000, 1) > 0.9 > uniform.hit_rate(1000, 1)


def test_save_load_roundtrip(trace_and_stats, tmp_path):
    tr, st = trace_and_stats
    path = save_trace(tmp_path / "t", tr, st)
    assert path.suffix == ".npz"
    back = load_stats(path)
    assert back.n_tokens == st.n_tokens and back.geometry == st.geometry
    np.testing.assert_array_equal(back.layers[3].hit_step, st.layers[3].hit_step)
    again = load_trace(path, SPEC)
    np.testing.assert_array_equal(again.rows(1), tr.rows(1))
    # Every statistic survives the file, and --json prints the same figures before and after.
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(st.to_dict(), sort_keys=True)
    assert back.to_dict()["layers"]["1"]["unique_decode"] == st.layers[1].unique_decode.tolist()


def test_trace_for_another_model_is_rejected(trace_and_stats, tmp_path):
    tr, st = trace_and_stats
    path = save_trace(tmp_path / "t.npz", tr, st)
    other = dataclasses.replace(MODEL, engram=dataclasses.replace(SPEC, n_head_per_ngram=8))
    with pytest.raises(UserError, match="n_head_per_ngram"):
        load_row_model(path, other)


def test_not_a_trace_file(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_text("hello")
    with pytest.raises(UserError, match="not an engramsim trace"):
        load_row_model(bad, MODEL)


def test_default_row_model_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGRAMSIM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(address_build, "default_corpus", lambda: _random_text(n_docs=10))
    first = default_row_model(MODEL)
    monkeypatch.setattr(row_trace, "build_trace", lambda *a, **k: pytest.fail("rebuilt a cached trace"))
    second = default_row_model(MODEL)
    assert first.unique_rows(64, 1) == second.unique_rows(64, 1)
    assert list(tmp_path.rglob("*.npz"))


def test_zipf_row_model():
    z = zipf_row_model(MODEL, alpha=1.1, support=40000)
    assert z.unique_rows(1, 1) == pytest.approx(SPEC.heads_per_layer, rel=1e-3)
    u = [z.unique_rows(n, 1) for n in (1, 10, 100, 1000)]
    assert u == sorted(u) and u[-1] < 1000 * SPEC.heads_per_layer
    h = [z.hit_rate(c, 1) for c in (0, 100, 10000, 10**6)]
    assert h[0] == 0 and h == sorted(h) and h[-1] == pytest.approx(1.0)
    steeper = zipf_row_model(MODEL, alpha=1.5, support=40000)
    assert steeper.hit_rate(100, 1) > z.hit_rate(100, 1)
    with pytest.raises(UserError, match="one per n-gram order"):
        zipf_row_model(MODEL, alpha=[1, 1, 1], support=10)


def test_zipf_fit_recovers_exponent():
    rng = np.random.default_rng(0)
    # Every head reads value r with P(X >= r) = 1/r, so frequency ~ r^-2 and rank = value:
    # the fitted rank-frequency exponent must come out near 2 for both orders.
    values = np.minimum((1 / rng.random(400000)).astype(np.int64), 10**6)
    rows = np.repeat(values[:, None], SPEC.heads_per_layer, axis=1)
    alpha, _ = zipf_fit(rows, SPEC)
    assert alpha == pytest.approx([2.0, 2.0], abs=0.15)


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="no tokens"):
        build_trace(SPEC, corpus=Corpus(("",), "empty"))
    ids = tmp_path / "ids.txt"
    ids.write_text(f"1 2 3\n4 {SPEC.compressed_vocab_size}\n")
    with pytest.raises(UserError, match="out of range"):
        build_trace(SPEC, token_id_files=[ids])
    ids.write_text("1 2 x\n")
    with pytest.raises(UserError, match="not a list of integer"):
        read_token_ids(ids)
    notjson = tmp_path / "tok.json"
    notjson.write_text("{not a tokenizer")
    pytest.importorskip("tokenizers")
    with pytest.raises(UserError, match="not a Hugging Face tokenizer"):
        build_trace(SPEC, corpus=_random_text(), tokenizer_path=notjson)


def test_token_id_files_are_compressed_ids(tmp_path):
    f = tmp_path / "ids.npy"
    np.save(f, np.array([[5, 6, 7, 8], [9, 10, 11, 12]]))
    tr = build_trace(SPEC, token_id_files=[f])
    np.testing.assert_array_equal(tr.rows(1)[4:], engram.row_ids(np.array([9, 10, 11, 12]), np.array([0]), SPEC, 1))


def test_compression_merges_normalized_variants():
    comp = Compression.from_keys([normalize_key(t) or t for t in ["Hello", "hello", " HELLO", "Héllo", " ", "\n\n"]])
    # Case, accents and surrounding whitespace are normalized away; a whitespace-only token
    # becomes one space.
    np.testing.assert_array_equal(comp.lookup, [0, 0, 0, 0, 1, 1])
    with pytest.raises(UserError, match="out of range"):
        comp(np.array([6]))


def test_normalizer_matches_reference():
    pytest.importorskip("tokenizers")
    from engramsim.tokenize import reference_normalizer

    norm = reference_normalizer()
    for s in ["Hello  World", " ", "\t\n", "Café", "ﬁne", " The", "ÅNGSTRÖM ", "x\u0301", "  a b ", "ǅ", "Ⅻ"]:
        assert normalize_key(s) == norm.normalize_str(s), s


def test_hf_tokenizer_compression(tmp_path):
    tk = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "pad": 2, "Cat": 3, "cat": 4, "CAT": 5, "dog": 6, "Dög": 7}
    tok = tk.Tokenizer(tk.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    from engramsim.tokenize import HFTokenizer

    comp = HFTokenizer(path).compression()
    assert comp.lookup[3] == comp.lookup[4] == comp.lookup[5] and comp.lookup[6] == comp.lookup[7]
    assert comp.size == 5
    tr = build_trace(SPEC, corpus=Corpus(("Cat dog cat DOG", "dog Dög"), "t"), tokenizer_path=path)
    assert tr.spec.compressed_vocab_size == 5 and tr.n_tokens == 6


@pytest.fixture(scope="module")
def default_corpus_fit():
    """The default model on the default corpus, and the Zipf model fitted to its measurements."""
    from engramsim.model import load_model

    model = load_model("dense-4b-engram100b")
    stats = analyze(build_trace(model.engram))
    return model, stats, zipf_row_model(model, stats=stats)


def test_zipf_fit_reproduces_the_trace_it_was_fitted_to(default_corpus_fit):
    # Tolerances: distinct rows per decode step within 15% at every measured batch size, and
    # static top-K hit rate within 25% wherever the trace measured at least 1% (the fitted
    # curve is a two-parameter-per-order Zipf; real n-gram counts are not exactly Zipf).
    model, stats, z = default_corpus_fit
    layer = model.engram.layer_ids[0]
    ls = stats.layers[layer]
    unique = np.array([z.unique_rows(int(b), layer) for b in ls.batch_tokens])
    np.testing.assert_allclose(unique, ls.unique_decode, rtol=0.15)
    keep = ls.hit_step >= 0.01
    hits = np.array([z.hit_rate(int(c), layer) for c in ls.capacities[keep]])
    np.testing.assert_allclose(hits, ls.hit_step[keep], rtol=0.25)
    # The population is bigger than what the trace saw: the long tail it never read.
    assert all(s > seen for s, seen in zip(z.support, ls.zipf_support))
    assert z.source.startswith("Zipf fit of") and "s=" in z.source and "profile" in z.source


def test_zipf_extrapolation_to_bigger_tables_never_raises_hit_rates(default_corpus_fit):
    model, _, z = default_corpus_fit
    layer = model.engram.layer_ids[0]
    caps = [10**3, 10**5, 10**6, 10**7, 10**8]
    curves = []
    for vocab in (10**4, 10**5, 10**6, 10**8, 10**9):  # rows per head table, smallest first
        spec = dataclasses.replace(model.engram, engram_vocab_size=(vocab,) * len(model.engram.engram_vocab_size))
        bigger = dataclasses.replace(z, spec=spec)
        curves.append([bigger.hit_rate(c, layer) for c in caps])
    curves = np.array(curves)
    assert np.all(np.diff(curves, axis=0) <= 1e-12)
    assert np.all(np.diff(curves, axis=1) >= 0)  # and more cache never hurts


def test_load_row_model_zipf_fits_the_default_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGRAMSIM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(address_build, "default_corpus", lambda: _random_text(n_docs=30))
    z = load_row_model("zipf", MODEL)
    assert isinstance(z, ZipfRows) and z.train_tokens is not None
    assert z.source.startswith("Zipf fit of test text") and "2-gram s=" in z.source
    assert z.unique_rows(1, 1) == pytest.approx(SPEC.heads_per_layer, rel=1e-3)


def test_nelder_mead_finds_the_minimum_scipy_finds():
    """The hand-written simplex (kept instead of a scipy dependency, see rows/zipf_fit.py)
    lands where scipy's Nelder-Mead does, on a smooth and on a kinked, boxed objective."""
    optimize = pytest.importorskip("scipy.optimize")
    from engramsim.optimize import nelder_mead

    def smooth(x):
        return float((x[0] - 0.7) ** 2 + 3 * (x[1] + 0.2) ** 2 + 0.5 * (x[2] - 2.0) ** 2)

    def kinked(x):
        return float(abs(x[0] - 1.3) + 2 * abs(x[1] - 0.4)) if np.all(x >= 0) else math.inf

    for f, x0 in ((smooth, [0.0, 0.0, 0.0]), (kinked, [0.5, 1.0])):
        ours = nelder_mead(f, np.array(x0, dtype=float), step=0.15, iters=400, tol=1e-10)
        ref = optimize.minimize(f, x0, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10}).x
        np.testing.assert_allclose(ours, ref, atol=1e-3)
