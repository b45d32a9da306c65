"""Checkpoints: weights (safetensors) + optimizer state + config + tokenizer + RNG and data states + step.

A checkpoint is a folder:
    model.safetensors       parameters under their public names (W_Q_0, ...), as in docs/MODEL.md
    optimizer.safetensors   every array of the optimizer's state_dict (AdamW: m, v; Lion: m; Lookahead: slow and
                            inner.*), with its integers and the optimizer's kind in the metadata — absent in
                            weights-only exports
    auxiliary.safetensors   tensors trained beside the model that it does not use: ELECTRA's generator
                            (generator.<name>) and replaced-token head (rtd_w, rtd_b); only in such runs
    config.yaml             the full RunConfig
    vocab.txt, tokenizer_config.json
    trainer_state.json      step, elapsed time, best validation loss, RNG states, data-stream position

It is written into a temporary folder beside its final place and renamed into place, so a crash (even SIGKILL)
leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..config import RunConfig
from ..errors import CheckpointError
from .device import to_host
from .step import first_nonfinite

STEP_PREFIX = "step_"
TRASH_PREFIX = ".deleting-"     # a pruned checkpoint on its way out


@dataclass
class Checkpoint:
    path: Path
    config: RunConfig
    model: object
    tokenizer: object | None
    optimizer_state: dict | None = None       # what the optimizer's load_state_dict takes
    trainer_state: dict = field(default_factory=dict)
    optimizer_kind: str | None = None          # "adamw", "lion", "lookahead(lion)", ...; None without optimizer state
    auxiliary: dict | None = None              # auxiliary.safetensors: tensors trained beside the model (ELECTRA's
                                               # generator and head), None when the run had none


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, config: RunConfig, model, tokenizer, optimizer=None,
                    trainer_state: dict | None = None) -> Path:
    """Write a checkpoint folder atomically (temporary folder, fsync, rename). Replaces an existing one."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a writer of this checkpoint killed mid-write (SIGKILL) left its temporary folder: remove it
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    restore_replaced(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        # host copies: a model trained on a GPU (training.device=cuda) writes the same files as one on the CPU
        save_file({k: np.ascontiguousarray(to_host(v)) for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"), metadata={"format": "mini_bert"})
        if hasattr(model, "auxiliary_state_dict"):       # ELECTRA: the generator and head beside the model
            save_file({k: np.ascontiguousarray(to_host(v)) for k, v in model.auxiliary_state_dict().items()},
                      str(tmp / "auxiliary.safetensors"), metadata={"format": "mini_bert"})
        if optimizer is not None:
            arrays, metadata = _optimizer_payload(optimizer)
            save_file(arrays, str(tmp / "optimizer.safetensors"), metadata=metadata)
        (tmp / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False), encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save(tmp)
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state or {}), encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
    except BaseException:   # an error (disk full, ...) leaves no half-written folder behind; SIGKILL still can
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():   # replace: move the old one aside first, so that one of the two is always complete
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def restore_replaced(path: Path) -> None:
    """Finish a replacement of checkpoint `path` that a kill interrupted. save_checkpoint moves the old folder
    aside (.NAME.old-PID) before renaming the new one into place: killed between the two renames, `path` is missing
    and the old folder is its last complete version, so it goes back; killed after them, the old one is garbage."""
    for old in sorted(path.parent.glob(f".{path.name}.old-*")):
        if not path.exists() and (old / "trainer_state.json").exists():
            os.replace(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)


def list_step_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete step checkpoints in a run folder, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)
             and p.name[len(STEP_PREFIX):].isdigit() and (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    steps = list_step_checkpoints(run_dir)
    return steps[-1] if steps else None


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its `best`, else its latest step checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a checkpoint folder or a run folder (runs/...)")
    if (path / "model.safetensors").exists():
        return path
    if (path / "best" / "model.safetensors").exists():
        return path / "best"
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path} holds no checkpoint (no model.safetensors, no step_* folder); train first")
    return latest


def check_tensors(file: Path, tensors: dict, dtype: np.dtype, allow_nonfinite: bool = False) -> None:
    """Every tensor of `file` in the run's dtype and finite: a checkpoint that `minibert train` wrote always is, so
    anything else was written by other code or damaged, and converting or using it silently would hide that."""
    for name, a in tensors.items():
        if a.dtype != dtype:
            raise CheckpointError(f"{file}: tensor {name!r} is {a.dtype}, but the run's model.dtype is {dtype}; "
                                  f"Mini-BERT writes every tensor as {dtype}. Convert the file (every array "
                                  f".astype({str(dtype)!r})) or use a checkpoint written by `minibert train`")
    if not allow_nonfinite:
        bad = first_nonfinite(tensors.items())
        if bad is not None:
            raise CheckpointError(f"{file}: tensor {bad!r} holds NaN or infinite values (what a diverged run "
                                  f"leaves); use an earlier checkpoint of the run, or load_checkpoint(..., "
                                  f"allow_nonfinite=True) to inspect it")


def load_checkpoint(path: str | Path, need_tokenizer: bool = True, allow_nonfinite: bool = False) -> Checkpoint:
    """Load a checkpoint folder (or a run folder's best, else latest: `resolve_checkpoint_dir`). Every problem is a
    CheckpointError that names the file: a missing or damaged file, a config that does not validate, tensors of
    another dtype or shape than the config's, and non-finite weights or optimizer state (unless allow_nonfinite)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from ..core.model import MiniBERT

    path = resolve_checkpoint_dir(path)
    cfg_file = path / "config.yaml"
    if not cfg_file.exists():
        raise CheckpointError(f"{cfg_file} is missing: this is not a Mini-BERT checkpoint")
    try:
        raw = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise CheckpointError(f"{cfg_file} holds a {type(raw).__name__}, not a mapping of settings: this is not "
                                  f"a Mini-BERT run configuration; use a checkpoint written by `minibert train`")
        config = RunConfig(**raw)
    except CheckpointError:
        raise
    except (yaml.YAMLError, ValueError) as e:
        raise CheckpointError(f"{cfg_file} is not a valid run configuration: {e}") from None
    model = MiniBERT(config.model, seed=config.training.seed)
    weights = path / "model.safetensors"
    try:
        state = load_file(str(weights))
    except TypeError as e:                      # a dtype NumPy has no type for, such as bfloat16
        raise CheckpointError(f"{weights} holds tensors NumPy cannot read ({e}); Mini-BERT checkpoints are "
                              f"{config.model.dtype}: convert the file, or use a checkpoint written by "
                              f"`minibert train`") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{weights} is truncated or corrupt ({e}); use another checkpoint of the run "
            f"(e.g. an earlier step_* folder or best/)") from None
    check_tensors(weights, state, np.dtype(config.model.dtype), allow_nonfinite)
    try:
        model.load_state_dict(state, strict=True)
    except ValueError as e:
        raise CheckpointError(f"{weights}: {e}") from None
    tokenizer = None
    if (path / "vocab.txt").exists():
        from ..data.tokenizer import WordPieceTokenizer

        tokenizer = WordPieceTokenizer.load(path)
        if tokenizer.vocab_size != config.model.vocab_size:
            raise CheckpointError(
                f"{path / 'vocab.txt'} has {tokenizer.vocab_size} tokens but the model's vocabulary has "
                f"{config.model.vocab_size}: the tokenizer does not belong to these weights")
    elif need_tokenizer:
        raise CheckpointError(f"{path} has no tokenizer (vocab.txt); it cannot turn text into ids. "
                              "Use a checkpoint written by `minibert train`.")
    optimizer_state = optimizer_kind = None
    opt_file = path / "optimizer.safetensors"
    if opt_file.exists():
        optimizer_state, optimizer_kind = _load_optimizer_state(opt_file)
        check_tensors(opt_file, {k: v for k, v in optimizer_state.items() if isinstance(v, np.ndarray)},
                      np.dtype(config.model.dtype), allow_nonfinite)
    auxiliary = None
    aux_file = path / "auxiliary.safetensors"
    if aux_file.exists():
        try:
            auxiliary = load_file(str(aux_file))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{aux_file} is truncated or corrupt ({e}); use another checkpoint of the "
                                  f"run") from None
        check_tensors(aux_file, auxiliary, np.dtype(config.model.dtype), allow_nonfinite)
    state_file = path / "trainer_state.json"
    try:
        trainer_state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{state_file} is corrupt ({e})") from None
    return Checkpoint(path, config, model, tokenizer, optimizer_state, trainer_state, optimizer_kind, auxiliary)


# Optimizer state: arrays as tensors, everything else (step counts, Lookahead's k) as JSON in the metadata.
# safetensors writes metadata keys in hash-map order, which changes from call to call; one key keeps the file's
# bytes a function of the state (load -> save reproduces a checkpoint exactly).
_OPTIMIZER_META = "mini_bert_optimizer"


def _optimizer_payload(optimizer) -> tuple[dict, dict]:
    """(tensors, metadata) of optimizer.state_dict(): {name: array}, {_OPTIMIZER_META: JSON of kind and scalars}."""
    arrays, scalars = {}, {}
    for key, value in optimizer.state_dict().items():
        if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):     # NumPy or CuPy
            arrays[key] = np.ascontiguousarray(to_host(value))
        elif isinstance(value, (bool, int, float, str, np.integer, np.floating)):
            scalars[key] = value.item() if isinstance(value, np.generic) else value
        else:
            raise TypeError(f"optimizer state entry {key!r} is a {type(value).__name__}; a checkpoint holds arrays "
                            f"and numbers only")
    kind = getattr(optimizer, "kind", type(optimizer).__name__.lower())
    return arrays, {_OPTIMIZER_META: json.dumps({"kind": kind, "scalars": scalars}, sort_keys=True)}


def _load_optimizer_state(opt_file: Path) -> tuple[dict, str]:
    """(state for load_state_dict, kind) from optimizer.safetensors, this format or the AdamW-only one before it
    (tensors m and v, metadata {"t": step})."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        with safe_open(str(opt_file), framework="numpy") as f:
            metadata = f.metadata() or {}
        arrays = load_file(str(opt_file))
        if _OPTIMIZER_META in metadata:
            info = json.loads(metadata[_OPTIMIZER_META])
            kind, scalars = str(info["kind"]), dict(info["scalars"])
        else:
            kind, scalars = "adamw", {"t": int(metadata["t"])}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{opt_file} is truncated or corrupt ({e!r}); use another checkpoint of the "
                              f"run") from None
    return {**arrays, **scalars}, kind


