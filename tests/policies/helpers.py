"""Build sequences and views by hand to test scheduling decisions in isolation."""

from __future__ import annotations

from lorasim.engine.sequence import Seq, SeqStatus
from lorasim.policies.base import ReplicaView, SchedulerLimits
from lorasim.workload.request import Request


def make_seq(rid: int, adapter: str | None, prompt: int = 16, output: int = 16, t: float | None = None) -> Seq:
    req = Request(rid, float(rid) if t is None else t, prompt, output, adapter)
    return Seq(req=req, adapter=adapter, num_prompt_tokens=prompt, max_output_tokens=output)


def running_seq(rid: int, adapter: str | None, prompt: int = 16, generated: int = 1, block_size: int = 16) -> Seq:
    """A running sequence that finished its prefill and has ``generated`` tokens (next step: one decode token)."""
    s = make_seq(rid, adapter, prompt)
    s.status = SeqStatus.RUNNING
    s.num_output_tokens = generated
    s.num_computed_tokens = prompt + generated - 1
    s.num_blocks = -(-s.num_computed_tokens // block_size)
    return s


def view(running=(), waiting=(), *, max_loras=4, max_num_seqs=256, max_num_batched_tokens=8192,
         chunked=True, free_blocks=10_000, gpu=frozenset()) -> ReplicaView:
    limits = SchedulerLimits(max_num_seqs, max_num_batched_tokens, max_loras, chunked, 16)
    used = sum(s.num_blocks for s in running)
    return ReplicaView(limits=limits, running=list(running), waiting=list(waiting), kv_free_blocks=free_blocks,
                       kv_total_blocks=free_blocks + used, gpu_adapters=frozenset(gpu), cpu_adapters=frozenset(gpu))
