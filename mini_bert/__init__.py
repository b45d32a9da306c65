"""Mini-BERT: a BERT encoder in pure NumPy, with a hand-derived backward pass for every operation.

    from mini_bert import MiniBERT, MiniBERTGradients, mask_tokens, mlm_cross_entropy, ModelConfig
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mini-bert")
except PackageNotFoundError:        # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Resolved on first use: `import mini_bert` stays cheap, and the facade imports nothing the layers below rely on.
_EXPORTS = {
    "MiniBERT": "mini_bert.core.model",
    "MiniBERTGradients": "mini_bert.core.gradients",
    "ModelConfig": "mini_bert.config",
    "mask_tokens": "mini_bert.data.masking",
    "mlm_cross_entropy": "mini_bert.core.gradients",
    "ModelFactory": "mini_bert.factory",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mini_bert' has no attribute {name!r}")
