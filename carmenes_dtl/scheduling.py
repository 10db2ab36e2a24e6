"""Where Dask tasks run: local threads, local processes or a `dask.distributed` cluster.

``scheduler=None`` uses Dask's default, which is the active `distributed.Client` when one
exists (``with Client(...):``) and local threads otherwise; ``"threads"`` and
``"processes"`` pick a local scheduler; any other string is the address of a running
cluster's scheduler (``tcp://host:8786``), connected to for the duration of one call.
"""
from __future__ import annotations

import contextlib
import re

import dask
from dask.callbacks import Callback

LOCAL = ("threads", "processes", "synchronous")
#: ``scheme://host:port`` or ``host:port`` (host a name, an IPv4 address or a bracketed IPv6 one).
ADDRESS = re.compile(r"([a-z][a-z0-9+.-]*://)?([\w.-]+|\[[0-9a-fA-F:]+\]):\d{1,5}")


def check(scheduler: str | None) -> str | None:
    """`scheduler` if it is None, a local scheduler's name or an address; else a ValueError."""
    if scheduler is None or scheduler in LOCAL or ADDRESS.fullmatch(scheduler):
        return scheduler
    raise ValueError(f"scheduler must be one of {', '.join(LOCAL)} or a cluster address such as "
                     f"tcp://host:8786, got {scheduler!r}")


@contextlib.contextmanager
def session(scheduler: str | None):
    """Context in which `compute` runs tasks on `scheduler`: the active `distributed.Client` for
    None when there is one (else None), a client connected to an address, or the local name."""
    if check(scheduler) is None:
        yield _active_client()
        return
    if scheduler in LOCAL:
        yield scheduler
        return
    try:
        from distributed import Client
    except ImportError:
        raise ValueError(f"scheduler {scheduler!r} needs the 'distributed' package "
                         "(pip install 'carmenes-dtl[cluster]')") from None
    try:
        client = Client(scheduler, timeout="10s", set_as_default=False)
    except OSError as err:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    with client:
        yield client


def _active_client():
    try:
        from distributed import default_client
        return default_client()
    except (ImportError, ValueError):  # no distributed, or no Client
        return None


def compute(tasks: list, scheduler, bar=None) -> list:
    """Results of the delayed `tasks`, in order, on what `session` yielded; `bar` (a tqdm) advances
    as each task finishes."""
    if scheduler is None or isinstance(scheduler, str):
        keys = {t.key for t in tasks}
        done = Callback(posttask=lambda key, *_: bar.update(1) if key in keys else None) if bar else contextlib.nullcontext()
        with done:
            return list(dask.compute(*tasks, scheduler=scheduler))
    futures = scheduler.compute(tasks)
    if bar is not None:
        from distributed import as_completed

        for _ in as_completed(futures):
            bar.update(1)
    return list(scheduler.gather(futures))
