"""Datasets: registry, offline mirror, hub loading and the protocol splits."""
from suite.data.examples import Example
from suite.data.registry import DATASETS, DatasetSpec, HubSource
from suite.data.splits import ProtocolSplits, SplitOptions, load_protocol_splits

__all__ = [
    "DATASETS", "DatasetSpec", "Example", "HubSource", "ProtocolSplits", "SplitOptions",
    "load_protocol_splits",
]
