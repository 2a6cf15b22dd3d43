"""Continuous batching in the style of nano-vLLM's Scheduler (nanovllm/engine/scheduler.py).

Plain Python, no time: it decides which sequences run in the next step. A step is either a
prefill of newly admitted prompts (whole prompts, up to max_num_batched_tokens) or a decode of
every running sequence. KV memory is counted in blocks; when a decode cannot get a block, the
most recently admitted sequence is preempted and later recomputed, as nano-vLLM does.
"""

from __future__ import annotations

import itertools
from collections import deque

from engramsim.workload import Engine


class Seq:
    __slots__ = (
        "id",
        "arrival_s",
        "prompt_len",
        "max_out",
        "out",
        "blocks",
        "finish_s",
        "token_s",
        "credit",
        "computed",
        "mark",
        "phase",
        "stamp",
    )

    def __init__(self, sid: int, arrival_s: float, prompt_len: int, max_out: int):
        self.id = sid
        self.arrival_s = arrival_s
        self.prompt_len = prompt_len
        self.max_out = max_out
        self.out = 0  # tokens generated so far
        self.blocks = 0  # KV blocks held
        self.finish_s = -1.0
        # When each step that gave it tokens ended (a step of speculative decoding may give
        # several): one append per step is all the hot loop does; the gaps come later.
        self.token_s: list[float] = []
        self.credit = 0.0  # speculative decoding: expected tokens not yet emitted
        self.computed = 0  # chunked prefill: tokens of the prompt (+ recompute) in the KV cache
        # LazyScheduler's bookkeeping: the decode steps counted when it went lazy (-1: it is
        # not), its step number mod the block size at which it needs a block, its admission.
        self.mark = -1
        self.phase = 0
        self.stamp = 0

    def __len__(self):
        return self.prompt_len + self.out

    @property
    def first_token_s(self) -> float:
        return self.token_s[0] if self.token_s else -1.0

    @property
    def itl_s(self) -> list[float]:
        """Gaps between consecutive tokens (vLLM's inter-token latency)."""
        t = self.token_s
        return [b - a for a, b in zip(t, t[1:])]


