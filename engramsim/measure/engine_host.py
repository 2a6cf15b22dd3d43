"""Host-side costs of a Python engine step, measured on this CPU with a stand-in for nano-vLLM.

nano-vLLM (GeeeekExplorer/nano-vllm, nanovllm/engine/{scheduler,model_runner,llm_engine}.py) does,
for every sequence of a decode step, a few dozen Python operations: the scheduler checks and
extends its KV blocks, `prepare_decode` appends its last token, position, context length, slot
and block table to lists that become tensors, and `postprocess` appends the sampled token and
checks whether it finished. A prefill step does per-token work instead: it extends token,
position and slot lists by the prompt. An Engram engine also collects, per sequence, the last
max_ngram_size tokens that the n-gram hash reads. This module times a stand-in with the same shape of work
(not nano-vLLM's code) and the dispatch cost of one eager PyTorch operator, so an engine preset
can state per-sequence, per-token and per-launch host costs as measurements of a named CPU.

Run: `python -m engramsim.measure.engine_host` (prints JSON; about 5 s).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import deque

BLOCK = 256


class _Seq:
    def __init__(self, sid: int, prompt: int):
        self.id, self.token_ids = sid, list(range(prompt))
        self.num_tokens, self.last_token = prompt, prompt - 1
        self.block_table = list(range(sid * 8, sid * 8 + -(-prompt // BLOCK)))
        self.max_tokens, self.completion = 1 << 30, 0

    def __len__(self):
        return self.num_tokens


def _decode_step(running: deque, free: list):
    """Schedule, prepare inputs and post-process one decode step, per sequence."""
    batch = []
    while running:
        seq = running.popleft()
        if len(seq) % BLOCK == 1 and free:
            seq.block_table.append(free.pop())
        batch.append(seq)
    input_ids, positions, context_lens, slots = [], [], [], []
    for seq in batch:
        input_ids.append(seq.last_token)
        positions.append(len(seq) - 1)
        context_lens.append(len(seq))
        slots.append(seq.block_table[-1] * BLOCK + (len(seq) - 1) % BLOCK)
    width = max(len(s.block_table) for s in batch)
    tables = [s.block_table + [-1] * (width - len(s.block_table)) for s in batch]
    temps = [1.0 for _ in batch]
    sampled = list(range(len(batch)))
    for seq, tok in zip(batch, sampled):
        seq.token_ids.append(tok)
        seq.last_token, seq.num_tokens, seq.completion = tok, seq.num_tokens + 1, seq.completion + 1
        if seq.completion < seq.max_tokens:
            running.append(seq)
    return input_ids, positions, context_lens, slots, tables, temps


def _prefill_inputs(seqs: list[_Seq]):
    input_ids, positions, slots = [], [], []
    for seq in seqs:
        input_ids.extend(seq.token_ids)
        positions.extend(range(len(seq)))
        for i, block in enumerate(seq.block_table):
            start = block * BLOCK
            slots.extend(range(start, start + min(BLOCK, len(seq) - i * BLOCK)))
    return input_ids, positions, slots


def _median_s(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_seq_s(seqs: int = 512, steps: int = 20) -> float:
    """Python host time per sequence per decode step (tensor conversion excluded)."""
    running = deque(_Seq(i, 300 + i) for i in range(seqs))
    free = list(range(10**6))
    return _median_s(lambda: [_decode_step(running, free) for _ in range(steps)]) / (seqs * steps)


def per_token_s(tokens_per_seq: int = 1024, seqs: int = 16) -> float:
    """Python host time per prompt token of a prefill step (tensor conversion excluded)."""
    batch = [_Seq(i, tokens_per_seq) for i in range(seqs)]
    return _median_s(lambda: _prefill_inputs(batch)) / (tokens_per_seq * seqs)


def engram_context_s(seqs: int = 512, window: int = 3) -> float:
    """Per sequence: collect each sequence's last `window` tokens (max_ngram_size) into the
    array the n-gram hash reads, as an Engram engine must before hashing a decode step."""
    import numpy as np

    tokens = [list(range(300 + i)) for i in range(seqs)]
    return _median_s(lambda: np.array([t[-window:] for t in tokens], dtype=np.int64), repeats=25) / seqs


def tensor_s_per_element() -> float | None:
    """torch.tensor(list of ints): the list-to-tensor conversion of every input, per element."""
    try:
        import torch
    except ImportError:
        return None
    data = list(range(1 << 16))
    return _median_s(lambda: torch.tensor(data, dtype=torch.int64)) / len(data)


def dispatch_s(ops: int = 20000) -> float | None:
    """Host cost of one eager PyTorch operator on tiny tensors (dispatcher and Python binding,
    without the CUDA driver's launch, which the GPU preset's kernel_launch_us adds)."""
    try:
        import torch
    except ImportError:
        return None
    a, b, c = torch.ones(8), torch.ones(8), torch.empty(8)

    def run():
        for _ in range(ops):
            torch.add(a, b, out=c)

    return _median_s(run) / ops


def measure() -> dict:
    seq_s, tok_s, elem_s = per_seq_s(), per_token_s(), tensor_s_per_element()
    # Inputs become tensors: 5 values per sequence in decode (ids, positions, context lengths,
    # slots, one block-table row of ~4 entries counted as 1), 3 per token in prefill.
    return {
        "seq_host_us": 1e6 * (seq_s + 5 * (elem_s or 0.0)),
        "token_host_ns": 1e9 * (tok_s + 3 * (elem_s or 0.0)),
        "op_dispatch_us": 1e6 * dispatch_s() if elem_s is not None else None,
        "engram_seq_host_ns": 1e9 * engram_context_s(),
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
