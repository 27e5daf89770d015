"""Analysis helpers: plots of runs and sweeps (:mod:`lorasim.analysis.plots`)."""

from lorasim.analysis.plots import adapter_waits, latency_cdfs, plot_dir, sweep_metrics, timeline

__all__ = ["adapter_waits", "latency_cdfs", "plot_dir", "sweep_metrics", "timeline"]
