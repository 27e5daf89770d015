"""Turn a ``workload:`` section and the adapter list into the simulation's requests.

Each stream is generated on its own, with numpy arrays and its own named random streams
(``arrivals:<name>``, ``lengths:<name>``, ``popularity:<name>``, ``trace-adapters:<name>``, ``cancel:<name>``;
``<name>`` is the stream's ``name`` or its index), so adding or changing one stream never changes another stream's
draws. The streams are then merged by a stable sort on arrival time (ties: stream order, then order within the
stream) and ``Request`` objects are built once at the end. Nothing is dropped except by explicit config (a stream's
``num_requests``/``duration_s``, a trace's window and ``max_requests``); what a trace stream kept is reported in
``RequestArrays.notes``.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorasim._model import MAX_REQUESTS, MAX_TIME_S, MAX_TOKENS
from lorasim.errors import ConfigError, DataFileError
from lorasim.paths import data_file
from lorasim.rng import RngStreams
from lorasim.workload.adapters import AdapterSpec
from lorasim.workload.arrivals import BurstArrivals, PerAdapterPoissonArrivals, SingleArrival, renewal_times
from lorasim.workload.config import ServegenStream, SyntheticStream, TraceStream, WorkloadConfig
from lorasim.workload.lengths import LengthsConfig, LognormalLength, SeparateLengths, TableCache, sample_lengths
from lorasim.workload.popularity import PopularityConfig, UniformPopularity, sample_adapters
from lorasim.workload.request import Request
from lorasim.workload.traces import read_trace_skipping, read_trace


@dataclass(frozen=True, slots=True)
class RequestArrays:
    """The workload as parallel arrays, sorted by arrival time (request ``i`` is row ``i``).

    Attributes:
        arrival_s: float64 arrival times, seconds.
        prompt_tokens: int64 prompt lengths (>= 1).
        output_tokens: int64 output lengths (>= 1).
        adapter_index: int64 position in ``adapter_names``, ``-1`` for the base model.
        stream_index: int64 index of the stream in ``workload.streams`` that produced the request.
        adapter_names: the scenario's adapter names.
        notes: human-readable facts about the generation (trace rows kept, 0-token fixes).
        cancel_after_s: float64 delay after arrival at which each request's client cancels it, seconds (NaN: never);
            None when no stream cancels requests.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    adapter_index: np.ndarray
    stream_index: np.ndarray
    adapter_names: tuple[str, ...]
    notes: tuple[str, ...] = ()
    cancel_after_s: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)

    def to_requests(self) -> list[Request]:
        """Build the ``Request`` objects (ids 0..n-1 in arrival order)."""
        lookup = np.array([*self.adapter_names, None], dtype=object)  # index -1 -> None
        adapters = lookup[self.adapter_index].tolist()
        was_enabled = gc.isenabled()
        gc.disable()  # a million new objects would trigger many useless collections (about 20% of the time)
        try:
            return list(map(Request, range(len(self)), self.arrival_s.tolist(), self.prompt_tokens.tolist(),
                            self.output_tokens.tolist(), adapters))
        finally:
            if was_enabled:
                gc.enable()


def build_requests(
    cfg: WorkloadConfig, adapters: list[AdapterSpec], rngs: RngStreams, data_dir: str | Path | None = None
) -> list[Request]:
    """Generate the requests of a workload.

    Args:
        cfg: the ``workload:`` section.
        adapters: the scenario's adapters (from :func:`build_adapters`).
        rngs: the simulation's random streams; use a fresh ``RngStreams(seed)`` for reproducible output.
        data_dir: where relative trace and length-table paths are looked up (see :mod:`lorasim.paths`).

    Returns:
        Requests sorted by arrival time, ``request_id`` 0..n-1 in that order.

    Raises:
        ConfigError: a stream refers to unknown adapters, needs adapters when there are none, or yields a length < 1.
        DataFileError: a trace or length table is missing or malformed.
    """
    return build_request_arrays(cfg, adapters, rngs, data_dir).to_requests()


