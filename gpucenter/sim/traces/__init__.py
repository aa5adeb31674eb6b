"""Trace loaders (Philly, Gavel, Tiresias, openb, generic CSV) and the synthetic generator."""

from gpucenter.sim.traces.common import ApplicantType, TraceError, TraceJob
from gpucenter.sim.traces.loaders import (
    FORMATS,
    gavel_throughputs,
    load_gavel,
    load_generic,
    load_philly,
    load_tiresias,
    load_trace,
    write_generic,
)
from gpucenter.sim.traces.synthetic import DEFAULT_MIX, ApplicantMix, synthetic_trace

__all__ = [
    "DEFAULT_MIX",
    "FORMATS",
    "ApplicantMix",
    "ApplicantType",
    "TraceError",
    "TraceJob",
    "gavel_throughputs",
    "load_gavel",
    "load_generic",
    "load_philly",
    "load_tiresias",
    "load_trace",
    "synthetic_trace",
    "write_generic",
]
