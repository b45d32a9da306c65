"""The model: embeddings, attention, layers, the forward pass and its hand-written backward pass."""

from .gradients import MiniBERTGradients
from .model import MiniBERT, describe_cache

__all__ = ["MiniBERT", "MiniBERTGradients", "describe_cache"]
