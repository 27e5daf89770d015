"""Built-in schedulers (one per file); importing this package registers them."""

from lorasim.policies.scheduling import (  # noqa: F401
    affinity,
    batch_completion,
    dlora,
    drain,
    edf,
    fcfs_break,
    fcfs_grouped,
    multi_queue,
    score,
    slora,
    sjf,
    vllm,
    vllm_v0,
    vtc,
)
