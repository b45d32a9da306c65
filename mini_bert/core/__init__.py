"""The model: embeddings, attention, layers, the forward pass and its hand-written backward pass."""

from importlib import import_module

# Resolved on first use: importing one core module does not import the others.
_EXPORTS = {"MiniBERT": ".model", "describe_cache": ".model", "MiniBERTGradients": ".gradients"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'mini_bert.core' has no attribute {name!r}")
