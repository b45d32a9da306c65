"""Data-parallel training across processes with MPI: each rank computes the gradient of its rows of every global
batch, and one Allreduce per step sums them.

    mpirun -n 2 python -m mini_bert train [--config FILE] [key=value ...]

The trainer talks to a world through a few calls: `shard` (this rank's rows of a batch), `reduce` (sum the gradient
buffer and the loss over the ranks), `share` and `gather` (small values from and to rank 0), `agree_stop`, and
`startup` / `root_first` / `check_same` while it starts. `SingleProcess`, the default, does nothing in any of them,
and mpi4py is not even imported; `MPIWorld` is what `detect_world()` returns under mpirun with more than one rank.

Why an N-rank run computes what one process computes:
- every rank draws the whole global batch from the same data stream (same seed: same rows, same masks) and keeps
  its contiguous slice of rows, split as the threads of one process split a batch (training.batch_size stays the
  global batch). The stream's state is therefore the same on every rank, and checkpoints do not depend on N;
- the loss is the mean over the masked tokens of the whole batch. A rank holding n_r of its N masked tokens scales
  its loss and gradient by n_r / N (it counts N on the whole batch it drew), so the sum over the ranks, which the
  Allreduce forms, is the batch's mean: no division afterwards, and the same weights the threads of one process
  use. The loss travels in the same buffer, one value after the gradient;
- after the Allreduce every rank holds the same gradient, so clipping sees the global norm and the optimizer takes
  the same step everywhere;
- rank 0 alone logs, evaluates and writes checkpoints; its evaluation is shared with the others, so the `best`
  checkpoint and adaptive masking decide alike everywhere.
With 2 ranks of 1 thread against 1 process of 2 threads the row blocks are the same and a + b is exact in either
order, so the two runs stay equal; only the logged loss differs, by the float32 rounding of its slot in the buffer.

Failures. At start-up every rank's mistake reaches every rank (`startup`): each collective there is an `agree`,
an allgather that carries a failure flag, so all ranks stop at the same point with exit code 2, and rank 0 prints
the message. During training the collectives are non-blocking requests polled to completion (`_wait`), so that
Python's signal handlers keep running: when a rank dies, OpenMPI aborts the job and sends SIGTERM to the others
(SIGKILL a second later), and a rank that then waits for the dead one raises `RankLost` with a clear message
instead of hanging or vanishing silently.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager, nullcontext

import numpy as np

from .. import errors
from ..data.batches import Batch
from .device import BATCH_FIELDS
from ..errors import ConfigError, MiniBertError

# Environment variables a launcher sets with the world size: OpenMPI's mpirun, then MPICH / Intel MPI (Hydra) and
# other PMI launchers (srun --mpi=pmi2/pmix).
WORLD_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
SIGNAL_GRACE_S = 0.5      # after a stop signal, how long a collective may still take (OpenMPI kills 1 s after it)


class RankLost(RuntimeError):
    """Another rank stopped answering: the job is being torn down (a rank died, or mpirun was stopped)."""


def launched_world_size() -> int:
    """The number of ranks the launcher started (1 when not launched by one)."""
    for name in WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


_world = None


def detect_world():
    """MPIWorld when launched with more than one rank (mpi4py imported only then), else SingleProcess. Cached."""
    global _world
    if _world is None:
        size = launched_world_size()
        if size <= 1:
            _world = SingleProcess()
        else:
            try:
                from mpi4py import MPI
            except ImportError:
                raise ConfigError(f"launched as {size} MPI ranks, but mpi4py is not installed: "
                                  f"pip install 'mini-bert[mpi]' (it needs an MPI library, e.g. Debian's "
                                  f"openmpi-bin libopenmpi-dev)") from None
            _world = MPIWorld(MPI.COMM_WORLD) if MPI.COMM_WORLD.Get_size() > 1 else SingleProcess()
    return _world


def row_bounds(rows: int, parts: int) -> np.ndarray:
    """Where `parts` contiguous blocks of `rows` rows start and end (the split of `split_batch` too)."""
    return np.linspace(0, rows, parts + 1).astype(int)


class SingleProcess:
    """One process: every call is a no-op, so the single-process trainer does exactly what it did before."""

    rank, size, is_root = 0, 1, True

    def startup(self):
        return nullcontext()

    def root_first(self):
        return nullcontext()

    def check_same(self, what: str, payload) -> None:
        pass

    def shard(self, batch: Batch) -> tuple[Batch, int | None]:
        return batch, None

    def attach(self, grads) -> None:
        pass

    def reduce(self, loss: float) -> float:
        return loss

    def agree_stop(self, interrupted: bool, out_of_time: bool) -> tuple[bool, bool]:
        return interrupted, out_of_time

    def share(self, obj):
        return obj

    def gather(self, obj) -> list:
        return [obj]

    def on_signal(self, signum: int) -> None:
        pass


class MPIWorld:
    """The ranks of an MPI communicator (COMM_WORLD), each a process training on its slice of every batch."""

    def __init__(self, comm):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        self._buffer, self._n = None, 0
        self._wishes = self._agreed = (False, False)
        self._signal = None

    # ------------------------------------------------------------------------------------------------------------
    # Start-up: all ranks succeed together or stop together

    def _agreed_error(self, kind: str, message: str) -> MiniBertError:
        error = getattr(errors, kind, None)
        error = error(message) if isinstance(error, type) and issubclass(error, MiniBertError) else \
            ConfigError(message)
        error.agreed = True                 # every rank knows: no further collective is needed to stop
        return error

    def agree(self, payload=None, failure: MiniBertError | None = None) -> list:
        """Every rank's payload, in rank order; if any rank failed, raise on every rank (the failure itself where
        it happened, a copy that names the rank elsewhere)."""
        mine = None if failure is None else (type(failure).__name__, str(failure))
        entries = self.comm.allgather((mine, payload))
        failed = [(r, f) for r, (f, _) in enumerate(entries) if f is not None]
        if failed:
            if failure is not None:
                failure.agreed = True
                raise failure
            r, (kind, message) = failed[0]
            raise self._agreed_error(kind, f"rank {r} of {self.size}: {message}")
        return [p for _, p in entries]

    @contextmanager
    def startup(self):
        """Wrap the trainer's start-up: a MiniBertError on any rank stops every rank there (each collective inside
        must be an `agree`, so a rank that failed and one that goes on still meet in the same call)."""
        try:
            yield
        except MiniBertError as e:
            if not getattr(e, "agreed", False):
                self.agree(failure=e)          # raises e here, and its copy on the others
            raise
        self.agree()

    @contextmanager
    def root_first(self):
        """Rank 0 runs the block before the others do (it trains and caches the tokenizer; the others reuse it,
        since two trainings of the same text can break ties differently)."""
        if not self.is_root:
            self.agree()
        yield
        if self.is_root:
            self.agree()

    def check_same(self, what: str, payload) -> None:
        """Raise a ConfigError on every rank unless all ranks hold the same `payload` (a dict of settings, or a
        digest); the message names the settings that differ."""
        payloads = self.agree(payload)
        differing = [r for r, p in enumerate(payloads) if p != payloads[0]]
        if not differing:
            return
        r = differing[0]
        if isinstance(payload, dict):
            mine, theirs = _flatten(payloads[0]), _flatten(payloads[r])
            keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            detail = "; ".join(f"{k}: rank 0 has {mine.get(k)!r}, rank {r} {theirs.get(k)!r}" for k in keys[:5])
        else:
            detail = f"rank 0 has {payloads[0]}, rank {r} {payloads[r]}"
        raise self._agreed_error("ConfigError", f"the {self.size} MPI ranks disagree on the {what} ({detail}); "
                                                f"start every rank with the same command and files")

    # ------------------------------------------------------------------------------------------------------------
    # Every step

    def shard(self, batch: Batch) -> tuple[Batch, int]:
        """(this rank's contiguous rows of the global batch, the masked tokens of the whole batch)."""
        a, b = row_bounds(batch.input_ids.shape[0], self.size)[self.rank:self.rank + 2]
        part = Batch(*(getattr(batch, f)[a:b] for f in BATCH_FIELDS))
        return part, int(batch.mask_positions.sum())

    def attach(self, grads) -> None:
        """Put the gradient store on a buffer with three more slots (the loss share and two stop wishes), so that
        one Allreduce carries all of them."""
        n = grads.flat.size
        self._buffer = np.zeros(n + 3, dtype=grads.flat.dtype)
        self._buffer[:n] = grads.flat
        grads.store.rebind(self._buffer[:n])
        self._n = n

    def reduce(self, loss: float) -> float:
        """Sum the gradient buffer, the loss shares and the stop wishes over the ranks (one Allreduce, in place).
        Returns the batch's loss; the summed gradient is in the gradient store attached."""
        buf, n = self._buffer, self._n
        buf[n], buf[n + 1], buf[n + 2] = loss, self._wishes[0], self._wishes[1]
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM))
        self._agreed = (bool(buf[n + 1] > 0), bool(buf[n + 2] > 0))
        return float(buf[n])

    def agree_stop(self, interrupted: bool, out_of_time: bool) -> tuple[bool, bool]:
        """The stop decision every rank takes alike: this rank's wishes go into the next step's Allreduce, and what
        comes back is what any rank wished before this step (so a run stops one step after a rank asks)."""
        self._wishes = (interrupted, out_of_time)
        return self._agreed

    def share(self, obj):
        """Rank 0's `obj` (JSON-serialisable) on every rank."""
        data = json.dumps(obj).encode("utf-8") if self.is_root else b""
        size = np.array([len(data)], dtype=np.int64)
        self._wait(self.comm.Ibcast(size, root=0))
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.is_root else np.empty(int(size[0]), np.uint8)
        self._wait(self.comm.Ibcast(buf, root=0))
        return json.loads(buf.tobytes().decode("utf-8"))

    def gather(self, obj) -> list:
        """Every rank's `obj` (JSON-serialisable), in rank order, on every rank."""
        data = np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)
        sizes = np.zeros(self.size, dtype=np.int64)
        self._wait(self.comm.Iallgather(np.array([data.size], dtype=np.int64), sizes))
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        out = np.empty(int(sizes.sum()), dtype=np.uint8)
        self._wait(self.comm.Iallgatherv(data, [out, sizes, offsets, self.MPI.BYTE]))
        return [json.loads(out[o:o + s].tobytes().decode("utf-8")) for o, s in zip(offsets, sizes)]

    def on_signal(self, signum: int) -> None:
        """Called by the trainer's signal handler: a stop signal makes every later wait give up after
        SIGNAL_GRACE_S, since under mpirun it means the job is being torn down."""
        self._signal = signum

    def _wait(self, request) -> None:
        """Poll a non-blocking collective until it completes. A blocking call would hold this process in C code
        where Python's signal handlers cannot run; polling lets a rank notice the SIGTERM that OpenMPI sends when
        another rank died, and report it (RankLost) before the SIGKILL that follows."""
        polls, deadline = 0, None
        while not request.Test():
            polls += 1
            if polls > 2000:                        # long waits (rank 0 evaluating): stop spinning
                time.sleep(0.0002)
            if self._signal is not None:
                deadline = deadline or time.monotonic() + SIGNAL_GRACE_S
                if time.monotonic() > deadline:
                    name = signal.Signals(self._signal).name
                    raise RankLost(f"rank {self.rank} of {self.size} received {name} and the other ranks stopped "
                                   f"answering: another rank of this job has died or the job is being stopped "
                                   f"(mpirun's message names the rank). Every checkpoint on disk is complete")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
