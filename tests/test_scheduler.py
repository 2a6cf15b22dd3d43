from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim.sim.scheduler import LazyScheduler, Scheduler, Seq
from engramsim.workload import Engine


def seqs(*lens, out=3):
    return [Seq(i, 0.0, n, out) for i, n in enumerate(lens)]


def test_prefill_admits_whole_prompts_within_the_token_budget():
    s = Scheduler(Engine(max_num_seqs=8, max_num_batched_tokens=100, kv_block_tokens=16), kv_blocks=100)
    for q in seqs(40, 50, 30):
        s.add(q)
    batch, prefill = s.schedule()
    assert prefill and [q.id for q in batch] == [0, 1]  # 40 + 50 <= 100 < 40 + 50 + 30


def test_prefill_one_at_a_time():
    s = Scheduler(Engine(max_prefill_seqs=1, kv_block_tokens=16), kv_blocks=100)
    for q in seqs(10, 10):
        s.add(q)
    assert len(s.schedule()[0]) == 1 and len(s.schedule()[0]) == 1


def test_decode_runs_every_running_sequence_and_finishes_them():
    s = Scheduler(Engine(kv_block_tokens=16), kv_blocks=100)
    for q in seqs(10, 12, out=2):
        s.add(q)
    batch, _ = s.schedule()
    s.finish_step(batch, 1.0)  # prefill samples the first token
    batch, prefill = s.schedule()
    assert not prefill and len(batch) == 2
    done = s.finish_step(batch, 2.0)  # second token: both reach max_out = 2
    assert len(done) == 2 and s.idle() and s.free_blocks == 100


def test_decode_preempts_the_newest_sequence_when_blocks_run_out():
    # Blocks of 4 tokens; two 4-token prompts take 1 block each; decoding needs a second block each.
    s = Scheduler(Engine(kv_block_tokens=4), kv_blocks=3)
    for q in seqs(4, 4, out=5):
        s.add(q)
    batch, _ = s.schedule()
    s.finish_step(batch, 1.0)
    batch, prefill = s.schedule()
    assert not prefill and [q.id for q in batch] == [0]
    assert s.preemptions == 1 and s.waiting[0].id == 1


