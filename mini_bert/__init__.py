"""Mini-BERT: a BERT encoder in pure NumPy, with a hand-derived backward pass for every operation.

    from mini_bert import MiniBERT, MiniBERTGradients, mask_tokens, mlm_cross_entropy, ModelConfig
"""

from importlib import import_module

__version__ = "0.1.0"

# Resolved on first use, so that `python -m mini_bert.training.mlm` (and the other demos) do not import the module
# they are about to run as __main__ a second time.
_EXPORTS = {
    "MiniBERT": "mini_bert.core.model",
    "MiniBERTGradients": "mini_bert.core.gradients",
    "ModelConfig": "mini_bert.config",
    "mask_tokens": "mini_bert.training.mlm",
    "mlm_cross_entropy": "mini_bert.training.mlm",
    "ModelFactory": "mini_bert.factory",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mini_bert' has no attribute {name!r}")
