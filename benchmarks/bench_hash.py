"""Engram hash throughput (tokens/s) for the demo (orders 2-3) and a 4-gram V4.1-Flash-like spec.

    python benchmarks/bench_hash.py [--tokens N] [--repeats R]

Times `hash_ngrams` on random compressed ids [B=64, T=N/64] after one warm-up call; prints the
median of R runs as tokens/s per layer (one token = (N-1)*K head indices).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from engramsim.engram import hash_ngrams
from engramsim.model import EngramSpec

SPECS = {
    "demo (2-3-grams x 8 heads)": EngramSpec(
        layer_ids=[1, 15],
        max_ngram_size=3,
        n_head_per_ngram=8,
        engram_vocab_size=[646400, 646400],
        compressed_pad_id=2,
        compressed_vocab_size=99546,
    ),
    "4-gram (2-4-grams x 8 heads, 16M rows/head)": EngramSpec(
        layer_ids=[1, 14],
        max_ngram_size=4,
        n_head_per_ngram=8,
        engram_vocab_size=[16_000_000] * 3,
        compressed_pad_id=2,
        compressed_vocab_size=99546,
        n_embed_per_ngram=2048,
    ),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1 << 20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    B = 64
    x = np.random.default_rng(0).integers(0, 99546, size=(B, max(1, args.tokens // B)))
    for name, spec in SPECS.items():
        hash_ngrams(x, spec, spec.layer_ids[0])  # warm-up: primes, multipliers, page faults
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            hash_ngrams(x, spec, spec.layer_ids[0])
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(
            f"{name}: {x.size / med / 1e6:.2f} M tokens/s per layer "
            f"({x.size * spec.heads_per_layer / med / 1e6:.1f} M indices/s; "
            f"median of {args.repeats}, spread {min(times) * 1e3:.0f}-{max(times) * 1e3:.0f} ms)"
        )


if __name__ == "__main__":
    main()
