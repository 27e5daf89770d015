"""Built-in eviction policies (one per file); importing this package registers them."""

from lorasim.policies.eviction import cost_aware, fifo, lfu, lru  # noqa: F401
