"""One serving replica's scheduler, imitating vLLM V1 (the 0.15 line); no simpy in here.

vLLM V1 scheduling, as imitated (vllm/v1/core/sched/scheduler.py):
- one token budget per step (`max_num_batched_tokens`) shared by decodes and prefills;
  running requests are scheduled first, in order, then waiting ones FCFS;
- chunked prefill: a prompt may be split over steps by the remaining budget;
- paged KV cache in blocks of `block_size` tokens (of the full-attention layers; with
  sliding-window layers every running sequence also holds `seq_blocks` for its window);
  a waiting request is admitted only if its
  chunk's blocks are free and fewer than `max_num_seqs` requests run; the waiting queue stops at
  the first request that does not fit (FCFS, no skipping);
- when a running request needs a block and none is free, the last-admitted running request is
  preempted (recompute: its KV is freed; it returns to the front of the waiting queue and later
  re-prefills its prompt plus the tokens it had generated); no new request is admitted in a step
  that preempted;
- a request emits one token whenever every token it knows has been computed (end of its
  prefill, then every decode step).

Defaults follow vLLM's engine arguments (docs, 0.x to 0.15): `max_num_seqs` 256,
`max_num_batched_tokens` 8192 with chunked prefill, `block_size` 16, `gpu_memory_utilization`
0.9 (used by `sim.perf.memory`).

The fast mode advances several constant-batch decode steps at once: while every running
request decodes and nothing can be admitted, step times are affine in the step index (each
step adds one token of context per request), so k steps last k·a + b·k(k-1)/2 exactly. A span
ends before the first finish, before the cache would run out of blocks, before any context
crosses a sliding window, and (enforced by the simulator) at the first step boundary after an
arrival that could be admitted. The token mode runs the same code with spans of one step.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

from sim.perf.step import StepBatch, StepCostTable
from sim.serving.overheads import Overheads

SCHEDULING_POLICIES: dict[str, "SchedulingPolicy"] = {}
"""The registered scheduling policies by name (`EngineConfig.scheduling_policy`)."""


def register_policy(name: str):
    """Class decorator: register an instance of the class as scheduling policy `name`."""
    def add(cls):
        SCHEDULING_POLICIES[name] = cls()
        return cls
    return add


@dataclass(frozen=True)
class EngineConfig:
    """Scheduler knobs, with vLLM's names and defaults."""

    name: str = "vllm-v1"
    version: str = "0.15"
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    enable_chunked_prefill: bool = True
    max_model_len: int | None = None
    long_prompt_policy: str = "clip"  # "clip" the prompt to fit, or "reject" the request
    scheduling_policy: str = "decode_first"
    """`decode_first` (vLLM V1: running requests are scheduled before waiting ones) or
    `prefill_first` (vLLM V0's default: new prompts first, decodes get the remaining budget)."""
    num_speculative_tokens: int = 0
    spec_acceptance_rate: float = 0.0
    """Speculative decoding / MTP as an acceptance-rate factor: each decode step verifies
    1 + k tokens and emits (1 - a^(k+1)) / (1 - a) on average (deterministically spread: the
    s-th step of a request emits floor((s+1)E) - floor(sE) tokens). The draft model's own cost
    is not modelled (MTP heads are about one layer). Fast-mode spans are off when it is on."""
    prefix_hit_fraction: float = 0.0
    """Share of each prompt found in the prefix cache at admission (automatic prefix caching,
    on by default in vLLM V1): whole cached blocks are not recomputed; at least the last
    prompt token always is."""
    prefix_caching: bool = False
    """vLLM V1's automatic prefix caching as it acts on preemption: blocks freed by a preempted
    request keep their content in the free queue until they are reused; freed blocks join the
    queue's tail, the request's last block first, and new blocks are taken from its head
    (vllm/v1/core/block_pool.py, free_block_queue in eviction order; vllm-project/vllm issue
    #40268). A preempted request readmitted later finds the full blocks of its prefix not yet
    reused in the cache and recomputes only the rest. With sliding-window layers its window
    blocks (`seq_blocks`, its latest tokens) are freed first, so they are evicted first: once
    any of its blocks is reused, nothing of it is kept (the window would no longer hit)."""

    def __post_init__(self) -> None:
        for f in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1 (got {getattr(self, f)})")
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ValueError(f"scheduling_policy must be {' or '.join(SCHEDULING_POLICIES)} "
                             f"(got {self.scheduling_policy!r})")
        if self.num_speculative_tokens < 0 or not 0.0 <= self.spec_acceptance_rate <= 1.0:
            raise ValueError("num_speculative_tokens must be >= 0 and spec_acceptance_rate in "
                             f"[0, 1] (got {self.num_speculative_tokens}, "
                             f"{self.spec_acceptance_rate})")
        if not 0.0 <= self.prefix_hit_fraction < 1.0:
            raise ValueError(f"prefix_hit_fraction must be in [0, 1) "
                             f"(got {self.prefix_hit_fraction})")
        if self.long_prompt_policy not in ("clip", "reject"):
            raise ValueError(f"long_prompt_policy must be 'clip' or 'reject' "
                             f"(got {self.long_prompt_policy!r})")


