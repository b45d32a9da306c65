"""Reference implementations that the NumPy model is checked against (optional extras: they need PyTorch).

    from mini_bert.reference.torch_bert import TorchMiniBERT

This package does not import torch itself, so `import mini_bert.reference` works without it.
"""
