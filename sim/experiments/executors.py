"""Where batches run: in this process (default), in local processes, or on a Dask cluster.

Every executor runs the same pure function on the same plain batches and yields
(batch id, frame) as batches finish; the caller sorts by point, so results are identical
whichever executor ran them. Dask: `"local"` starts a `LocalCluster` (one single-threaded worker
process per core asked for), any other string is a scheduler address (`tcp://host:port`);
batches are retried when they raise and rescheduled by Dask when a worker dies.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import pandas as pd

from sim.config.loader import ConfigError
from sim.experiments.runner import Batch, run_batch


class Executor:
    name = "in-process"
    startup_s = 0.0

    def map(self, batches: Sequence[Batch]) -> Iterator[tuple[int, pd.DataFrame]]:
        for b in batches:
            yield b.id, run_batch(b)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Processes(Executor):
    workers: int = 2
    name = "processes"

    def map(self, batches: Sequence[Batch]) -> Iterator[tuple[int, pd.DataFrame]]:
        if not batches:
            return
        # fork where there is one: a spawned worker re-imports the caller's main module, which
        # reruns an unguarded script or fails in a notebook
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            futs = {pool.submit(run_batch, b): b.id for b in batches}
            for f in as_completed(futs):
                yield futs[f], f.result()


class Dask(Executor):
    name = "dask"

    def __init__(self, address: str = "local", workers: int = 2, retries: int = 2):
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - a dependency of the package
            raise ConfigError("--dask: the `distributed` package is not installed") from None
        t0 = time.perf_counter()
        self.cluster = None
        if address == "local":
            import dask

            # Dask's nanny gives its workers MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's
            # mmap threshold at 128 KiB: every hourly array of a run is then mmap'd and faulted
            # in afresh (~2.8x slower per draw than in process); keep malloc's defaults
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_":
                                  None}):
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                            processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(address, timeout="20s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"--dask {address}: cannot connect to the scheduler "
                                  f"({exc})") from None
        self.retries = retries
        self.startup_s = time.perf_counter() - t0

    def map(self, batches: Sequence[Batch]) -> Iterator[tuple[int, pd.DataFrame]]:
        from distributed import as_completed as dask_completed

        if not batches:
            return
        # keys unique per call: a key still held by an earlier, unfinished map (an interrupted
        # experiment) would otherwise hand back that experiment's result for the same batch id
        tag = uuid.uuid4().hex
        futs = self.client.map(run_batch, list(batches), pure=False, retries=self.retries,
                               key=[f"fleetsim-batch-{b.id}-{tag}" for b in batches])
        ids = {f.key: b.id for f, b in zip(futs, batches)}
        for f in dask_completed(futs):
            yield ids[f.key], f.result()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(dask: str | None = None, workers: int | None = None) -> Executor:
    """`dask` None and workers None or 1: in-process; workers > 1: local processes; `dask`
    "local": a LocalCluster of `workers` processes (every core when workers is None or 1);
    `dask` an address: that scheduler's workers."""
    if dask:
        if dask == "local" and (workers is None or workers <= 1):
            workers = os.cpu_count() or 2
        return Dask(dask, workers or 2)
    if workers and workers > 1:
        return Processes(workers)
    return Executor()


ProgressFn = Callable[[int, int], None]