def build_request_arrays(
    cfg: WorkloadConfig, adapters: list[AdapterSpec], rngs: RngStreams, data_dir: str | Path | None = None
) -> RequestArrays:
    """Like :func:`build_requests`, but returns numpy arrays (fast for analysis and millions of requests)."""
    names = [a.name for a in adapters]
    position = {n: i for i, n in enumerate(names)}  # adapter name -> index
    cache: TableCache = {}
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    cancels: list[np.ndarray] = []
    notes: list[str] = []
    for i, stream in enumerate(cfg.streams):
        where = f"workload.streams[{i}]"
        sname = stream.name if stream.name is not None else str(i)
        cand = _candidates(stream.adapters, names, position, where)
        if isinstance(stream, SyntheticStream):
            part, note = _synthetic(stream, cand, names, rngs, sname, where, data_dir, cache)
        elif isinstance(stream, ServegenStream):
            part, note = _servegen(stream, cand, names, rngs, sname, where, data_dir, cache)
        else:
            part, note = _trace(stream, cand, names, position, rngs, sname, where, data_dir, cache)
        if note:
            notes.append(note)
        for field, v in (("prompt", part[1]), ("output", part[2])):
            if len(v) and v.min() < 1:
                raise ConfigError(f"{where}.lengths.{field}: produced a length of {int(v.min())}; lengths must be >= 1")
        parts.append(part)
        cancels.append(_cancel_delays(stream, len(part[0]), rngs, sname))
    t = np.concatenate([p[0] for p in parts])
    order = np.argsort(t, kind="stable")
    stream_idx = np.concatenate([np.full(len(p[0]), k, dtype=np.int64) for k, p in enumerate(parts)])
    return RequestArrays(
        arrival_s=t[order],
        prompt_tokens=np.concatenate([p[1] for p in parts])[order],
        output_tokens=np.concatenate([p[2] for p in parts])[order],
        adapter_index=np.concatenate([p[3] for p in parts])[order],
        stream_index=stream_idx[order],
        adapter_names=tuple(names),
        notes=tuple(notes),
        cancel_after_s=(np.concatenate(cancels)[order]
                        if any(s.cancel_probability > 0 for s in cfg.streams) else None),
    )


def _cancel_delays(s: SyntheticStream | TraceStream, n: int, rngs: RngStreams, sname: str) -> np.ndarray:
    """Each request's cancellation delay after arrival (NaN: not cancelled), from the ``cancel:<name>`` stream.

    Draws nothing when the stream does not cancel, so enabling cancellation in one stream changes no other draws.
    """
    p = s.cancel_probability
    if p <= 0 or n == 0:
        return np.full(n, np.nan)
    rng = rngs.get(f"cancel:{sname}")
    hit = rng.random(n) < p
    d = s.cancel_after_s
    delay = rng.uniform(d[0], d[1], n) if isinstance(d, tuple) else np.full(n, float(d))
    return np.where(hit, delay, np.nan)


def _candidates(refs: list[str | int] | None, names: list[str], position: dict[str, int], where: str) -> np.ndarray:
    """Positions (into the adapter list) of a stream's adapters."""
    if refs is None:
        return np.arange(len(names), dtype=np.int64)
    out = []
    for r in refs:
        if isinstance(r, int):
            if r >= len(names):
                raise ConfigError(f"{where}.adapters: position {r} but the scenario has {len(names)} adapters")
            out.append(r)
        elif r in position:
            out.append(position[r])
        else:
            raise ConfigError(f"{where}.adapters: unknown adapter {r!r} (adapters are {_preview(names)})")
    if len(set(out)) != len(out):
        raise ConfigError(f"{where}.adapters: an adapter is listed twice: {refs}")
    return np.asarray(out, dtype=np.int64)


def _pick(pop: PopularityConfig | None, cand: np.ndarray, names: list[str], rng: np.random.Generator, n: int,
          where: str) -> np.ndarray:
    """Adapter index (into the adapter list, -1 = base) of each of ``n`` requests."""
    pop = pop if pop is not None else UniformPopularity()
    if len(cand) == 0:
        if pop.base_share < 1.0:
            raise ConfigError(f"{where}: the stream needs adapters but has none (adapters.count is 0 or the "
                              f"stream's adapters list is empty); set popularity.base_share: 1.0 for base-model only")
        return np.full(n, -1, dtype=np.int64)
    probs = pop.probabilities([names[k] for k in cand], where)
    local = sample_adapters(probs, pop.base_share, rng, n)
    return np.where(local >= 0, cand[np.maximum(local, 0)], -1)


