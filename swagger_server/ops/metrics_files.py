"""The directory of prometheus_client's multiprocess mode: made by the master, kept small.

In multiprocess mode every worker writes its metrics to files of its own in one directory
(``counter_<pid>.db``, ``histogram_<pid>.db``, ``gauge_<mode>_<pid>.db``), and a scrape, in
whichever worker answers it, reads them all. Workers come and go (``max_requests``, crashes):
left alone, a dead worker's files stay, and a scrape reads every file ever written, slower and
slower (seconds at thousands of files). So, when a worker has died (gunicorn's ``child_exit``,
in the master), :func:`merge_dead` folds its counters and histograms into one file per type
(``counter_merged.db``) and deletes its files; its gauges are just deleted, as a dead worker
has no connections, exports or waiting requests. The directory then holds the live workers'
files and at most one merged file per type, however many workers have lived.

A merge replaces the merged file and deletes the dead worker's files: a scrape reading in
between would count the worker twice or not at all, and a counter that goes down is a counter
reset to Prometheus. Merges take an exclusive ``flock`` on ``.lock`` and scrapes a shared one
(:class:`LockedCollector`); workers write their own files without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable; workers inherit it
LOCK_FILE = ".lock"
MERGED = "merged"  # stands where a pid would: counter_merged.db
_ACCUMULATING = ("counter", "histogram", "summary")  # what a dead worker leaves to the total
_owned: list[Path] = []  # directories prepare() made in this process: remove_owned() removes them


def prepare(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[Path, bool]:
    """The master's directory, empty, named in ``environ`` for the workers it will fork.

    ``PROMETHEUS_MULTIPROC_DIR`` when set (emptied of metric files: the previous run's workers
    are gone), else a new private directory. Returns it, and whether it was made here (and so
    is the master's to remove on exit).
    """
    given = environ.get(ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in [*path.glob("*.db"), *path.glob("*.tmp")]:
            old.unlink(missing_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="pgrest-metrics-"))
    environ[ENV] = str(path)
    _owned.append(path)
    return path, True


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_owned() -> None:
    """Remove the directories :func:`prepare` made here (the master's exit)."""
    while _owned:
        remove(_owned.pop())


@contextlib.contextmanager
def locked(path: Path | str, exclusive: bool) -> Iterator[None]:
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def merge_dead(path: Path | str, pid: int) -> None:
    """Fold a dead worker's counters and histograms into the merged files; drop its files."""
    path = Path(path)
    with locked(path, exclusive=True):
        for typ in _ACCUMULATING:
            dead = path / f"{typ}_{pid}.db"
            if not dead.exists():
                continue
            merged = path / f"{typ}_{MERGED}.db"
            sources = [str(p) for p in (merged, dead) if p.exists()]
            # accumulate=False: buckets stay per bucket, as the files store them.
            _write(path / f"{typ}_{MERGED}.tmp", MultiProcessCollector.merge(sources, False))
            os.replace(path / f"{typ}_{MERGED}.tmp", merged)
            dead.unlink()
        for gauge in path.glob(f"gauge_*_{pid}.db"):
            gauge.unlink(missing_ok=True)


def _write(target: Path, metrics: Iterable[Metric]) -> None:
    target.unlink(missing_ok=True)
    out = MmapedDict(str(target))
    try:
        for metric in metrics:
            for sample in metric.samples:
                key = mmap_key(metric.name, sample.name, list(sample.labels),
                               list(sample.labels.values()), metric.documentation)
                out.write_value(key, sample.value, sample.timestamp or 0.0)
    finally:
        out.close()


class LockedCollector(MultiProcessCollector):
    """Reads every worker's files (and the merged ones) under the shared lock."""

    def collect(self) -> Iterable[Metric]:
        with locked(self._path, exclusive=False):
            return list(super().collect())
