"""Workload: the requests and the adapters of a scenario.

Public API:
    WorkloadConfig, AdaptersConfig   the scenario's ``workload:`` and ``adapters:`` sections
    AdapterSpec, build_adapters      the adapter list (names, ranks, sizes)
    Request, build_requests          the requests, sorted by arrival time
    build_request_arrays, RequestArrays   the same as numpy arrays
    read_trace, TraceData            trace readers (Azure 2023, Mooncake, generic CSV/JSONL)
"""

from lorasim.workload.adapters import AdapterSpec, build_adapters
from lorasim.workload.arrivals import (
    BurstArrivals,
    ConstantArrivals,
    GammaArrivals,
    PerAdapterPoissonArrivals,
    PoissonArrivals,
    SingleArrival,
)
from lorasim.workload.config import (
    AdaptersConfig,
    ChoiceRanks,
    CountRanks,
    CycleRanks,
    SyntheticStream,
    TraceStream,
    WorkloadConfig,
)
from lorasim.workload.generate import RequestArrays, build_request_arrays, build_requests
from lorasim.workload.lengths import EmpiricalLengths, FixedLength, LognormalLength, SeparateLengths, UniformLength
from lorasim.workload.popularity import PowerLawPopularity, UniformPopularity, WeightsPopularity, ZipfPopularity
from lorasim.workload.request import Request
from lorasim.workload.traces import TraceData, read_trace

__all__ = [
    "AdapterSpec", "AdaptersConfig", "BurstArrivals", "ChoiceRanks", "ConstantArrivals", "CountRanks", "CycleRanks",
    "EmpiricalLengths", "FixedLength", "GammaArrivals", "LognormalLength", "PerAdapterPoissonArrivals",
    "PoissonArrivals", "PowerLawPopularity", "Request", "RequestArrays", "SeparateLengths", "SingleArrival",
    "SyntheticStream", "TraceData", "TraceStream", "UniformLength", "UniformPopularity", "WeightsPopularity",
    "WorkloadConfig", "ZipfPopularity", "build_adapters", "build_request_arrays", "build_requests", "read_trace",
]
