"""Calibration and validation of lorasim against real vLLM runs."""

from lorasim.calibrate.validate import build_scenario, validate_runs, window_metrics

__all__ = ["build_scenario", "validate_runs", "window_metrics"]
