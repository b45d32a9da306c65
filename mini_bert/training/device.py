"""Where training runs: `training.device=cpu` (NumPy, the default) or `cuda` (CuPy, optional extra `gpu`).

The core math uses only NumPy API that CuPy implements and makes new arrays `like=` its inputs, so the model runs
on CuPy arrays once its flat buffer is a CuPy array (scripts/cupy_check.py checks it op by op). A device therefore
only moves things: the parameter buffer (`move_model`), the gradient buffers (`move_gradients`), each batch
(`put`) and a loaded optimizer state (`put_state`); the optimizer allocates its own buffers `like` the parameters.
Data, masking and RNGs stay on the host (NumPy), so a GPU run sees exactly the batches and masks of a CPU run,
and checkpoints are written from host copies (`to_host`): the same safetensors files, loadable without a GPU.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from ..data.batches import Batch
from ..errors import ConfigError

GPU_EXTRA = "pip install 'mini-bert[gpu]'"     # CuPy built for CUDA 12
BATCH_FIELDS = tuple(f.name for f in fields(Batch))


def to_host(a):
    """`a` as a NumPy array: NumPy arrays as they are, CuPy arrays copied from the GPU (their `.get()`)."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    if get is None:
        raise TypeError(f"expected a NumPy or CuPy array, got {type(a).__name__}")
    return get()


class CPU:
    """NumPy on the host: every move is the identity."""

    name = "cpu"
    xp = np

    def describe(self) -> str:
        return "cpu (NumPy)"

    def move_model(self, model) -> None:
        pass

    def move_gradients(self, grads) -> None:
        pass

    def put(self, batch: Batch) -> Batch:
        return batch

    def put_state(self, state: dict) -> dict:
        return state


class CUDA(CPU):
    """CuPy on the current CUDA device."""

    name = "cuda"

    def __init__(self, cupy):
        self.xp = cupy

    def describe(self) -> str:
        cp = self.xp
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cuda (CuPy {cp.__version__}, {gpu})"

    def move_model(self, model) -> None:
        model.store.rebind(self.xp.asarray(model.store.flat))          # the named views follow the buffer

    def move_gradients(self, grads) -> None:
        flat = grads.store.flat
        grads.store.rebind(self.xp.zeros(flat.shape, dtype=flat.dtype))

    def put(self, batch: Batch) -> Batch:
        return Batch(*(self.xp.asarray(getattr(batch, f)) for f in BATCH_FIELDS))

    def put_state(self, state: dict) -> dict:
        return {k: self.xp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}


def resolve_device(name: str):
    """The device of training.device. ConfigError (before any work) when `cuda` lacks CuPy or a usable GPU."""
    if name == "cpu":
        return CPU()
    try:
        import cupy
    except ImportError:
        raise ConfigError(f"training.device=cuda needs CuPy, which is not installed: {GPU_EXTRA} (CuPy for CUDA "
                          f"12), or train with training.device=cpu") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:                  # CUDARuntimeError: no driver, no device, driver too old
        raise ConfigError(f"training.device=cuda: CuPy {getattr(cupy, '__version__', '')} is installed but finds no "
                          f"usable GPU ({type(e).__name__}: {e}); train with training.device=cpu") from None
    if count < 1:
        raise ConfigError(f"training.device=cuda: CuPy {getattr(cupy, '__version__', '')} finds no GPU on this "
                          f"machine; train with training.device=cpu")
    return CUDA(cupy)