ENGINES: dict[str, dict] = {
    # vLLM V1 (0.8 onwards, default engine through the 0.15 line): chunked prefill always on,
    # running requests first, max_num_seqs 256, max_num_batched_tokens 8192 (engine args docs).
    "vllm-v1": {"version": "0.15", "scheduling_policy": "decode_first",
                "enable_chunked_prefill": True, "max_num_seqs": 256,
                "max_num_batched_tokens": 8192},
    # vLLM V0 (0.6 line): prefill-first scheduling without chunked prefill by default for
    # long-context-free models; max_num_batched_tokens = max(max_model_len, 2048).
    "vllm-v0": {"version": "0.6", "scheduling_policy": "prefill_first",
                "enable_chunked_prefill": False, "max_num_seqs": 256,
                "max_num_batched_tokens": 8192},
}
"""Named engine presets: `engine_config(name, **overrides)` builds an EngineConfig. A new
engine is one entry here (or a scheduler subclass of Replica for rules the knobs cannot
express)."""


def engine_config(name: str = "vllm-v1", **overrides) -> EngineConfig:
    if name not in ENGINES:
        raise ValueError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")
    return EngineConfig(name=name, **{**ENGINES[name], **overrides})


@dataclass(eq=False)
class Req:
    """One request in a replica. Compared by identity: the running list's `in` and `remove`
    look for this request, not for one with equal fields (a field-by-field comparison also
    cost 15% of a capacity search)."""

    rid: int
    arrival_s: float
    prompt: int
    output: int
    generated: int = 0
    computed: int = 0  # tokens whose KV is in the cache
    blocks: int = 0
    first_token_s: float = math.nan
    first_scheduled_s: float = math.nan
    preemptions: int = 0
    cached_tokens: int = 0
    spec_steps: int = 0
    freed: list | None = field(default=None, compare=False, repr=False)
    """After a preemption: its run in the free queue, ["kept", blocks still there, blocks
    freed]."""

    @property
    def known(self) -> int:
        """Tokens whose KV must be computed before the next token can be emitted."""
        return self.prompt + self.generated



@dataclass
class StepPlan:
    """What one step does: (request, new tokens) pairs and the batch shape for costing."""

    items: list[tuple[Req, int]]
    batch: StepBatch
    preempted: list[Req] = field(default_factory=list)