class Scheduler:
    tracks_context = True  # see decode_context; a subclass that reshapes `running` turns it off

    def __init__(self, engine: Engine, kv_blocks: int):
        self.engine = engine
        self.block = engine.kv_block_tokens
        self.free_blocks = kv_blocks
        self.per_decode = engine.tokens_per_decode  # expected tokens a decode step emits per sequence
        self.waiting: deque[Seq] = deque()
        self.running: deque[Seq] = deque()
        self.preemptions = 0
        self.context_tokens = 0  # sum of len() over `running`, kept as they change

    def add(self, seq: Seq):
        self.waiting.append(seq)

    def idle(self) -> bool:
        return not self.waiting and not self.running

    def schedule(self) -> tuple[list[Seq], bool]:
        """The next batch and whether it is a prefill; an empty list when nothing can run."""
        batch = self._admit()
        if batch:
            return batch, True
        return self._decode(), False

    def peek_prefill(self) -> list[Seq]:
        """The prompts the next prefill step would admit, if nothing changes before it: the
        waiting queue's head, within the sequence, token and KV-block budgets."""
        batch, tokens, blocks = [], 0, self.free_blocks
        limit = min(self.engine.max_num_seqs, self.engine.max_prefill_seqs or self.engine.max_num_seqs)
        for seq in self.waiting:
            need = self._blocks_for(seq)
            if len(batch) >= limit or tokens + len(seq) > self.engine.max_num_batched_tokens or need > blocks:
                break
            blocks -= need
            tokens += len(seq)
            batch.append(seq)
        return batch

    def _blocks_for(self, seq: Seq) -> int:
        return -(-len(seq) // self.block)

    def _admit(self) -> list[Seq]:
        batch = self.peek_prefill()
        for seq in batch:
            seq.blocks = self._blocks_for(seq)
            self.free_blocks -= seq.blocks
            self.context_tokens += len(seq)
            self.running.append(self.waiting.popleft())
        return batch

    def _decode(self) -> list[Seq]:
        """Every running sequence (up to max_num_seqs) decodes one token. When the free blocks
        cover every new block this step needs, no one is preempted and the batch is simply the
        head of the queue: that common case skips the per-sequence loop below, with the same
        outcome (tests/test_scheduler.py compares the two)."""
        n = min(len(self.running), self.engine.max_num_seqs)
        head = list(self.running) if n == len(self.running) else list(itertools.islice(self.running, n))
        if self.engine.spec_tokens:  # drafts: a step may need several new blocks per sequence
            needs = [(q, self._decode_need(q)) for q in head]
            if sum(need for _, need in needs) > self.free_blocks:
                return self._decode_stepwise()
            for seq, need in needs:
                seq.blocks += need
                self.free_blocks -= need
            return head
        block = self.block
        growing = head if block == 1 else [q for q in head if (q.prompt_len + q.out) % block == 1]
        if len(growing) > self.free_blocks:
            return self._decode_stepwise()
        for seq in growing:
            seq.blocks += 1
        self.free_blocks -= len(growing)
        return head

    def _decode_stepwise(self) -> list[Seq]:
        """One sequence at a time, preempting the newest while a sequence cannot get a block.
        A full KV cache runs this every step, so it visits only the sequences that need a new
        block: the ones before such a sequence take nothing, and the ones after stay as they
        are unless preempted from the tail (tests/test_scheduler.py checks it against the plain
        loop)."""
        running, block, spec, limit = self.running, self.block, self.engine.spec_tokens, self.engine.max_num_seqs
        seqs = list(running)
        end = len(seqs)  # seqs[end:] have been preempted
        needing = [i for i, q in enumerate(seqs) if -(-(q.prompt_len + q.out + spec) // block) > q.blocks]
        for i in needing:
            if i >= end or i >= limit:
                break  # the batch filled up (or ran out) before this sequence
            seq = seqs[i]
            need = -(-(seq.prompt_len + seq.out + spec) // block) - seq.blocks
            while self.free_blocks < need:
                if end - 1 > i:
                    end -= 1
                    self._preempt(seqs[end])
                else:
                    self._preempt(seq)
                    end = i
                    break
            else:
                self.free_blocks -= need
                seq.blocks += need
        if end < len(seqs):
            self.running = deque(seqs[:end])
        return seqs[: min(end, limit)]

    def _decode_need(self, seq: Seq) -> int:
        """New KV blocks a decode step needs: its blocks cover the len - 1 cached tokens, and
        the step caches its last token plus the drafted ones."""
        return max(0, -(-(len(seq) + self.engine.spec_tokens) // self.block) - seq.blocks)

    def _can_append(self, seq: Seq) -> bool:
        return self.free_blocks >= self._decode_need(seq)

    def _preempt(self, seq: Seq):
        self.context_tokens -= len(seq)
        self.preemptions += 1
        self.free_blocks += seq.blocks
        seq.blocks = 0
        seq.computed = 0
        self.waiting.appendleft(seq)

    def finish_step(self, batch: list[Seq], now_s: float, prefill: bool = True) -> list[Seq]:
        """Every sequence in the batch gains its tokens (one after a prefill; after a decode,
        as many as speculative decoding accepts); return those that completed."""
        if prefill or self.per_decode == 1.0:
            self.context_tokens += len(batch)
            return self._release(self._one_token_each(batch, now_s), now_s)
        done = []
        for seq in batch:
            before = seq.out
            seq.out = min(seq.max_out, seq.out + self._accepted(seq))
            self.context_tokens += seq.out - before
            seq.token_s.append(now_s)
            if seq.out >= seq.max_out:
                done.append(seq)
        return self._release(done, now_s)

    @staticmethod
    def _one_token_each(batch: list[Seq], now_s: float) -> list[Seq]:
        """finish_step's hot path (every prefill, and every decode without drafts): each
        sequence gains one token; returns those that completed."""
        done = []
        for seq in batch:
            out = seq.out = seq.out + 1
            seq.token_s.append(now_s)
            if out >= seq.max_out:
                done.append(seq)
        return done

    def _release(self, done: list[Seq], now_s: float) -> list[Seq]:
        for seq in done:
            seq.finish_s = now_s
            self.free_blocks += seq.blocks
            seq.blocks = 0
            self.context_tokens -= len(seq)
            self.running.remove(seq)
        return done

    def decode_context(self, batch: list[Seq]) -> int | None:
        """The decode batch's summed lengths without visiting it, when the batch is the whole
        of `running` (else None): integers, so the same sum as adding them up
        (tests/test_scheduler.py checks it step by step)."""
        if self.tracks_context and len(batch) == len(self.running):
            return self.context_tokens
        return None

    def _accepted(self, seq: Seq) -> int:
        """Tokens a decode step emits for `seq`: the expected count per step, accumulated so
        that every step emits a whole number and the long-run rate is exact."""
        seq.credit += self.per_decode
        emitted = int(seq.credit + 1e-9)
        seq.credit -= emitted
        return emitted


class LazyScheduler(Scheduler):
    """The Scheduler, with a decode step over the whole of `running` visiting no sequence.

    Without drafts, a decode step gives every running sequence one token. The Scheduler visits
    each one every step (its token time, its count, whether it needs a KV block, whether it is
    done): about a third of a paper-table4 run. Here a running sequence is *lazy*: it notes
    `mark`, the number of whole-queue decode steps so far, and the steps' end times are kept
    once, in `ticks`; its `out`, `blocks` and `token_s` stay as they were at `mark` until it is
    settled (`_settle`), when it finishes, is preempted, or a step needs every sequence as it is.
    What a step needs meanwhile is kept aside: which sequences need a block at which step (by
    `phase`: a sequence whose length is 1 mod the block size caches into a new block, as in
    Scheduler._decode) and which finish at which step (`finishing`). The same floats reach `token_s`, and
    every batch, block count and preemption is the Scheduler's (tests/test_scheduler.py runs
    both side by side, and tests/test_exact_runs.py holds runs through it to main's digests).
    A lazy sequence's len() is stale: read `running` only between settles, as the engine does
    (it reads the kept `context_tokens` and `free_blocks`).
    """

    def __init__(self, engine: Engine, kv_blocks: int):
        super().__init__(engine, kv_blocks)
        if engine.spec_tokens:
            raise ValueError("LazyScheduler decodes one token per sequence per step: no drafts")
        self.ticks: list[float] = []  # end time of each whole-queue decode step
        self.by_phase: list[set[Seq]] = [set() for _ in range(self.block)]  # lazy sequences
        self.finishing: dict[int, list[Seq]] = {}  # len(ticks) when they finish -> lazy sequences
        self.admitted = 0
        self.ticking = False  # the batch just scheduled is all of `running`, every one lazy
        self.settled = False  # ... or every running sequence was settled for an eager decode

    def _admit(self) -> list[Seq]:
        batch = super()._admit()
        for seq in batch:  # `running` stays in admission order, so `stamp` sorts by place in it
            seq.stamp = self.admitted
            self.admitted += 1
        return batch

    def _decode(self) -> list[Seq]:
        if len(self.running) > self.engine.max_num_seqs:  # its tail skips the step: go eager
            for seq in self.running:
                self._settle(seq)
            self.settled = True
            return super()._decode()
        # Sequences of this phase are at a length of 1 mod block: this step caches into a new block.
        growing = self.by_phase[(1 - len(self.ticks)) % self.block]
        if len(growing) > self.free_blocks:
            self._decode_preempting(sorted(growing, key=_admission))
        else:
            self.free_blocks -= len(growing)
        self.ticking = bool(self.running)  # an empty batch is no step
        return list(self.running)

    def _decode_preempting(self, growing: list[Seq]):
        """Scheduler._decode_stepwise for lazy sequences, given those that need a block this
        step in the order of `running` (the others need none): each takes a free block, or
        the newest sequences are preempted from the tail until it can, or it is itself."""
        running = self.running
        for seq in growing:
            if seq.mark < 0:
                break  # preempted from the tail, as are all after it
            while self.free_blocks < 1:
                newest = running.pop()
                self._preempt(newest)
                if newest is seq:
                    break
            else:
                self.free_blocks -= 1  # the sequence's own count follows when it settles

    def _preempt(self, seq: Seq):
        self._settle(seq)
        super()._preempt(seq)

    def finish_step(self, batch: list[Seq], now_s: float, prefill: bool = True) -> list[Seq]:
        if not self.ticking:  # a prefill (of eager, new sequences) or an eager decode
            done = super().finish_step(batch, now_s, prefill)
            for seq in self.running if self.settled else batch:
                if seq.mark < 0 and seq.out < seq.max_out:
                    self._lazify(seq)
            self.settled = False
            return done
        self.ticking = False
        self.ticks.append(now_s)
        self.context_tokens += len(batch)
        done = self.finishing.pop(len(self.ticks), None)
        if not done:
            return []
        for seq in done:
            self._settle(seq, listed=False)
        # The order of `running`, as the Scheduler's loop finds them (the order they went lazy
        # in already is; sorting a few makes it not depend on that).
        done.sort(key=_admission)
        return self._release(done, now_s)

    def _lazify(self, seq: Seq):
        now = len(self.ticks)
        seq.mark = now
        seq.phase = (seq.prompt_len + seq.out - now) % self.block
        self.by_phase[seq.phase].add(seq)
        self.finishing.setdefault(now + seq.max_out - seq.out, []).append(seq)

    def _settle(self, seq: Seq, listed: bool = True):
        """Bring a lazy sequence up to date and make it eager; `listed`: still in `finishing`."""
        if seq.mark < 0:
            return
        steps = len(self.ticks) - seq.mark
        if listed:
            self.finishing[seq.mark + seq.max_out - seq.out].remove(seq)
        self.by_phase[seq.phase].discard(seq)
        if steps:
            # Its lengths before those steps ran from n to n + steps - 1; it took a block at each
            # one of 1 mod block (at every one, with blocks of one token).
            n = seq.prompt_len + seq.out
            seq.blocks += (n + steps - 2) // self.block - (n - 2) // self.block
            seq.out += steps
            seq.token_s += self.ticks[seq.mark :]
        seq.mark = -1


class ChunkedScheduler(Scheduler):
    """vLLM-style scheduling (vLLM V1 `Scheduler.schedule`): one token budget per step, spent
    first on every running decode, then on prompt chunks, oldest first, so a step mixes decodes
    with pieces of prompts. A prompt whose last chunk ran samples its first token."""

    tracks_context = False  # schedule() sets `running` aside while it decodes

    def __init__(self, engine: Engine, kv_blocks: int):
        super().__init__(engine, kv_blocks)
        self.chunks: dict[int, int] = {}  # sequence id -> prompt tokens it computes this step

    def schedule(self) -> tuple[list[Seq], bool]:
        self.chunks = {}
        decoding = [q for q in self.running if q.computed >= self._prompt(q)]
        prefilling = [q for q in self.running if q.computed < self._prompt(q)]
        self.running = deque(decoding)
        batch = self._decode() if decoding else []
        budget = self.engine.max_num_batched_tokens - len(batch) * self.engine.positions_per_decode
        for seq in prefilling:
            budget = self._chunk(seq, budget, batch)
            self.running.append(seq)
        while self.waiting and budget > 0 and len(self.running) < self.engine.max_num_seqs:
            seq = self.waiting[0]
            before = budget
            budget = self._chunk(seq, budget, batch)
            if budget == before:
                break
            self.running.append(self.waiting.popleft())
        return batch, False

    def _prompt(self, seq: Seq) -> int:
        """Tokens to compute before sampling: the prompt, or after a preemption the prompt and
        the tokens generated so far but the last."""
        return len(seq) - 1 if seq.out else len(seq)

    def _chunk(self, seq: Seq, budget: int, batch: list[Seq]) -> int:
        """Give `seq` the next chunk of its prompt that the budget and free KV blocks allow."""
        n = min(self._prompt(seq) - seq.computed, budget)
        n = min(n, self.free_blocks * self.block + seq.blocks * self.block - seq.computed)
        if n <= 0:
            return budget
        need = -(-(seq.computed + n) // self.block) - seq.blocks
        self.free_blocks -= need
        seq.blocks += need
        self.chunks[seq.id] = n
        batch.append(seq)
        return budget - n

    def finish_step(self, batch: list[Seq], now_s: float, prefill: bool = False) -> list[Seq]:
        sampling = []
        for seq in batch:
            n = self.chunks.get(seq.id)
            if n is None:
                sampling.append(seq)
                continue
            seq.computed += n
            if seq.computed >= self._prompt(seq):
                sampling.append(seq)
        done = []
        for seq in sampling:
            chunked = seq.id in self.chunks
            done += super().finish_step([seq], now_s, prefill=chunked)
            seq.computed = len(seq) - 1 if seq not in done else seq.computed
        return done


def _admission(seq: Seq) -> int:
    return seq.stamp


def make_scheduler(engine: Engine, kv_blocks: int) -> Scheduler:
    """vLLM's chunked prefill, or nano-vLLM's whole prompts: lazily kept without drafts."""
    if engine.chunked_prefill:
        return ChunkedScheduler(engine, kv_blocks)
    return Scheduler(engine, kv_blocks) if engine.spec_tokens else LazyScheduler(engine, kv_blocks)
