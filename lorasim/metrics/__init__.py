"""Recording hooks, result tables and summaries."""

from lorasim.metrics.recorder import Recorder
from lorasim.metrics.results import Results
from lorasim.metrics.summary import summarize, weighted_percentile

__all__ = ["Recorder", "Results", "summarize", "weighted_percentile"]
