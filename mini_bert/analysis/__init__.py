"""Inspection of trained models: figures, training dynamics, representations, the loss landscape, the profiler
and the memory model. Everything here reads a model through its forward cache and its own stage functions."""
