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
    """Context in which `compute` runs tasks on `scheduler` (connects to an address)."""
    if check(scheduler) is None or scheduler in LOCAL:
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


def compute(tasks: list, scheduler) -> list:
    """Results of the delayed `tasks`, in order, on what `session` yielded."""
    if scheduler is None or isinstance(scheduler, str):
        return list(dask.compute(*tasks, scheduler=scheduler))
    return list(scheduler.compute(tasks, sync=True))
