"""Where the fit's passes (:mod:`gapfit.passes`) run: in this process, or on a Dask cluster.

Both executors take one pass function and a list of blocks of frames and
return the blocks' results in block order; the fit then merges them (in
any order: samples and factors are mergeable), so the same data and seed
give the same model on one process or many.

On Dask, the model is sent once to every worker (its terms rebuild their
descriptor calculators on arrival, see ``Soap.__setstate__``), each block
is one task reading its own frames (file paths and an index range: the
files must be readable from the workers), and results come back as the
tasks finish. A worker that dies (killed, out of memory) or a cluster
without workers stops the fit with one :class:`gapfit.errors.WorkerError`
naming the block, instead of a hang.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable, List, Optional, Sequence

from .errors import WorkerError

log = logging.getLogger("gapfit")


class SerialExecutor:
    """Run every block in this process, one after the other."""

    n_workers = 1
    blocks_per_worker = 1

    def run(self, fn: Callable, model, source, blocks: Sequence, *args, what: str = "",
            progress: bool = False, **kwargs) -> List[Any]:
        from tqdm.auto import tqdm
        total = sum(b.hi - b.lo for b in blocks)
        with tqdm(total=total, desc=what, unit="frame", disable=not progress, leave=False) as bar:
            return [fn(model, source, b, *args, progress=bar, **kwargs) for b in blocks]


class DaskExecutor:
    """Run blocks as tasks on a ``dask.distributed`` cluster.

    Parameters
    ----------
    client : distributed.Client
        Connected to the cluster.
    blocks_per_worker : int
        Blocks per worker per pass: more balance the load, fewer mean fewer
        (M+1)² factors to send and merge.
    no_worker_timeout_s : float
        How long a pass waits while the cluster has no worker before it stops.
    """

    def __init__(self, client, blocks_per_worker: int = 2, no_worker_timeout_s: float = 120.0):
        self.client = client
        self.blocks_per_worker = int(blocks_per_worker)
        self.no_worker_timeout_s = float(no_worker_timeout_s)

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def run(self, fn: Callable, model, source, blocks: Sequence, *args, what: str = "",
            progress: bool = False, **kwargs) -> List[Any]:
        from distributed import wait
        from tqdm.auto import tqdm
        client = self.client
        model_future = client.scatter(model, broadcast=True, hash=False)
        tag = uuid.uuid4().hex[:8]
        futures = {}
        for i, b in enumerate(blocks):
            f = client.submit(fn, model_future, source.part(b.lo, b.hi), b, *args, pure=False,
                              key=f"gapfit-{what.replace(' ', '-')}-{i}-{tag}", **kwargs)
            futures[f] = i
        results: List[Any] = [None] * len(blocks)
        pending = set(futures)
        no_workers_since: Optional[float] = None
        try:
            with tqdm(total=len(blocks), desc=what, unit="block", disable=not progress, leave=False) as bar:
                while pending:
                    done, pending = wait(pending, timeout=2.0, return_when="FIRST_COMPLETED")
                    for f in done:
                        i = futures[f]
                        results[i] = self._result(f, blocks[i], source, what)
                        bar.update(1)
                    if not done:
                        if not client.scheduler_info().get("workers"):
                            no_workers_since = no_workers_since or time.monotonic()
                            if time.monotonic() - no_workers_since > self.no_worker_timeout_s:
                                raise WorkerError(
                                    f"the Dask cluster at {client.scheduler.address} has had no workers for "
                                    f"{self.no_worker_timeout_s:.0f} s while {len(pending)} block(s) of {what} "
                                    "wait; start workers (dask worker ADDRESS) or use --workers N")
                        else:
                            no_workers_since = None
        finally:
            for f in pending:
                f.cancel()
            client.cancel([model_future])
        return results

    @staticmethod
    def _result(future, block, source, what: str):
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError
        try:
            return future.result()
        except KilledWorker as exc:
            raise WorkerError(
                f"a Dask worker died while computing {what} of {block.describe(source)} ({exc}); the fit is "
                "stopped. Check the worker's log: a worker past its memory limit is killed (give the workers more "
                "memory)") from None
        except CommClosedError as exc:
            # the connection to the scheduler broke: say so, not as a file error
            raise WorkerError(f"lost the Dask cluster while computing {what} of {block.describe(source)}: "
                              f"{type(exc).__name__}: {exc}") from None


def make_executor(client=None):
    """The executor for ``client`` (None: this process)."""
    return SerialExecutor() if client is None else DaskExecutor(client)
