"""Built-in eviction policies (one per file); importing this package registers them."""

from lorasim.policies.eviction import lru  # noqa: F401
