"""Disaggregated prefill/decode serving (Splitwise, DistServe; vLLM's P/D connectors).

Two pools of replicas of the same model, layout and engine (`ServeSetup`; its `replicas` is
ignored):

- prefill pool (replicas 0..P-1): every request first runs there as a prompt with one output
  token, under the same vLLM-V1-like scheduler as `simulate` (chunked prefill, paged KV,
  preemption). The end of its prefill emits the first token: that is `first_token_s`.
  Requests asking for one output token finish there.
- KV transfer: the prompt's KV cache then moves to a decode replica chosen by least outstanding
  tokens (prompt + output of the requests routed there and not finished). Each of the replica's
  TP·PP cards holds its shard (`kv_bytes_for_sequence(model, layout, precision, prompt)` bytes)
  and sends it to its counterpart card over its own link, all cards in parallel, so

      transfer_s = latency + per-card KV bytes / per-card link bandwidth

  sent in one piece after the prefill ends (no layer-by-layer overlap with the prefill).
- decode pool (replicas P..P+D-1): the request joins the decode replica's waiting queue with its
  prompt KV present (computed = prompt, generated = 1); it is admitted like any waiting request
  (free KV blocks for prompt + 1 tokens, a `max_num_seqs` slot, FCFS) and decodes its remaining
  output - 1 tokens exactly as in the aggregated engine, fast constant-batch spans included. A
  request preempted on the decode replica recomputes its prompt and generated tokens there.

The link (`kv_link`):
- "network": the scale-out NIC of each GPU, `card.scale_out.nic_gbit_per_s / 8` B/s, times the
  calibrated all-reduce bus-bandwidth fraction (`allreduce_busbw`) as the achieved efficiency of
  a large RDMA transfer;
- "scale_up": the scale-up fabric between two GPUs of one domain, `link_bandwidth_bps(2)`
  (NVSwitch: the full per-GPU rate; a mesh: one link), times the same efficiency;
- "auto" (default): "scale_up" when both pools fit in one scale-up domain,
  (P + D) · TP · PP <= `domain_size`, else "network".
The latency of a transfer is the calibrated all-reduce latency (`allreduce_latency_us`, a few
microseconds): a lower bound for one RDMA operation, with no connector handshake or metadata
exchange (vLLM's NIXL connector adds those).

Contention (`link_contention=True`, the default): each replica's link is a FIFO resource; a
transfer starts when both the sender's egress and the receiver's ingress are free
(`start = max(prefill end, sender free at, receiver free at)`) and holds both for its duration.
Reservations are made in order of prefill completion and never backfill an earlier gap. With
`link_contention=False` a transfer is a pure delay. The sender keeps the request's KV blocks
until its transfer ends (a prefill replica short of blocks waits for outgoing transfers); the
receiver allocates blocks only when it admits the request after the transfer (vLLM allocates
them before pulling; here a transfer never waits for decode memory, the request waits after).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import simpy

from sim.perf.memory import check_layout, kv_bytes_for_sequence
from sim.perf.step import StepCostTable, StepModel
from sim.serving.engine import Replica, Req
from sim.serving.simulate import (ROUTERS, ServeResult, ServeSetup, ServingError, _kv_blocks,
                                  _Recorder, _Timeline, arrival_process, notify_replica,
                                  pick_replica, replica_process)

KV_LINKS = ("auto", "network", "scale_up")


@dataclass(frozen=True)
class KvLink:
    """The per-card path a KV cache takes from a prefill card to its decode counterpart."""

    kind: str  # "network" or "scale_up"
    bandwidth_bps: float  # achieved bytes/s per card
    latency_s: float

    def transfer_s(self, bytes_per_card: float) -> float:
        if bytes_per_card <= 0:
            return 0.0
        return self.latency_s + bytes_per_card / self.bandwidth_bps


def kv_link_for(setup: ServeSetup, prefill_replicas: int, decode_replicas: int,
                kv_link: str = "auto") -> KvLink:
    """Resolve `kv_link` ("auto", "network", "scale_up") into a `KvLink` (see module doc)."""
    if kv_link not in KV_LINKS:
        raise ServingError(f"unknown kv_link '{kv_link}' (known: {', '.join(KV_LINKS)})")
    hw = setup.hardware
    card = hw.card
    cards = (prefill_replicas + decode_replicas) * setup.layout.cards
    domain = card.scale_up.domain_size
    if kv_link == "auto":
        kv_link = "scale_up" if cards <= domain else "network"
    eff = hw.factors["allreduce_busbw"].value
    latency = hw.allreduce_latency_s
    if kv_link == "scale_up":
        if cards > domain:
            raise ServingError(
                f"kv_link 'scale_up': the pools need {cards} cards, more than the "
                f"{domain}-GPU scale-up domain of {card.name}")
        bw = hw.link_bandwidth_bps(2)
    else:
        if card.scale_out.nic_gbit_per_s <= 0 or card.scale_out.kind == "none":
            raise ServingError(f"kv_link 'network': {card.name} has no scale-out NIC")
        bw = card.scale_out.nic_gbit_per_s * 1e9 / 8
    return KvLink(kv_link, bw * eff, latency)


def kv_transfer_s(setup: ServeSetup, link: KvLink, prompt_tokens: int) -> float:
    """Seconds to move the KV of a `prompt_tokens` prompt from a prefill to a decode replica."""
    per_card = kv_bytes_for_sequence(setup.model, setup.layout, setup.precision, prompt_tokens)
    return link.transfer_s(per_card)


def simulate_disaggregated(setup: ServeSetup, traffic: Iterable, prefill_replicas: int,
                           decode_replicas: int, kv_link: str = "auto", *,
                           link_contention: bool = True) -> ServeResult:
    """Replay `traffic` through `prefill_replicas` prefill-only and `decode_replicas` decode
    replicas (module doc). Arrivals are routed over the prefill pool by `setup.router`; decode
    replicas are chosen by least outstanding tokens. The result has the aggregated simulator's
    type: `replica` is 0..P-1 for requests that finished at prefill (one output token), P..P+D-1
    for the others; per-replica lists run prefill replicas first, then decode replicas."""
    if setup.router not in ROUTERS:
        raise ServingError(f"unknown router '{setup.router}' (known: {', '.join(ROUTERS)})")
    if setup.mode not in ("fast", "token"):
        raise ServingError(f"unknown mode '{setup.mode}' (known: fast, token)")
    if prefill_replicas < 1 or decode_replicas < 1:
        raise ServingError(f"prefill and decode replicas must be >= 1 (got {prefill_replicas} "
                           f"and {decode_replicas})")
    check_layout(setup.model, setup.layout)
    setup.hardware.check_precision(setup.precision)
    link = kv_link_for(setup, prefill_replicas, decode_replicas, kv_link)
    num_blocks, seq_blocks = _kv_blocks(setup)
    cfg = setup.engine
    arch = setup.model.architecture
    max_len = cfg.max_model_len or arch.max_context_tokens
    if num_blocks * cfg.block_size < 2 * cfg.block_size:
        raise ServingError(
            f"{setup.model.name} does not fit on {setup.hardware.card.name} at TP "
            f"{setup.layout.tp}: no room for a KV cache")
    sm = StepModel(setup.model, setup.hardware, setup.layout, setup.precision)
    costs = StepCostTable(sm, cfg.max_num_batched_tokens + cfg.max_num_seqs, cfg.max_num_seqs)
    window = arch.sliding_window.window_tokens if arch.sliding_window else None
    P, D = prefill_replicas, decode_replicas
    n = P + D
    reps = [Replica(i, cfg, costs, num_blocks, window, seq_blocks) for i in range(n)]
    rng = np.random.default_rng(np.random.SeedSequence(setup.seed).spawn(1)[0])
    env = simpy.Environment()
    rec = _Recorder()
    tl = _Timeline()
    state = {"arrived": 0, "rejected": 0, "clipped": 0, "events": 0, "rr": 0, "in_flight": 0}
    outstanding = [0] * n
    held = [0] * n  # blocks a prefill replica keeps for its outgoing transfers
    link_free = [0.0] * n  # when each replica's link is next free (contention)
    target_output: dict[int, int] = {}
    wake: list[simpy.Event | None] = [None] * n
    interrupt: list[simpy.Event | None] = [None] * n
    fast = setup.mode == "fast"
    max_req_tokens = (num_blocks - seq_blocks) * cfg.block_size
    xfer_cache: dict[int, float] = {}

    def transfer_s(prompt: int) -> float:
        t = xfer_cache.get(prompt)
        if t is None:
            t = xfer_cache[prompt] = kv_transfer_s(setup, link, prompt)
        return t

    def route_prefill() -> int:
        return pick_replica(setup.router, 0, P, outstanding, state, rng)

    def route_decode() -> int:
        return min(range(P, n), key=lambda j: (outstanding[j], j))

    def notify(i: int, admit_now: bool) -> None:
        notify_replica(i, admit_now, fast, wake, interrupt)

    def on_request(rid: int, t: float, p: int, o: int) -> None:
        target_output[rid] = o  # the prefill pool's view of the request: one output token
        i = route_prefill()
        rep = reps[i]
        outstanding[i] += p + 1
        admit_now = rep.could_admit_new()
        rep.waiting.append(Req(rid, t, p, 1))
        notify(i, admit_now)

    def deliver(r: Req, src: int, dst: int, blocks: int, out: int, at: float):
        yield env.timeout(at - env.now)
        state["in_flight"] -= 1
        reps[src].free_blocks += blocks
        held[src] -= blocks
        notify(src, False)
        dr = Req(r.rid, r.arrival_s, r.prompt, out, generated=1, computed=r.prompt,
                 first_token_s=r.first_token_s, first_scheduled_s=r.first_scheduled_s,
                 preemptions=r.preemptions)
        rep = reps[dst]
        admit_now = rep.could_admit_new()
        rep.waiting.append(dr)
        notify(dst, admit_now)

    def prefill_done(rep: Replica, finished: list[Req], end_s: float) -> None:
        i = rep.idx
        for r in finished:
            outstanding[i] -= r.prompt + 1
            out = target_output.pop(r.rid)
            if out <= 1:
                rec.add(r, end_s, i)
                continue
            d = route_decode()
            outstanding[d] += r.prompt + out
            blocks = rep.blocks_for(r.computed)  # the KV it sends stays until sent
            rep.free_blocks -= blocks
            held[i] += blocks
            dur = transfer_s(r.prompt)
            start = max(end_s, link_free[i], link_free[d]) if link_contention else end_s
            link_free[i] = link_free[d] = start + dur
            state["in_flight"] += 1
            env.process(deliver(r, i, d, blocks, out, start + dur))

    def decode_done(rep: Replica, finished: list[Req], end_s: float) -> None:
        for r in finished:
            rec.add(r, end_s, rep.idx)
            outstanding[rep.idx] -= r.prompt + r.output

    wall0 = time.perf_counter()
    env.process(arrival_process(env, traffic, max_len, cfg, max_req_tokens, state,
                                on_request))
    for rep in reps:
        env.process(replica_process(env, rep, fast, wake, interrupt, state, tl,
                                    prefill_done if rep.idx < P else decode_done,
                                    can_wait=lambda i: held[i] > 0))
    env.run()
    wall = time.perf_counter() - wall0
    unfinished = sum(len(r.running) + len(r.waiting) for r in reps) + state["in_flight"]
    extra = {"timeline": tl.arrays()}
    notes = [f"disaggregated: {P} prefill + {D} decode replicas; KV over {link.kind} at "
             f"{link.bandwidth_bps / 1e9:.1f} GB/s per card + {link.latency_s * 1e6:.0f} us"
             f"{', link contention' if link_contention else ''}"]
    return ServeResult(
        **rec.arrays(), arrived=state["arrived"], rejected=state["rejected"],
        clipped=state["clipped"], unfinished=unfinished,
        replica_busy_s=[r.busy_s for r in reps],
        replica_prefill_busy_s=[r.prefill_busy_s for r in reps],
        replica_steps=[r.steps for r in reps],
        replica_peak_blocks=[r.peak_blocks_used for r in reps], replica_total_blocks=num_blocks,
        end_s=float(env.now), events=state["events"], sim_wall_s=wall, mode=setup.mode,
        notes=notes, **extra)
