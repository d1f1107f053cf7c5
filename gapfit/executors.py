"""Where the fit's passes (:mod:`gapfit.fitting.passes`) run: in this process, or on a Dask cluster.

Both executors take one pass function and a list of blocks of frames and
return the blocks' results in block order, or reduced by a merge function
over a binary tree whose shape depends only on the number of blocks. The
fit's blocks depend only on the data and the settings, never on the number
of workers, so the same data and seed give the same floating-point
operations, and the same model, on one process or many.

On Dask, the fit plan (:class:`gapfit.fitting.plan.FitPlan`: terms, baseline,
noise model, label reader, chunking, seed; not the estimator) is sent once
to every worker (its terms rebuild their descriptor calculators on arrival,
see ``Soap.__setstate__``), each block
is one task reading its own frames (file paths and an index range: the
files must be readable from the workers), and the merges run on the workers
too, so the fitting process receives one result per merged pass. A worker that
dies (killed, out of memory) or a cluster without workers stops the fit
with one :class:`gapfit.errors.WorkerError` naming the block, not a hang.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable, List, Optional, Sequence

from .errors import InputError, WorkerError


def tree_reduce(items: List[Any], merge: Callable[[Any, Any], Any]) -> Any:
    """Merge adjacent pairs level by level: ((0 1) (2 3)) (4 ...). The tree depends only on len(items)."""
    level = list(items)
    while len(level) > 1:
        level = [merge(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


class _StreamingTree:
    """:func:`tree_reduce`'s tree, built as items arrive: at most log2(n) + 1 items held at once.

    A stack of (level, item): a new item merges with the top while their
    levels match (a binary counter); at the end the stack collapses from the
    top. For the left-to-right pairing of :func:`tree_reduce`, whose odd item
    at each level is the last, this is the same tree.
    """

    def __init__(self, merge: Callable[[Any, Any], Any]):
        self.merge = merge
        self.stack: List[tuple] = []

    def add(self, item: Any) -> None:
        level = 0
        while self.stack and self.stack[-1][0] == level:
            _, left = self.stack.pop()
            item = self.merge(left, item)
            level += 1
        self.stack.append((level, item))

    def result(self) -> Any:
        _, item = self.stack.pop()
        while self.stack:
            _, left = self.stack.pop()
            item = self.merge(left, item)
        return item


class SerialExecutor:
    """Run every block in this process, one after the other (merging as they finish)."""

    n_workers = 1

    def run(self, fn: Callable, plan, source, blocks: Sequence, *args, what: str = "",
            progress: bool = False, reduce: Optional[Callable] = None, **kwargs) -> Any:
        from tqdm.auto import tqdm
        total = sum(b.hi - b.lo for b in blocks)
        results: List[Any] = []
        tree = _StreamingTree(reduce) if reduce is not None else None
        with tqdm(total=total, desc=what, unit="frame", disable=not progress, leave=False) as bar:
            for b in blocks:
                r = fn(plan, source, b, *args, progress=bar, **kwargs)
                if tree is None:
                    results.append(r)
                else:
                    tree.add(r)  # a block's factors are merged before the next is computed
        return results if tree is None else tree.result()


class DaskExecutor:
    """Run blocks, and the merges of their results, as tasks on a ``dask.distributed`` cluster.

    Parameters
    ----------
    client : distributed.Client
        Connected to the cluster.
    no_worker_timeout_s : float
        How long a pass waits while the cluster has no worker before it stops.
    """

    def __init__(self, client, no_worker_timeout_s: float = 120.0):
        self.client = client
        self.no_worker_timeout_s = float(no_worker_timeout_s)

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def run(self, fn: Callable, plan, source, blocks: Sequence, *args, what: str = "",
            progress: bool = False, reduce: Optional[Callable] = None, **kwargs) -> Any:
        from tqdm.auto import tqdm
        client = self.client
        try:
            plan_future = client.scatter(plan, broadcast=True, hash=False)
        except Exception as exc:  # pickling fails with many types (TypeError, PicklingError, AttributeError)
            raise InputError(f"the fit cannot be sent to the Dask workers ({type(exc).__name__}: {exc}); a "
                             "Δ-learning baseline calculator must pickle to be used with --workers/--dask: fit "
                             "in one process instead", param="baseline") from None
        tag = f"{what.replace(' ', '-')}-{uuid.uuid4().hex[:8]}"
        block_futures = [client.submit(fn, plan_future, source.part(b.lo, b.hi), b, *args, pure=False,
                                       key=f"gapfit-{tag}-block-{i}", **kwargs) for i, b in enumerate(blocks)]
        wanted = list(block_futures)
        if reduce is not None:
            n = [0]

            def merge(a, b):
                n[0] += 1
                return client.submit(reduce, a, b, pure=False, key=f"gapfit-{tag}-merge-{n[0]}")
            wanted = [tree_reduce(block_futures, merge)]
        try:
            with tqdm(total=len(blocks), desc=what, unit="block", disable=not progress, leave=False) as bar:
                self._wait(wanted, block_futures, bar, source, what)
            results = [self._result(f, block_futures, blocks, source, what) for f in wanted]
        finally:
            # stop what still runs (after an error); finished futures are released with their references
            unfinished = {f.key: f for f in block_futures + wanted if not f.done()}
            if unfinished:
                client.cancel(list(unfinished.values()))
        return results if reduce is None else results[0]

    def _wait(self, wanted, block_futures, bar, source, what) -> None:
        """Poll until every wanted future is done; stop when the cluster has had no worker for too long."""
        from distributed.comm.core import CommClosedError
        no_workers_since: Optional[float] = None
        shown, polls = 0, 0
        while not all(f.done() for f in wanted):
            time.sleep(0.2)
            polls += 1
            done = sum(f.done() for f in block_futures)
            bar.update(done - shown)
            shown = done
            if any(f.status == "error" for f in block_futures + wanted):
                return
            if polls % 10:
                continue  # ask the scheduler about its workers every 2 s only
            try:
                n_workers = len(self.client.nthreads())
            except (OSError, CommClosedError) as exc:
                raise WorkerError(f"lost the Dask scheduler while computing {what} of {source.describe()}: "
                                  f"{type(exc).__name__}: {exc}") from None
            if not n_workers:
                no_workers_since = no_workers_since or time.monotonic()
                if time.monotonic() - no_workers_since > self.no_worker_timeout_s:
                    raise WorkerError(
                        f"the Dask cluster at {self.client.scheduler.address} has had no workers for "
                        f"{self.no_worker_timeout_s:.0f} s while {what} of {source.describe()} waits; start "
                        "workers (dask worker ADDRESS) or use --workers N")
            else:
                no_workers_since = None

    @staticmethod
    def _result(future, block_futures, blocks, source, what: str):
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError
        try:
            return future.result()
        except KilledWorker as exc:
            failed = [i for i, f in enumerate(block_futures) if f.status == "error"]
            where = blocks[failed[0]].describe(source) if failed else f"the merge of the blocks of {source.describe()}"
            raise WorkerError(
                f"a Dask worker died while computing {what} of {where} ({exc}); the fit is stopped. Check the "
                "worker's log: a worker past its memory limit is killed (give the workers more memory)") from None
        except CommClosedError as exc:
            raise WorkerError(f"lost the Dask cluster while computing {what} of {source.describe()}: {exc}") from None


def make_executor(client=None):
    """The executor for ``client`` (None: this process)."""
    return SerialExecutor() if client is None else DaskExecutor(client)
