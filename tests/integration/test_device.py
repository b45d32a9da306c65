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


def fake_cupy() -> types.ModuleType:
    """NumPy under CuPy's name: enough of CuPy's API for training/device.py, with host arrays. It checks the
    trainer's plumbing for training.device=cuda (what moves where, one thread, checkpoints), not CuPy's kernels."""
    import numpy as np

    fake = types.ModuleType("cupy")
    fake.__version__ = "0+numpy-stand-in"
    fake.asarray, fake.zeros = (lambda a, dtype=None: np.array(a, dtype=dtype, copy=True)), np.zeros
    fake.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                      getDeviceProperties=lambda i: {"name": b"stand-in GPU"}),
        Device=lambda *a: types.SimpleNamespace(id=0, synchronize=lambda: None))
    return fake


def test_the_trainer_runs_through_the_device_moves_and_writes_cpu_checkpoints(tmp_path, monkeypatch, capsys):
    import json

    import numpy as np

    from mini_bert.data.readers import load_ptb
    from mini_bert.data.tokenizer import WordPieceTokenizer
    from mini_bert.training.checkpointing import latest_checkpoint, load_checkpoint

    lines = load_ptb("train")[:1000]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    WordPieceTokenizer.train(lines, vocab_size=256).save(tmp_path)
    runs = {}
    for device in ("cpu", "cuda"):
        if device == "cuda":
            monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
        run = tmp_path / device
        args = ["model.vocab_size=256", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2",
                "model.intermediate_size=32", "model.max_position_embeddings=32", f"data.corpus={tmp_path / 'c.txt'}",
                f"data.tokenizer={tmp_path / 'vocab.txt'}", "data.max_seq_len=32", "data.valid_batches=1",
                "training.max_steps=8", "training.log_every=1", "training.eval_every=4", "training.batch_size=4",
                "training.checkpoint_every=4", f"training.output_dir={run}", f"training.device={device}",
                "training.threads=1"]
        assert cli.main(["train", "--no-progress", *args]) == 0
        runs[device] = run
    assert "device: cuda (CuPy 0+numpy-stand-in, stand-in GPU)" in capsys.readouterr().out
    curve = lambda run: [(r["step"], r["train_loss"]) for r in map(json.loads, (run / "metrics.jsonl").open())]
    assert curve(runs["cuda"]) == curve(runs["cpu"])
    a, b = (load_checkpoint(latest_checkpoint(runs[d])) for d in ("cpu", "cuda"))
    assert np.array_equal(a.model.store.flat, b.model.store.flat)
    assert np.array_equal(a.optimizer_state["v"], b.optimizer_state["v"])