def _lengths(cfg: LengthsConfig, rng: np.random.Generator, n: int, where: str, data_dir: str | Path | None,
             cache: TableCache) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`sample_lengths`, plus a note counting lognormal draws capped at ``MAX_TOKENS`` (``""`` if none).

    Fixed, uniform and empirical lengths are bounded by ``MAX_TOKENS`` already (config and length-table checks).
    """
    prompt, output = sample_lengths(cfg, rng, n, data_dir, cache)
    capped = []
    for field, v in (("prompt", prompt), ("output", output)):
        dist = getattr(cfg, field) if isinstance(cfg, SeparateLengths) else None
        if isinstance(dist, LognormalLength) and dist.max is None:
            num = int((v >= MAX_TOKENS).sum())
            if num:
                capped.append(f"{num} {field}")
    note = (f"{where}.lengths: {' and '.join(capped)} lengths drawn above {MAX_TOKENS} tokens were set to "
            f"{MAX_TOKENS} (MAX_TOKENS)") if capped else ""
    return prompt, output, note


def _synthetic(s: SyntheticStream, cand: np.ndarray, names: list[str], rngs: RngStreams, sname: str, where: str,
               data_dir: str | Path | None, cache: TableCache) -> tuple[tuple[np.ndarray, ...], str]:
    a = s.arrivals
    rng_a = rngs.get(f"arrivals:{sname}")
    rng_p = rngs.get(f"popularity:{sname}")
    if isinstance(a, PerAdapterPoissonArrivals):
        if len(cand) == 0:
            raise ConfigError(f"{where}: per_adapter_poisson arrivals need adapters but the stream has none")
        rates = a.adapter_rates([names[k] for k in cand], rng_p, where)
        total = float(rates.sum())
        if total <= 0:
            raise ConfigError(f"{where}.arrivals: every adapter of the stream has rate 0")
        if s.num_requests is None and total * s.duration_s > MAX_REQUESTS:
            raise ConfigError(f"{where}: the adapters' rates ({total:g} req/s in all) over duration_s "
                              f"{s.duration_s:g} s mean about {total * s.duration_s:.3g} requests, more than the "
                              f"limit of {MAX_REQUESTS:,}; lower the rates or the duration, or set num_requests")
        t = renewal_times(lambda n: rng_a.exponential(1.0 / total, n), total, s.start_s, s.num_requests,
                          s.duration_s)
        adapter = cand[sample_adapters(rates / total, 0.0, rng_p, len(t))]
    else:
        if isinstance(a, BurstArrivals):
            t = np.full(s.num_requests or 0, a.at_s, dtype=float)
        elif isinstance(a, SingleArrival):
            t = np.array([a.at_s], dtype=float)
        else:
            if s.num_requests is None and a.mean_rate() * s.duration_s > MAX_REQUESTS:
                raise ConfigError(f"{where}: arrivals.rate {a.mean_rate():g} req/s over duration_s {s.duration_s:g} s "
                                  f"means about {a.mean_rate() * s.duration_s:.3g} requests, more than the limit of "
                                  f"{MAX_REQUESTS:,}; lower the rate or the duration, or set num_requests")
            t = renewal_times(lambda n: a.gaps(rng_a, n), a.mean_rate(), s.start_s, s.num_requests, s.duration_s)
        adapter = _pick(s.popularity, cand, names, rng_p, len(t), where)
    prompt, output, note = _lengths(s.lengths, rngs.get(f"lengths:{sname}"), len(t), where, data_dir, cache)
    return (t, prompt, output, adapter), note


def _trace(s: TraceStream, cand: np.ndarray, names: list[str], position: dict[str, int], rngs: RngStreams,
           sname: str, where: str, data_dir: str | Path | None, cache: TableCache
           ) -> tuple[tuple[np.ndarray, ...], str]:
    path = data_file(s.path, data_dir)
    skipped: list = []
    if s.bad_rows == "skip":
        tr, skipped = read_trace_skipping(path, s.format, s.zero_tokens)
    else:
        tr = read_trace(path, s.format, s.zero_tokens)
    lo = int(np.searchsorted(tr.arrival_s, s.window_start_s, side="left"))
    hi = len(tr) if s.window_end_s is None else int(np.searchsorted(tr.arrival_s, s.window_end_s, side="left"))
    in_window = hi - lo
    if in_window == 0:
        field = "window_start_s" if lo == len(tr) or s.window_end_s is None else "window_end_s"
        end = "end" if s.window_end_s is None else f"{s.window_end_s:g}"
        raise ConfigError(f"{where}.{field}: the window [{s.window_start_s:g}, {end}) of {path} holds no requests "
                          f"(the trace spans {tr.arrival_s[0]:g}..{tr.arrival_s[-1]:g} s)")
    if s.max_requests is not None:
        hi = min(hi, lo + s.max_requests)
    t = (tr.arrival_s[lo:hi] - s.window_start_s) / s.rate_scale + s.start_s
    if t[-1] > MAX_TIME_S:
        raise ConfigError(f"{where}.rate_scale: the replayed trace ends at {t[-1]:g} s, beyond the limit of "
                          f"{MAX_TIME_S:g} s (start_s {s.start_s:g}, rate_scale {s.rate_scale:g})")
    n = len(t)
    length_note = ""
    if s.lengths is not None:
        prompt, output, length_note = _lengths(s.lengths, rngs.get(f"lengths:{sname}"), n, where, data_dir, cache)
    else:
        prompt, output = tr.prompt_tokens[lo:hi].copy(), tr.output_tokens[lo:hi].copy()
    if tr.adapter is not None and s.use_trace_adapters:
        adapter = np.empty(n, dtype=np.int64)
        for k, name in enumerate(tr.adapter[lo:hi]):
            if name is None:
                adapter[k] = -1
            elif name in position:
                adapter[k] = position[name]
            else:
                raise DataFileError(path, f"adapter {name!r} is not one of the scenario's adapters "
                                          f"({_preview(names)})", line=int(tr.lines[lo + k]))
    else:
        adapter = _pick(s.popularity, cand, names, rngs.get(f"trace-adapters:{sname}"), n, where)
    note = (f"{where}: {path.name} ({tr.format}): {len(tr)} requests read, {in_window} in window "
            f"[{s.window_start_s:g}, {'end' if s.window_end_s is None else f'{s.window_end_s:g}'}) s, {n} kept"
            + (f" (max_requests {s.max_requests})" if s.max_requests is not None else ""))
    if skipped:
        shown = ", ".join(str(line) for line, _ in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        note += f"; skipped {len(skipped)} bad rows (lines {shown}; first: {skipped[0][1]})"
    if tr.num_zero_prompt or tr.num_zero_output:
        fix = (f"{tr.num_zero_prompt} prompt and {tr.num_zero_output} output lengths of 0 in the whole trace "
               "were set to 1 (zero_tokens: one)")
        note += "; " + fix
    if length_note:
        note += "; " + length_note
    return (t, prompt, output, adapter), note


def _servegen(s: ServegenStream, cand: np.ndarray, names: list[str], rngs: RngStreams, sname: str, where: str,
              data_dir: str | Path | None, cache: TableCache) -> tuple[tuple[np.ndarray, ...], str]:
    """Arrivals of ServeGen clients mapped to the stream's adapters (see :class:`ServegenStream`)."""
    from lorasim.workload.servegen import client_arrivals, read_client

    root = data_file(s.path, data_dir)
    n_clients = s.clients if s.clients is not None else len(cand)
    if n_clients > len(cand):
        raise ConfigError(f"{where}.clients: {n_clients} clients but the stream has {len(cand)} adapters to map "
                          f"them to")
    if n_clients == 0:
        raise ConfigError(f"{where}: a servegen stream needs adapters")
    tables = [read_client(root, k) for k in range(n_clients)]
    end = s.window_start_s + s.duration_s
    recorded = sum(float(tb.mean_rate(s.window_start_s, end)) for tb in tables)  # trace req/s
    if recorded <= 0:
        raise ConfigError(f"{where}: clients 0..{n_clients - 1} send nothing in [{s.window_start_s:g}, {end:g}) s of "
                          f"{root}")
    factor = 1.0 if s.total_rate is None else s.total_rate / (recorded * s.time_scale)
    if recorded * factor * s.duration_s > MAX_REQUESTS:
        raise ConfigError(f"{where}: total_rate x duration_s means about {recorded * factor * s.duration_s:.3g} "
                          f"requests, more than the limit of {MAX_REQUESTS:,}; lower total_rate or duration_s")
    ts, ads = [], []
    for k, tb in enumerate(tables):
        t = client_arrivals(tb, s.window_start_s, end, factor, rngs.get(f"servegen:{sname}:{k}"))
        ts.append(t / s.time_scale + s.start_s)
        ads.append(np.full(len(t), cand[k], dtype=np.int64))
    t = np.concatenate(ts)
    order = np.argsort(t, kind="stable")
    t, adapter = t[order], np.concatenate(ads)[order]
    prompt, output, note = _lengths(s.lengths, rngs.get(f"lengths:{sname}"), len(t), where, data_dir, cache)
    summary = (f"{where}: ServeGen {root.name}: {n_clients} clients, trace [{s.window_start_s:g}, {end:g}) s, "
               f"recorded {recorded:.3g} req/s x {factor * s.time_scale:.3g} -> {len(t)} requests")
    return (t, prompt, output, adapter), summary + (f"; {note}" if note else "")


def _preview(names: list[str]) -> str:
    if len(names) <= 4:
        return str(names)
    return f"[{names[0]!r}, {names[1]!r}, ..., {names[-1]!r}] ({len(names)} in all)"
