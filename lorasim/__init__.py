"""lorasim: a discrete-event simulator of multi-LoRA LLM serving.

Public API::

    import lorasim
    scenario = lorasim.load_scenario("scenarios/default.yaml", overrides=["engine.max_loras=16"])
    results = lorasim.simulate(scenario)
    results.summary["ttft_ms_p99"]; results.requests; results.steps
"""

from lorasim.config import Scenario, load_scenario
from lorasim.engine.simulation import Simulation, simulate
from lorasim.errors import ConfigError, DataFileError, LorasimError, PolicyError
from lorasim.metrics.results import Results

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataFileError", "LorasimError", "PolicyError", "Results", "Scenario", "Simulation",
    "load_scenario", "simulate",
]
