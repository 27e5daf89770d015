"""Built-in adapter-memory layouts (one per file); importing this package registers them."""

from lorasim.policies.memory import flat, rank_paged, unified  # noqa: F401
