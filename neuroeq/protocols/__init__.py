"""Experiment protocols: TOML files (data only) describing what to simulate, which rule,
data set, budget and outputs; ``neuroeq run FILE`` runs one into a result folder and
``neuroeq sweep FILE`` runs a grid of them on Dask."""

from neuroeq.protocols.loader import Protocol, apply_overrides, load_protocol, parse_override
from neuroeq.protocols.runner import run_protocol
from neuroeq.protocols.schema import KINDS, SCHEMA, validate

__all__ = ["KINDS", "SCHEMA", "Protocol", "apply_overrides", "load_protocol", "parse_override",
           "run_protocol", "validate"]
