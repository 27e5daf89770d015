"""Built-in routers (one per file); importing this package registers them."""

from lorasim.policies.routing import (  # noqa: F401
    adapter_affinity,
    consistent_hash,
    dlora,
    least_kv,
    least_outstanding,
    power_of_two,
    random,
    round_robin,
)