def load_model_and_tokenizer(path: str | Path):
    """(MiniBERT, WordPieceTokenizer) from a checkpoint or run folder; errors if it has no tokenizer."""
    ck = load_checkpoint(path, need_tokenizer=True)
    return ck.model, ck.tokenizer


def prune_checkpoints(run_dir: str | Path, keep_last: int, keep_every: int = 0) -> None:
    """Delete all but the newest `keep_last` step checkpoints (best/ is separate and kept). With keep_every > 0,
    checkpoints at multiples of keep_every steps are kept too: the history that weight-evolution and attention-over-
    training analyses read."""
    run_dir = Path(run_dir)
    for p in list_step_checkpoints(run_dir)[:-keep_last]:
        if keep_every and int(p.name[len(STEP_PREFIX):]) % keep_every == 0:
            continue
        # rename first (atomic), then delete: a kill during the deletion leaves a hidden folder that no longer
        # counts as a checkpoint, never a half-deleted one that still does
        trash = run_dir / f"{TRASH_PREFIX}{p.name}"
        os.replace(p, trash)
        shutil.rmtree(trash, ignore_errors=True)
    for leftover in run_dir.glob(f"{TRASH_PREFIX}*"):       # what an earlier kill left behind
        shutil.rmtree(leftover, ignore_errors=True)


def rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state
