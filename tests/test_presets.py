import pytest

from engramsim.engine import load_engine
from engramsim.errors import UserError
from engramsim.hardware import load_hardware
from engramsim.model import EngramSpec, load_model
from engramsim.presets import PRESET_DIRS, preset_names
from engramsim.workload import load_workload

ONE_BOX = {"apple-m3-ultra", "apple-m4-max", "dgx-spark", "rtx-pro-6000-ws"}


@pytest.mark.parametrize("name", sorted(set(preset_names("hardware")) - ONE_BOX))
def test_every_hardware_preset_loads_with_all_tiers(name):
    hw = load_hardware(name)
    assert hw.gpu.hbm_bw_Bps > 1e12 and hw.link.h2d_Bps > 1e10 and hw.cxl and hw.ssd


@pytest.mark.parametrize("name", sorted(ONE_BOX))
def test_one_box_presets_have_an_ssd_and_an_os_and_unified_ones_no_link(name):
    hw = load_hardware(name)
    assert hw.ssd and hw.os and hw.cxl is None
    assert (hw.link is None) == hw.unified == (name != "rtx-pro-6000-ws")
    # A unified pool's CPU side is the same memory as the GPU's.
    if hw.unified:
        assert hw.host.dram_bytes == pytest.approx(hw.gpu.hbm_bytes, rel=1e-3)
        assert hw.host.dram_bw_Bps == hw.gpu.hbm_bw_Bps


@pytest.mark.parametrize("name", preset_names("model"))
def test_every_model_preset_loads(name):
    m = load_model(name)
    assert m.backbone.total_params > 1e9 and (m.engram is None or m.engram.table_bytes > 1e9)


def test_required_hardware_and_model_presets_exist():
    assert {"h800", "h100", "h200", "b200", "gh200"} <= set(preset_names("hardware"))
    assert {"engram-27b", "engram-40b", "dense-4b-engram100b", "dense-8b-engram100b", "deepseek-v4.1-flash"} <= set(
        preset_names("model")
    )
    assert {"paper-table4", "poisson", "fixed"} <= set(preset_names("workload"))


def test_units_are_converted_to_si():
    hw = load_hardware("h800")
    assert hw.link.h2d_Bps == pytest.approx(55.3e9)
    assert hw.host.dram_latency_s == pytest.approx(115e-9)
    assert hw.gpu.hbm_bytes == 81559 * 2**20


def test_v41_flash_geometry():
    e = load_model("deepseek-v4.1-flash").engram
    assert e.layer_ids == (1, 14) and e.heads_per_layer == 24
    assert 180e9 < e.table_bytes < 220e9


def test_engram_spec_from_keywords_with_lists():
    s = EngramSpec(
        layer_ids=[1, 15],
        max_ngram_size=3,
        n_head_per_ngram=8,
        engram_vocab_size=[646400, 646400],
        seed=0,
        compressed_vocab_size=100000,
        compressed_pad_id=2,
    )
    assert s.layer_ids == (1, 15) and s.row_bytes == 128 and s.heads_per_layer == 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(engram_vocab_size=[10]), "one entry per order"),
        (dict(layer_ids=[1, 1]), "distinct"),
        (dict(compressed_pad_id=10**9), "compressed_pad_id"),
    ],
)
def test_engram_spec_rejects_bad_values(kwargs, message):
    base = dict(layer_ids=[1], max_ngram_size=3, n_head_per_ngram=8, engram_vocab_size=[1000, 1000])
    with pytest.raises(UserError, match=message):
        EngramSpec(**(base | kwargs))


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_malformed_toml_names_the_file(tmp_path):
    with pytest.raises(UserError, match="malformed TOML"):
        load_hardware(write(tmp_path, "bad.toml", "[gpu\nname="))


def test_negative_value_names_file_key_and_range(tmp_path):
    text = (load_hardware("h800").source.read_text()).replace("hbm_bw_GBps = 3350", "hbm_bw_GBps = -1")
    with pytest.raises(UserError, match=r"bad\.toml \[gpu\]: 'hbm_bw_GBps' must be a number in \(0, 1000000\], got -1"):
        load_hardware(write(tmp_path, "bad.toml", text))


def test_missing_key_is_named(tmp_path):
    text = load_hardware("h800").source.read_text().replace("hbm_MiB = 81559\n", "")
    with pytest.raises(UserError, match="missing key 'hbm_MiB'"):
        load_hardware(write(tmp_path, "bad.toml", text))


def test_unknown_key_is_rejected(tmp_path):
    text = load_model("engram-27b").source.read_text().replace("[engram]", "[engram]\nheads = 3")
    with pytest.raises(UserError, match="unknown key 'heads'"):
        load_model(write(tmp_path, "m.toml", text))


def test_unknown_preset_lists_known_ones():
    with pytest.raises(UserError, match="unknown hardware preset 'h9000'.*h800"):
        load_hardware("h9000")


def test_zero_batch_limit_is_rejected(tmp_path):
    text = (PRESET_DIRS["engine"] / "nano-vllm.toml").read_text().replace("max_num_seqs = 512", "max_num_seqs = 0")
    with pytest.raises(UserError, match=r"max_num_seqs' must be a whole number in \(0, \d+\], got 0"):
        load_engine(write(tmp_path, "e.toml", text))
    over = (PRESET_DIRS["workload"] / "fixed.toml").read_text() + "\n[engine]\nmax_num_seqs = 0\n"
    with pytest.raises(UserError, match=r"max_num_seqs' must be a whole number in \(0, \d+\], got 0"):
        load_workload(write(tmp_path, "w.toml", over))
