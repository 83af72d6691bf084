"""Baselines that neuroeq's rules are measured against (they come from other packages;
neuroeq only wires them to its data sets and metrics)."""

from neuroeq.baselines.snn_bptt import SpikingMLP, train_snn_bptt

__all__ = ["SpikingMLP", "train_snn_bptt"]