class Replica:
    """State of one replica: queues, KV blocks, and the scheduling rules above."""

    def __init__(self, idx: int, cfg: EngineConfig, costs: StepCostTable, num_blocks: int,
                 window: int | None = None, seq_blocks: int = 0,
                 overheads: Overheads | None = None):
        self.idx = idx
        self.ov = overheads or Overheads()
        self.cfg = cfg
        self.policy = SCHEDULING_POLICIES[cfg.scheduling_policy]
        self.costs = costs
        self.total_blocks = num_blocks
        self.free_blocks = num_blocks
        self.window = window
        self.seq_blocks = seq_blocks  # held by every sequence for its sliding-window layers
        self.waiting: deque[Req] = deque()
        self.running: list[Req] = []
        self.busy_s = 0.0
        self.prefill_busy_s = 0.0
        self.steps = 0
        self.peak_blocks_used = 0
        self.steps_to_first_finish = 0  # set by decode_span_limit
        self.track_cache = cfg.prefix_caching
        self.free_queue: deque[list] = deque([[None, num_blocks]])
        """The free blocks in eviction order (head first) as [tag, count] runs; tag "kept": a
        preempted request's prefix blocks, None: plain. Kept only with
        `track_cache`."""

    # ---- state queries --------------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.cfg.block_size) + (self.seq_blocks if tokens > 0 else 0)

    def can_admit_head(self, budget_left: int) -> bool:
        """Would `plan` admit the head of the waiting queue with `budget_left` tokens left?"""
        if not self.waiting or len(self.running) >= self.cfg.max_num_seqs or budget_left <= 0:
            return False
        req = self.waiting[0]
        start = self._prefix_start(req)
        need = req.known - start
        n = min(need, budget_left) if self.cfg.enable_chunked_prefill else need
        if n > budget_left:
            return False
        return self.blocks_for(start + n) - req.blocks <= self.free_blocks

    def could_admit_new(self) -> bool:
        """Would a request arriving now be scheduled at the next boundary? (FCFS: only if the
        queue is empty and a slot is free; its blocks are checked when it is planned.)"""
        return not self.waiting and len(self.running) < self.cfg.max_num_seqs

    # ---- one step -------------------------------------------------------------------------
    def plan(self) -> StepPlan:
        cfg = self.cfg
        self._budget = cfg.max_num_batched_tokens
        items: list[tuple[Req, int]] = []
        preempted: list[Req] = []
        self.policy.schedule(self, items, preempted)
        used = self.total_blocks - self.free_blocks
        self.peak_blocks_used = max(self.peak_blocks_used, used)
        return StepPlan(items, self._batch(items), preempted)

    def _schedule_running(self, items: list, preempted: list, limit: int | None = None) -> None:
        """Schedule the first `limit` running requests (all by default), preempting from the
        back of that range when blocks run out."""
        cfg = self.cfg
        running = self.running
        k_spec = cfg.num_speculative_tokens if cfg.spec_acceptance_rate > 0 else 0
        chunked, bs, seq_blocks = cfg.enable_chunked_prefill, cfg.block_size, self.seq_blocks
        end = len(running) if limit is None else limit
        stop = min(end, len(running))  # recomputed only when a preemption shrinks the range
        budget = self._budget
        i = 0
        while i < stop and budget > 0:  # the hot loop: locals; `known`, `blocks_for` inlined
            req = running[i]
            need = req.prompt + req.generated - req.computed
            if k_spec and need == 1 and req.generated >= 1:
                need = 1 + k_spec  # verify the draft tokens
            n = (need if need < budget else budget) if chunked else need
            if n > budget or (k_spec and req.generated >= 1 and n < need):
                i += 1
                continue
            tokens = req.computed + n
            extra = -(-tokens // bs) + (seq_blocks if tokens > 0 else 0) - req.blocks
            if extra > self.free_blocks:
                victim = None
                while extra > self.free_blocks and victim is not req:
                    victim = running[stop - 1]
                    self._preempt(victim)
                    end -= 1
                    stop = min(end, len(running))
                    preempted.append(victim)
                if victim is req:
                    break
            if extra > 0:
                self._take(extra)
                req.blocks += extra
            items.append((req, n))
            budget -= n
            i += 1
        self._budget = budget

    def _schedule_waiting(self, items: list) -> None:
        cfg = self.cfg
        running = self.running
        while self.waiting and self._budget > 0 and len(running) < cfg.max_num_seqs:
            req = self.waiting[0]
            start = self._prefix_start(req)
            need = req.known - start
            n = min(need, self._budget) if cfg.enable_chunked_prefill else need
            if n > self._budget:
                break
            extra = self.blocks_for(start + n) - req.blocks
            if extra > self.free_blocks:
                break
            self.waiting.popleft()
            req.cached_tokens += start - req.computed
            before = req.blocks
            self._reclaim(req, start)
            req.computed = start
            self._take(extra - (req.blocks - before))
            req.blocks = before + extra
            running.append(req)
            items.append((req, n))
            self._budget -= n

    def _spec_emitted(self, req: Req) -> int:
        a, k = self.cfg.spec_acceptance_rate, self.cfg.num_speculative_tokens
        e_mean = (k + 1.0) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)
        s = req.spec_steps
        e = math.floor((s + 1) * e_mean + 1e-9) - math.floor(s * e_mean + 1e-9)
        return max(1, min(e, req.output - req.generated))

    def _prefix_start(self, req: Req) -> int:
        """Where a waiting request's prefill starts: after its cached prefix (whole blocks,
        at least one prompt token recomputed), or where it stopped. Cached blocks count as the
        request's own blocks (sharing between requests is not credited: conservative)."""
        h = self.cfg.prefix_hit_fraction
        bs = self.cfg.block_size
        kept = self._kept_tokens(req)
        if req.computed or (h <= 0 and not kept):
            return req.computed
        shared = min(int(h * req.prompt) // bs * bs, (req.prompt - 1) // bs * bs)
        return max(shared, kept)

    def _kept_tokens(self, req: Req) -> int:
        """Tokens of a preempted request's prefix still cached in the free queue (whole
        blocks; at least its last known token is recomputed)."""
        run = req.freed
        if run is None or run[1] <= 0 or (self.seq_blocks and run[1] < run[2]):
            return 0
        bs = self.cfg.block_size
        return min((run[1] - self.seq_blocks) * bs, (req.known - 1) // bs * bs)

    def _take(self, k: int) -> None:
        """Take k free blocks from the head of the free queue (evicting cached prefixes)."""
        self.free_blocks -= k
        if not self.track_cache:
            return
        q = self.free_queue
        while k > 0 and q:
            run = q[0]
            t = min(k, run[1])
            run[1] -= t
            k -= t
            if run[1] == 0:
                q.popleft()

    def _release(self, req: Req, cached_blocks: int) -> None:
        """Return a request's blocks to the tail of the free queue; its first
        `cached_blocks` blocks keep its prefix (freed last, so evicted last)."""
        self.free_blocks += req.blocks
        if not self.track_cache:
            return
        if req.blocks > cached_blocks:
            self.free_queue.append([None, req.blocks - cached_blocks])
        if cached_blocks > 0:
            req.freed = ["kept", cached_blocks, cached_blocks]
            self.free_queue.append(req.freed)

    def _reclaim(self, req: Req, start: int) -> None:
        """A readmitted request takes back the cached blocks its prefill starts after: they
        leave the free queue as its own blocks (the rest of its run becomes plain free)."""
        run, req.freed = req.freed, None
        if run is None or run[1] <= 0:
            return
        hit = start // self.cfg.block_size + self.seq_blocks if start > req.computed else 0
        hit = min(hit, run[1])
        run[0], run[1] = None, run[1] - hit
        self.free_blocks -= hit
        req.blocks += hit
        if run[1] == 0:
            self.free_queue.remove(run)

    def _preempt(self, req: Req) -> None:
        self.running.remove(req)
        full = req.computed // self.cfg.block_size
        self._release(req, min(req.blocks, full + self.seq_blocks) if full else 0)
        req.blocks = 0
        req.computed = 0
        req.preemptions += 1
        self.waiting.appendleft(req)

    def _batch(self, items: list[tuple[Req, int]]) -> StepBatch:
        new = [n for _, n in items]
        ctx = [r.computed for r, _ in items]
        emits = [r.computed + n >= r.known for r, n in items]
        return StepBatch.of_sequences(new, ctx, self.window, emits)

    def may_finish(self, plan: StepPlan) -> bool:
        """Whether the step may finish a request (always true with speculative decoding)."""
        if self.cfg.num_speculative_tokens and self.cfg.spec_acceptance_rate > 0:
            return True
        return any(r.computed + n >= r.known and r.generated + 1 >= r.output
                   for r, n in plan.items)

    def step_cost(self, plan: StepPlan) -> float:
        """GPU step (StepCostTable) plus the engine's CPU work: the scheduler over the running
        requests, detokenisation of the emitted tokens, sampling of the step's sequences."""
        b = plan.batch
        seqs = int(round(b.decode_seqs + b.prefill_seqs))
        return self.costs.cost(b) + self.ov.step_cpu_s(len(self.running),
                                                       int(round(b.logits_tokens)), seqs)

    def apply(self, plan: StepPlan, start_s: float, end_s: float, finished: list[Req]) -> None:
        """Advance the state by one executed step ending at `end_s`."""
        dur = end_s - start_s
        self.busy_s += dur
        if plan.batch.prefill_tokens > 0:
            self.prefill_busy_s += dur * plan.batch.prefill_tokens / max(plan.batch.tokens, 1)
        self.steps += 1
        spec = self.cfg.num_speculative_tokens > 0 and self.cfg.spec_acceptance_rate > 0
        for req, n in plan.items:
            if math.isnan(req.first_scheduled_s):
                req.first_scheduled_s = start_s
            if spec and req.generated >= 1 and req.computed == req.known - 1:
                e = self._spec_emitted(req)
                req.spec_steps += 1
                req.generated += e
                req.computed += e
                if req.generated >= req.output:
                    finished.append(req)
                continue
            req.computed += n
            if req.computed >= req.known:
                req.generated += 1
                if req.generated == 1:
                    req.first_token_s = end_s
                if req.generated >= req.output:
                    finished.append(req)
        for req in finished:
            self._finish(req)

    def _finish(self, req: Req) -> None:
        if req in self.running:
            self.running.remove(req)
            self._release(req, 0)
            req.blocks = 0

    # ---- fast mode: constant-batch decode spans ---------------------------------------------
    def decode_span_limit(self) -> int:
        """Steps (>= 2 to be worth it) the current batch can decode unchanged, or 0/1.

        Requires: every running request decodes one token a step, nobody waits who could be
        admitted, and the token budget holds the batch."""
        run = self.running
        if not run or len(run) > self.cfg.max_num_batched_tokens:
            return 0
        if self.cfg.num_speculative_tokens and self.cfg.spec_acceptance_rate > 0:
            return 0  # emitted tokens per step vary: no affine span
        if any(r.computed != r.known - 1 or r.generated == 0 for r in run):
            return 0  # a prefill finishing its last token emits the first token: one step
        # admission only gets harder while the batch decodes (free blocks shrink), so if the
        # head cannot be admitted now it cannot be until a request finishes
        first = self.policy.prompts_first
        if self.can_admit_head(self.cfg.max_num_batched_tokens - (0 if first else len(run))):
            return 0
        # steps until the first request finishes (that step ends the span)
        k = self.steps_to_first_finish = min(r.output - r.generated for r in run)
        # steps whose block allocations fit in the free blocks: request r needs a new block at
        # each step where its computed count crosses a multiple of block_size
        bs = self.cfg.block_size
        free = self.free_blocks
        if free < len(run) * (-(-k // bs) + 1):
            k = min(k, self._steps_until_blocks_run_out(free))
        if self.window:  # keep every context on one side of the window (affine step times)
            for r in run:
                if r.computed < self.window:
                    k = min(k, self.window - r.computed)
        return max(k, 0)

    def _steps_until_blocks_run_out(self, free: int) -> int:
        bs = self.cfg.block_size
        events = []
        for r in self.running:
            # step j (1-based) computes token index r.computed + j - 1; it needs a block when
            # that index is a multiple of bs beyond the blocks held
            first = (r.blocks - self.seq_blocks) * bs - r.computed + 1  # first needing one
            events.append(first)
        needed = 0
        # walk steps in order of block needs; cheap because spans are bounded by finishes too
        pending = sorted(events)
        while pending:
            step = pending.pop(0)
            needed += 1
            if needed > free:
                return step - 1
            # the same request needs another block bs steps later
            nxt = step + bs
            lo, hi = 0, len(pending)
            while lo < hi:
                mid = (lo + hi) // 2
                if pending[mid] < nxt:
                    lo = mid + 1
                else:
                    hi = mid
            pending.insert(lo, nxt)
            if step > 1_000_000:
                break
        return 1_000_000

    def span_costs(self) -> tuple[float, float]:
        """(a, b): step j of the current decode batch (j = 0, 1, ...) lasts a + b·j.

        Decode step j reads Σ(computed + 1 + j) KV tokens; every other part depends only on
        the batch size, and attention is linear in the KV tokens read (StepCostTable)."""
        run = self.running
        n = len(run)
        c = self.costs
        ctx = sum(r.computed for r in run) + n
        a = (c.token_cost(n) + c.lm_cost(n) + c.overhead_s + c.seq_s * n
             + c.dec_coef_full * ctx + self.ov.step_cpu_s(n, n, n))
        b = c.dec_coef_full * n
        if self.window:
            w = self.window
            ctx_w = sum(min(r.computed + 1, w) for r in run)
            a += c.dec_coef_swa * ctx_w
            b += c.dec_coef_swa * sum(1 for r in run if r.computed + 1 < w)
        return a, b

    def apply_span(self, k: int, start_s: float, a: float, b: float,
                   finished: list[Req]) -> float:
        """Advance k decode steps at once; returns the end time."""
        dur = k * a + b * k * (k - 1) / 2
        end = start_s + dur
        self.busy_s += dur
        self.steps += k
        used_before = self.total_blocks - self.free_blocks
        for r in self.running:
            r.computed += k
            r.generated += k
            need = self.blocks_for(r.computed)
            if need > r.blocks:
                self._take(need - r.blocks)
                r.blocks = need
            if r.generated >= r.output:
                finished.append(r)
        self.peak_blocks_used = max(self.peak_blocks_used, used_before,
                                    self.total_blocks - self.free_blocks)
        for r in finished:
            self._finish(r)
        return end


def steps_until(start_s: float, a: float, b: float, t: float, k_max: int) -> int:
    """Smallest k in [1, k_max] with start + k·a + b·k(k-1)/2 >= t (k_max if none)."""
    def end(k: int) -> float:
        return start_s + k * a + b * k * (k - 1) / 2

    if end(k_max) < t:
        return k_max
    lo, hi = 1, k_max
    while lo < hi:
        mid = (lo + hi) // 2
        if end(mid) >= t:
            hi = mid
        else:
            lo = mid + 1
    return lo


class SchedulingPolicy(ABC):
    """The order in which a step's token budget goes to running requests and waiting prompts:
    a subclass registered with `@register_policy("name")` (`EngineConfig.scheduling_policy`).
    `prompts_first`: waiting prompts take the budget before running decodes (the fast mode's
    spans need it)."""

    prompts_first = False

    @abstractmethod
    def schedule(self, replica: Replica, items: list, preempted: list) -> None:
        """Append (request, tokens) to `items` and preempted requests to `preempted`."""


@register_policy("decode_first")
class DecodeFirst(SchedulingPolicy):
    """vLLM V1: running requests first; nothing new is admitted in a step that preempted."""

    def schedule(self, replica: Replica, items: list, preempted: list) -> None:
        replica._schedule_running(items, preempted)
        if not preempted:
            replica._schedule_waiting(items)


@register_policy("prefill_first")
class PrefillFirst(SchedulingPolicy):
    """vLLM V0's default: new prompts first, running decodes get the remaining budget."""

    prompts_first = True

    def schedule(self, replica: Replica, items: list, preempted: list) -> None:
        before = len(replica.running)
        replica._schedule_waiting(items)  # admitted requests are appended after `before`
        replica._schedule_running(items, preempted, limit=before)
