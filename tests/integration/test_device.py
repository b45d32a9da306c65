"""training.device=cuda: without CuPy, or with CuPy but no GPU, `minibert train` stops before any work with a
message that says what to install or use (exit 2, nothing written). The GPU path itself needs a GPU and is not
run here (benchmarks/gpu_step.py measures it; scripts/cupy_check.py checks the ops)."""

from __future__ import annotations

import sys
import types

import pytest

from mini_bert import cli


def train_on_cuda(tmp_path, capsys) -> tuple[int, str, str]:
    run = tmp_path / "run"
    code = cli.main(["train", "--no-progress", "training.device=cuda", f"training.output_dir={run}",
                     "data.corpus=/nonexistent/corpus.txt"])       # never read: the device is checked first
    out, err = capsys.readouterr()
    assert not run.exists()
    return code, out, err


def test_cuda_without_cupy_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)                 # `import cupy` raises ImportError
    code, out, err = train_on_cuda(tmp_path, capsys)
    assert code == 2
    assert "training.device=cuda needs CuPy, which is not installed: pip install 'mini-bert[gpu]'" in err
    assert "Traceback" not in err and "corpus" not in out


def test_cuda_with_cupy_but_no_gpu_says_so(tmp_path, capsys, monkeypatch):
    class CUDARuntimeError(RuntimeError):
        pass

    def no_device():
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.__version__ = "13.3.0"
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    code, out, err = train_on_cuda(tmp_path, capsys)
    assert code == 2
    assert "training.device=cuda: CuPy 13.3.0 is installed but finds no usable GPU (CUDARuntimeError: " \
           "cudaErrorNoDevice" in err
    assert "training.device=cpu" in err and "corpus" not in out


def test_the_default_device_is_the_cpu():
    from mini_bert.config import TrainingConfig

    assert TrainingConfig().device == "cpu"
    with pytest.raises(ValueError):
        TrainingConfig(device="tpu")
