"""Single-process and ``torchrun`` multi-process training plumbing (plain ``torch.distributed``).

* :func:`setup`: reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set by ``torchrun`` and initialises the
  process group (NCCL on CUDA, gloo on CPU); without them it is a 1-process run;
* :class:`ResumableDistributedSampler`: an epoch-seeded permutation shared by all ranks, padded to a multiple of
  the world size and split rank-strided (as ``torch.utils.data.DistributedSampler``), that can start part-way
  through an epoch, so a resumed run continues with exactly the samples the killed run had not seen yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..sharding import close_group

__all__ = ["DistContext", "ResumableDistributedSampler", "all_gather_object", "broadcast_object", "cleanup", "setup"]


@dataclass(frozen=True)
class DistContext:
    """Where this process runs.

    Attributes:
        rank: global rank (0 in a single-process run).
        world_size: number of processes.
        local_rank: rank within the node (selects the GPU).
        device: the torch device of this process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank. Not after work that rank 0 does alone: when that fails the others would wait here
        for a rank 0 that is gone; run it through :func:`cartoonseg.sharding.agree_on` instead (every rank gets
        rank 0's result, or raises its error)."""
        if self.distributed:
            dist.barrier()


def setup(device: str = "auto") -> DistContext:
    """Initialise the run from the ``torchrun`` environment.

    Args:
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Under
            ``torchrun`` with CUDA each process takes ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: CUDA asked for where there is none, or fewer GPUs than processes (naming ``--device``). Under
            ``torchrun`` every rank raises it, prefixed ``rank N:`` (the lowest refused rank): each rank's verdict
            on its device travels over the rendezvous store before the process group starts
            (:func:`_share_verdict`), so no rank is left in ``init_process_group`` for one that refused.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        dev = _device(device, local, world)
        error = None
    except Exception as exc:  # every rank must hear of it, whatever it is
        dev, error = None, exc
    if world > 1 and not dist.is_initialized():
        store = _share_verdict(error, rank, world)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", store=store, rank=rank,
                                world_size=world)
    elif error is not None:
        raise error
    return DistContext(rank, world, local, dev)


def _device(device: str, local: int, world: int) -> torch.device:
    """This process's device for ``device`` (see :func:`setup`); selects it when it is a GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        from .._cli import rank_device

        # ValueError naming --device and what there is (no CUDA, more processes on this node than GPUs): one
        # error: line, not a traceback from set_device
        dev = torch.device(rank_device(device, local, per_process=world > 1))
        torch.cuda.set_device(dev)
        return dev
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


#: how long rank 0 (the host of the rendezvous store, outside torchrun's agent) stays for the other ranks to read
#: a refusal before it exits
_VERDICT_WAIT_S = 10.0


def _share_verdict(error: Exception | None, rank: int, world: int):
    """Every rank's verdict on its device (``error``, None when fine) through the ``env://`` rendezvous store that
    the process group then uses (returned): when some rank refused, every rank raises the error of the lowest such
    rank, prefixed ``rank N: `` (as :func:`cartoonseg.sharding.every_rank`). A refused rank exited alone before,
    and the others waited in ``init_process_group`` until its time-out. When the rendezvous itself fails (no
    ``MASTER_ADDR``), this rank's own refusal comes first."""
    import datetime
    import pickle

    from ..sharding import _sendable

    try:
        store, rank, world = next(dist.rendezvous("env://", rank, world))
    except Exception:
        if error is not None:
            raise error from None
        raise
    prefix = f"cartoonseg/device/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    told = b"" if error is None else pickle.dumps(_sendable(error, f"rank {rank}: {error}"))
    store.set(f"{prefix}{rank}", told)
    verdicts = [store.get(f"{prefix}{r}") for r in range(world)]  # waits for each rank (the store's time-out)
    store.set(f"{prefix}read/{rank}", b"")
    first = next((r for r, v in enumerate(verdicts) if v), None)
    if first is None:
        return store
    if rank == 0:  # the store may live in this process: let the others read the verdict before it goes
        try:
            store.wait([f"{prefix}read/{r}" for r in range(world)], datetime.timedelta(seconds=_VERDICT_WAIT_S))
        except Exception:  # a rank is gone: nothing more to wait for
            pass
    exc = pickle.loads(verdicts[first])
    if first == rank:
        raise exc from error
    raise exc from None


def cleanup(ctx: DistContext) -> None:
    """The end of a run: close the process group once every rank is here (bounded wait; see
    :func:`cartoonseg.sharding.close_group`)."""
    if ctx.distributed:
        close_group()


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj, ctx: DistContext) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single-process run)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


class ResumableDistributedSampler(Sampler[int]):
    """Shuffled, rank-sharded indices that can start part-way through an epoch.

    Args:
        length: dataset size.
        num_replicas: world size.
        rank: this process's rank.
        shuffle: permute with a generator seeded by ``seed + epoch``.
        seed: base seed (identical on all ranks).
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        if length <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.length = length
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start = 0
        self.per_rank = -(-length // num_replicas)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select ``epoch``'s permutation and skip this rank's first ``start`` indices."""
        self.epoch = int(epoch)
        self.start = int(start)

    def indices(self) -> list[int]:
        """All of this rank's indices for the current epoch (without the skip)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.num_replicas
        order = (order * (-(-total // len(order))))[:total]
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)
