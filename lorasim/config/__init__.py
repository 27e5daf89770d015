"""Scenario schema and loading."""

from lorasim.config.loader import apply_overrides, load_scenario, scenario_to_yaml
from lorasim.config.scenario import Scenario

__all__ = ["Scenario", "apply_overrides", "load_scenario", "scenario_to_yaml"]
