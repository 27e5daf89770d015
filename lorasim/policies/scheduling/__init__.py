"""Built-in schedulers (one per file); importing this package registers them."""

from lorasim.policies.scheduling import (  # noqa: F401
    affinity,
    batch_completion,
    fcfs_break,
    fcfs_grouped,
    score,
    vllm,
)
