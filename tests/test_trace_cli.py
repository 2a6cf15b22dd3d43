"""`engramsim trace` and `engramsim cache` end to end, on small text files."""

import json

import pytest

from tests.clikit import run_cli as run

TEXT = (
    "Engram adds conditional memory to a transformer. At a few layers every token looks up rows "
    "of huge hashed n-gram tables and fuses them into the hidden state through a gate. "
) * 40


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    a, b = d / "a.txt", d / "b.txt"
    a.write_text(TEXT)
    b.write_text(TEXT.upper() + " and then something else entirely, said the second document.")
    return a, b


@pytest.fixture(scope="module")
def saved_trace(text_files, tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "t.npz"
    r = run("trace", "--text", str(text_files[0]), "--text", str(text_files[1]), "--save", str(path), "--json")
    assert r.returncode == 0, r.stderr
    return path, json.loads(r.stdout)


def test_trace_json(saved_trace):
    path, stats = saved_trace
    assert path.is_file()
    assert sorted(stats["layers"]) == ["15", "2"]  # engram-27b's Engram layers
    layer = stats["layers"]["2"]
    assert layer["unique_decode"][0] == 16 and stats["n_sequences"] == 2
    assert "built-in word-level tokenizer" in stats["tokenizer"]
    # The same text upper-cased compresses to the same ids: the second document re-reads rows.
    assert layer["reuse_fraction"] > 0.5


def test_trace_table_shows_the_measured_figures(text_files, saved_trace, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    _, stats = saved_trace
    r = run("trace", "--text", str(text_files[0]), "--text", str(text_files[1]))
    assert r.returncode == 0, r.stderr
    for key, layer in stats["layers"].items():
        assert f"layer {key}: {layer['rows_in_table']:,} rows" in r.stdout
        assert f"{layer['n_accesses']:,} / {layer['n_distinct']:,}" in r.stdout
        one_token = next(
            line
            for line in r.stdout.splitlines()
            if line.startswith("│ 1 ") and f"{layer['unique_decode'][0]:,.0f}" in line
        )
        assert f"{layer['unique_decode'][0]:.2f}" in one_token  # rows per token at batch 1


def test_cache_from_saved_trace(saved_trace, tmp_path):
    path, stats = saved_trace
    png = tmp_path / "c.png"
    r = run("cache", "--trace", str(path), "--policy", "lru", "--policy", "static-topk", "--json", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    lru = out["hit_rate"]["lru"]
    assert lru == sorted(lru) and lru[0] == 0 and 0 < lru[-1] <= 1
    assert set(out["hit_rate"]) == {"lru", "static-topk"}
    # LRU replays every access of the first Engram layer; once every distinct row fits, each
    # re-read hits, so its top hit rate is the trace's re-read fraction.
    layer = stats["layers"]["2"]
    assert out["layer_id"] == 2 and out["accesses"]["lru"] == layer["n_accesses"]
    assert out["capacities_rows"][-1] >= layer["n_distinct"]
    assert lru[-1] == pytest.approx(layer["reuse_fraction"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["trace", "--text", "EMPTY"], "empty text"),
        (["trace", "--text", "A", "--tokenizer", "NOTJSON"], "not a Hugging Face tokenizer"),
        (["cache", "--trace", "TRACE", "--model", "deepseek-v4.1-flash"], "trace was built for"),
        (["cache", "--trace", "TRACE", "--layer", "7"], "--layer 7"),
        (["trace", "--ids", "IDS"], "out of range"),
    ],
)
def test_bad_input_is_one_line(args, message, text_files, saved_trace, tmp_path):
    empty, notjson, ids = tmp_path / "empty.txt", tmp_path / "tok.json", tmp_path / "ids.txt"
    empty.write_text("  \n")
    notjson.write_text('{"hello": 1}')
    ids.write_text("1 2 3 99999999\n")
    names = {"EMPTY": empty, "NOTJSON": notjson, "TRACE": saved_trace[0], "A": text_files[0], "IDS": ids}
    if "NOTJSON" in args:
        pytest.importorskip("tokenizers")
    r = run(*[str(names.get(a, a)) for a in args])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr and "Traceback" not in r.stderr
