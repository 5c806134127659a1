"""vLLM V1's front-end (API server) of one replica as its own process (no simpy in here).

In vLLM V1 the engine core runs in its own process; the API server is one asyncio event loop
(`vllm/v1/engine/async_llm.py`, `AsyncLLM`) that runs every request's handler (HTTP parse,
chat template, request setup, adding it to the engine) and one background `output_handler`
task that pulls each engine step's outputs and detokenises them
(`OutputProcessor.process_outputs`, in chunks with `await asyncio.sleep(0)` between them so
the other tasks run) for the per-request streams. Tokenisation runs beside the loop in a
single-thread executor (`AsyncMicrobatchTokenizer`, `vllm/utils/async_utils.py`).

Modelled as:
- the output handler: takes the engine's steps in order (FIFO), `detok_s` per emitted token;
  a step's tokens reach their clients when it has processed them. It is given the loop first
  (an assumption standing for the loop's round-robin, in which the one output task is served
  between every request handler's slices: with many handlers waiting it would get less);
- the request handlers share (processor sharing) the loop's time the output handler leaves,
  `request_s` each: in a burst of streaming requests the tokens already being streamed delay
  the intake of the next requests;
- the tokenizer thread: FIFO, `tokenize_s` per prompt token, after the handler; the request
  reaches the engine's queue when it is tokenised.
The engine's step is not lengthened by the front-end (it runs in another process).

The engine hands over its steps as spans (`register`): k steps ending at start + j·a +
b·j(j-1)/2 (j = 1..k), each emitting the same number of tokens (a fast-mode decode span; a
single step is k = 1). The output handler's completion of step m of a span is
C_m = max(C_0 + m·w, t_1 + m·w, t_m + w) (w per step; t_j - j·w is convex in j, so the FIFO
recurrence C_j = max(C_{j-1}, t_j) + w peaks at an end), so a span costs O(1) unless request
handlers are waiting, and fast and token modes give the same times.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable


class Span:
    """k engine steps handed to the output handler: step j (1..k) ends at t(j) and emits
    tokens costing `work_s`; delivered (firsts, finished) when its last step is processed."""

    __slots__ = ("start_s", "a", "b", "k", "work_s", "c0", "c_end", "firsts", "finished",
                 "wake", "delivered")

    def __init__(self, start_s: float, a: float, b: float, k: int, work_s: float, c0: float,
                 wake: bool):
        self.start_s, self.a, self.b, self.work_s, self.c0 = start_s, a, b, work_s, c0
        self.firsts: list = []    # requests whose first token is in this span
        self.finished: list = []  # requests whose last token is in its last step
        self.wake = wake          # the simulator wakes at its delivery (it may finish some)
        self.delivered = False    # (the engine may fill firsts/finished at the same instant)
        self.set_k(k)

    def set_k(self, k: int) -> None:
        self.k = k
        self.c_end = self.c(k)

    def t(self, j: int) -> float:
        return self.start_s + j * self.a + self.b * j * (j - 1) / 2

    def c(self, m: int) -> float:
        """When the output handler has processed steps 1..m."""
        if m == 0:
            return self.c0
        w = self.work_s
        return max(self.c0 + m * w, self.t(1) + m * w, self.t(m) + w)

    def first_after(self, t: float) -> int:
        """Smallest j in 1..k whose processing ends after t (k + 1: none)."""
        lo, hi = 1, self.k + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.c(mid) > t:
                hi = mid
            else:
                lo = mid + 1
        return lo


class ApiServer:
    """One replica's front-end: output handler (FIFO), request handlers (processor sharing
    of the loop's idle time), tokenizer thread (FIFO)."""

    def __init__(self, request_s: float, tokenize_s: float, detok_s: float,
                 on_tokenised: Callable[[float, object], None],
                 on_delivered: Callable[[float, Span], None]):
        self.request_s, self.tokenize_s, self.detok_s = request_s, tokenize_s, detok_s
        self.on_tokenised = on_tokenised  # (time the request reaches the engine, payload)
        self.on_delivered = on_delivered  # (time the span's tokens reach clients, span)
        self.th = 0.0  # the handlers' clock: their state is known up to here
        self.v = 0.0   # service each request handler has received (virtual clock)
        self.handlers: list[tuple[float, int, int, object]] = []  # (v done, seq, prompt, pl)
        self.seq = 0
        self.spans: deque[Span] = deque()  # registered, not yet delivered (in order)
        self.c_last = 0.0  # the output handler's completion of the last registered step
        self.tokenizer_free_s = 0.0

    # ---- inputs ---------------------------------------------------------------------------
    def submit(self, now: float, prompt_tokens: int, payload) -> None:
        """A request is sent at `now`: it enters the handler stage."""
        self.advance(now)
        heapq.heappush(self.handlers, (self.v + self.request_s, self.seq, prompt_tokens,
                                       payload))
        self.seq += 1

    def register(self, now: float, start_s: float, a: float, b: float, k: int, emitted: int,
                 wake: bool) -> Span:
        """k engine steps (see the module doc), each emitting `emitted` tokens."""
        self.advance(now)
        sp = Span(start_s, a, b, k, self.detok_s * emitted, self.c_last, wake)
        self.spans.append(sp)
        self.c_last = sp.c_end
        return sp

    def cut(self, now: float, sp: Span, k: int) -> None:
        """The last registered span stopped after k steps."""
        self.advance(now)
        sp.set_k(k)
        sp.wake = True
        self.c_last = sp.c_end

    # ---- dynamics -------------------------------------------------------------------------
    def advance(self, until_s: float) -> None:
        """Run the front-end up to `until_s`, calling back every completion on the way."""
        while self.handlers:
            n = len(self.handlers)
            need = (self.handlers[0][0] - self.v) * n
            t, used = self._idle(self.th, need, until_s)
            self.th = t
            if used < need:
                self.v += used / n
                break
            vdone, _, p, payload = heapq.heappop(self.handlers)
            self.v = vdone
            self._tokenise(t, p, payload)
        self.th = max(self.th, until_s)
        while self.spans and self.spans[0].c_end <= until_s:
            sp = self.spans.popleft()
            sp.delivered = True
            self.on_delivered(sp.c_end, sp)

    def _idle(self, t: float, need: float, limit: float) -> tuple[float, float]:
        """Walk from t over the output handler's busy steps until the loop has been idle for
        `need` (then: (that time, need)) or `limit` is reached (then: (limit, idle so far))."""
        if need <= 0 or t >= limit:
            return t, 0.0
        used = 0.0
        for sp in self.spans:
            if sp.c_end <= t:
                continue
            j = sp.first_after(t)
            prev = sp.c(j - 1)
            while j <= sp.k:
                end = sp.c(j)
                s = max(prev, sp.t(j))
                if s > t:  # idle until this step arrives
                    gap_end = min(s, limit)
                    if t + (need - used) <= gap_end:
                        return t + (need - used), need
                    used += gap_end - t
                    t = gap_end
                    if t >= limit:
                        return limit, used
                if end >= limit:
                    return limit, used
                t = max(t, end)
                prev = end
                j += 1
        if t + (need - used) <= limit:
            return t + (need - used), need
        return limit, used + max(0.0, limit - t)

    def _tokenise(self, t: float, prompt_tokens: int, payload) -> None:
        self.tokenizer_free_s = max(t, self.tokenizer_free_s) + self.tokenize_s * prompt_tokens
        self.on_tokenised(self.tokenizer_free_s, payload)

    def next_wake_s(self) -> float:
        """When the simulator must next look (inf: nothing pending): the next request
        handler's completion, or the delivery of the next span that may finish requests."""
        nxt = math.inf
        if self.handlers:
            n = len(self.handlers)
            t, used = self._idle(self.th, (self.handlers[0][0] - self.v) * n, math.inf)
            nxt = t
        for sp in self.spans:
            if sp.c_end >= nxt:
                break
            if sp.wake:
                return sp.c_end
        return nxt
