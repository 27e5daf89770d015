"""Scenarios shipped inside the package (the embedded default)."""

from pathlib import Path


def default_scenario_path() -> Path:
    """Path of the embedded default scenario (synthetic workload, shipped profile, no data directory needed)."""
    return Path(__file__).with_name("default.yaml")