@settings(max_examples=200, deadline=None)
@given(
    lens=st.lists(st.integers(1, 40), min_size=0, max_size=12),
    block=st.sampled_from([1, 2, 4, 16]),
    free=st.integers(0, 6),
    max_seqs=st.integers(1, 12),
    drafts=st.sampled_from([0, 0, 1, 3]),
)
def test_the_no_preemption_shortcut_decodes_as_the_stepwise_loop(lens, block, free, max_seqs, drafts):
    """_decode takes a shortcut when no one needs preempting; it must agree with the loop, with
    or without speculative drafts."""

    def state():
        s = Scheduler(Engine(max_num_seqs=max_seqs, kv_block_tokens=block, spec_tokens=drafts), kv_blocks=free)
        for i, n in enumerate(lens):
            q = Seq(i, 0.0, n, 99)
            q.out, q.blocks = 1, -(-n // block)
            s.running.append(q)
        return s

    fast, slow = state(), state()
    got, want = fast._decode(), slow._decode_stepwise()
    summary = lambda s, b: (
        [q.id for q in b],
        [q.id for q in s.running],
        [q.id for q in s.waiting],
        s.free_blocks,
        s.preemptions,
        [q.blocks for q in s.running],
    )
    assert summary(fast, got) == summary(slow, want)


def _plain_stepwise(s: Scheduler) -> list[Seq]:
    """The stepwise decode as a plain loop over every sequence (nano-vLLM's), the reference
    for Scheduler._decode_stepwise, which visits only the sequences needing a block."""
    batch, running, spec = [], s.running, s.engine.spec_tokens
    while running and len(batch) < s.engine.max_num_seqs:
        seq = running.popleft()
        need = max(0, -(-(len(seq) + spec) // s.block) - seq.blocks)
        while s.free_blocks < need:
            if running:
                s._preempt(running.pop())
            else:
                s._preempt(seq)
                break
        else:
            s.free_blocks -= need
            seq.blocks += need
            batch.append(seq)
    running.extendleft(reversed(batch))
    return batch


@settings(max_examples=300, deadline=None)
@given(
    seqs_=st.lists(st.tuples(st.integers(1, 40), st.integers(0, 2)), min_size=0, max_size=12),
    block=st.sampled_from([1, 2, 4, 16]),
    free=st.integers(0, 6),
    max_seqs=st.integers(1, 12),
    drafts=st.sampled_from([0, 0, 1, 3]),
)
def test_the_stepwise_decode_visits_only_sequences_needing_blocks_with_the_loops_outcome(
    seqs_, block, free, max_seqs, drafts
):
    def state():
        s = Scheduler(Engine(max_num_seqs=max_seqs, kv_block_tokens=block, spec_tokens=drafts), kv_blocks=free)
        for i, (n, short) in enumerate(seqs_):  # `short`: blocks fewer than the cached tokens fill
            q = Seq(i, 0.0, n, 99)
            q.out, q.blocks = 1, max(0, -(-n // block) - short)
            s.running.append(q)
        return s

    fast, slow = state(), state()
    got, want = fast._decode_stepwise(), _plain_stepwise(slow)
    summary = lambda s, b: (
        [q.id for q in b],
        [q.id for q in s.running],
        [q.id for q in s.waiting],
        s.free_blocks,
        s.preemptions,
        [(q.blocks, q.computed) for q in s.waiting + s.running],
    )
    assert summary(fast, got) == summary(slow, want)


@settings(max_examples=150, deadline=None)
@given(
    jobs=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 12), st.integers(0, 3)), min_size=1, max_size=14),
    block=st.sampled_from([1, 2, 4, 16]),
    kv_blocks=st.integers(3, 40),
    max_seqs=st.integers(1, 8),
    drafts=st.sampled_from([(0, 0.0), (0, 0.0), (2, 0.6), (3, 1.0)]),
)
def test_the_kept_context_sum_is_the_running_sequences_lengths(jobs, block, kv_blocks, max_seqs, drafts):
    """decode_context keeps the running sequences' summed lengths through admissions, token
    gains (with and without drafts), finishes and preemptions: the sum at every step."""
    engine = Engine(max_num_seqs=max_seqs, kv_block_tokens=block, spec_tokens=drafts[0], accept_rate=drafts[1])
    s = Scheduler(engine, kv_blocks=max(kv_blocks, -(-(40 + 12 + 3) // block)))  # the longest fits alone
    pending = [(Seq(i, 0.0, n, out), wait) for i, (n, out, wait) in enumerate(jobs)]
    for step in range(2000):
        for seq, _ in [p for p in pending if p[1] <= step]:
            s.add(seq)
        pending = [p for p in pending if p[1] > step]
        if s.idle() and not pending:
            break
        batch, prefill = s.schedule() if not s.idle() else ([], False)
        assert s.context_tokens == sum(len(q) for q in s.running)
        context = s.decode_context(batch)
        if context is not None:
            assert context == sum(len(q) for q in batch)
        if batch:
            s.finish_step(batch, float(step), prefill)
        assert s.context_tokens == sum(len(q) for q in s.running)
    assert s.idle() and not pending


@settings(max_examples=300, deadline=None)
@given(
    jobs=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30), st.integers(0, 20)), min_size=1, max_size=14),
    block=st.sampled_from([1, 2, 4, 16]),
    kv_blocks=st.integers(3, 40),
    max_seqs=st.integers(1, 8),
    prefill_seqs=st.sampled_from([0, 1, 2]),
)
def test_the_lazy_scheduler_gives_the_schedulers_batches_blocks_and_token_times(
    jobs, block, kv_blocks, max_seqs, prefill_seqs
):
    """LazyScheduler keeps running sequences' tokens implicit between settles: side by side with
    the Scheduler through arrivals, preemptions (a small KV cache), finishes and more running
    sequences than a batch takes, every step's batch, finished sequences (in order), free
    blocks and preemptions agree, and so does every sequence's tokens, blocks and token times."""
    engine = Engine(max_num_seqs=max_seqs, max_prefill_seqs=prefill_seqs, kv_block_tokens=block)
    blocks = max(kv_blocks, -(-(40 + 30) // block))  # the longest fits alone
    pair = []
    for kind in (Scheduler, LazyScheduler):
        arrivals = [(Seq(i, 0.0, n, out), at) for i, (n, out, at) in enumerate(jobs)]
        pair.append((kind(engine, kv_blocks=blocks), arrivals, [q for q, _ in arrivals]))
    for step in range(3000):
        seen = []
        for s, arrivals, _ in pair:
            for seq, at in arrivals:
                if at == step:
                    s.add(seq)
            batch, prefill = s.schedule() if not s.idle() else ([], False)
            context = s.decode_context(batch)
            done = s.finish_step(batch, step * 0.25 + 0.1, prefill) if batch else []
            seen.append(([q.id for q in batch], prefill, context, [q.id for q in done], s.free_blocks, s.preemptions))
            seen.append(([q.id for q in s.running], [q.id for q in s.waiting], s.context_tokens))
        assert seen[0:2] == seen[2:4], f"step {step}"
        if all(s.idle() for s, _, _ in pair) and step > max(at for _, _, at in jobs):
            break
    (eager, _, a), (lazy, _, b) = pair
    assert eager.idle() and lazy.idle() and eager.free_blocks == lazy.free_blocks == blocks
    outcome = lambda seqs: [(q.out, q.blocks, q.finish_s, q.token_s) for q in seqs]
    assert outcome(a) == outcome(b)
