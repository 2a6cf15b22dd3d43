"""Pure cost functions of the fetch path, on hand-computed values."""

from dataclasses import replace

import pytest

from engramsim import costs
from engramsim.hardware import load_hardware
from engramsim.iopolicy import IOPolicy
from engramsim.sim.scheduler import Seq


def test_ssd_iops_is_bounded_by_the_rating_and_by_queue_depth_over_latency():
    ssd = load_hardware("h800").ssd
    rated = ssd.devices * ssd.read_iops
    by_queue = ssd.devices * ssd.queue_depth / ssd.latency_s
    assert costs.ssd_iops(ssd) == pytest.approx(min(rated, by_queue))
    shallow = replace(ssd, queue_depth=1, latency_s=100e-6, devices=2)
    assert costs.ssd_iops(shallow) == pytest.approx(2 * 1 / 100e-6)  # 20k IOPS, whatever the rating


def test_one_row_from_ssd_reads_one_whole_page_into_dram():
    ssd = load_hardware("h800").ssd
    read = costs.ssd_read_plan(ssd, None, IOPolicy(), 264, rows=100)
    assert (read.ssd_bytes, read.dram_bytes, read.cpu_s) == (ssd.page_bytes, ssd.page_bytes, 0.0)
    assert read.in_flight == float("inf") and read.op_s == ssd.latency_s  # the SSD queues set the pace


@pytest.mark.parametrize(
    "hbm, both, expected",
    [
        (0.0, 0.4, 0.4),  # no HBM cache: the DRAM cache's own hit rate
        (0.5, 0.75, 0.5),  # half of the misses of a 50% HBM cache
        (0.3, 0.3, 0.0),  # a DRAM cache that adds nothing
        (1.0, 1.0, 0.0),  # the HBM cache already holds everything
    ],
)
def test_dram_cache_hit_rate_is_the_share_of_hbm_misses(hbm, both, expected):
    assert costs.dram_cache_hit_rate(hbm, both) == pytest.approx(expected)


def test_batch_shape_of_prefill_and_decode():
    seqs = [Seq(0, 0.0, 3, 1), Seq(1, 0.0, 5, 1)]
    pre = costs.batch_shape(seqs, prefill=True)
    assert (pre.tokens, pre.seqs, pre.attn_pairs, pre.kv_read_tokens) == (8, 2, 3 * 4 / 2 + 5 * 6 / 2, 0.0)
    dec = costs.batch_shape(seqs, prefill=False)
    assert (dec.tokens, dec.seqs, dec.attn_pairs, dec.kv_read_tokens) == (2, 2, 8, 8)
