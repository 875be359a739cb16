"""Read models rebuilt from every stored event, in one process or one per share."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable
from typing import Any

import psycopg

from domain.application import GroupBuying
from infra.adapters.app import open_app
from infra.replay.rebuilt import Progress, Rebuilt
from infra.replay.stored_events import StoredEvents
from infra.settings import Settings
from projections.read_models import ReadModelTables
from projections.rebuild import ENDING_TYPES, FLUSH_ROWS, Endings, ReadModelBuild


def rebuild_from_store(
    settings: Settings,
    conn: psycopg.Connection[Any],
    tables: ReadModelTables,
    progress: Progress,
    workers: int = 1,
) -> Rebuilt:
    """Every stored event, folded into `tables` (created here, in a schema that must exist).

    With several `workers`, each is a process of its own folding a share of the campaigns
    (a campaign's events all go to one), so that the decoding runs on every core. The events
    are read from GROUPBUY_READ_DATABASE_URL when set; `tables` are written on the primary.
    """
    with conn.transaction():
        conn.execute(tables.create_statement())
    app = _stored(settings)
    try:
        last = StoredEvents(app).last_notification_id()
    finally:
        app.close()
    if workers == 1:
        done = [_fold_share(settings, tables, last, (0, 1), _Counter(progress, last))]
    else:
        done = _in_processes(settings, tables, last, workers, progress)
    events, applied = (sum(counts) for counts in zip(*done, strict=True))
    progress(events, events)
    return Rebuilt(tables, "store", events, applied, last_notification_id=last)


def _stored(settings: Settings) -> GroupBuying:
    """The event store the rebuild reads: the replica's when there is one, which takes the
    reading of the whole history off the primary. A replica is read as it is, made no table."""
    reading = settings.for_reading()
    return open_app(reading, CREATE_TABLE="n") if reading.reading else open_app(settings)


class _Counter:
    """Adds up the events read, for the progress callback."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, read: int) -> None:
        self.done += read
        self.progress(self.done, self.total)


def _fold_share(
    settings: Settings,
    tables: ReadModelTables,
    upto: int,
    share: tuple[int, int],
    report: Callable[[int], None],
) -> tuple[int, int]:
    """Fold one share of the campaigns' events up to `upto`; (events read, events applied)."""
    app = _stored(settings)
    try:
        events = StoredEvents(app, share)
        endings = Endings()  # a first, short pass: each commitment is then written once
        for event in events.read(0, upto, ENDING_TYPES):
            endings.note(event)
        build = ReadModelBuild(tables, endings)
        read = 0
        with (
            psycopg.connect(settings.postgres_conninfo) as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            for event in events.read(0, upto):
                read += 1
                build.apply(event)
                if read % FLUSH_ROWS == 0:
                    build.flush(cur)
                    report(FLUSH_ROWS)
            build.finish(cur)
        report(read % FLUSH_ROWS)
        return read, build.applied
    finally:
        app.close()


def _in_processes(
    settings: Settings, tables: ReadModelTables, upto: int, workers: int, progress: Progress
) -> list[tuple[int, int]]:
    """`_fold_share` in `workers` processes, their progress and results read from a queue."""
    context = multiprocessing.get_context("spawn")  # no forked copy of open connections
    messages: Any = context.Queue()
    processes = [
        context.Process(
            target=_share_process,
            args=(settings, tables, upto, (k, workers), messages),
            name=f"groupbuy-replay-{k}",
        )
        for k in range(workers)
    ]
    for process in processes:
        process.start()
    counter, done = _Counter(progress, upto), list[tuple[int, int]]()
    try:
        while len(done) < workers:
            try:
                kind, *values = messages.get(timeout=1)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in processes):
                    raise RuntimeError("a replay worker process died") from None
                continue
            if kind == "failed":
                raise RuntimeError(f"a replay worker failed: {values[0]}")
            if kind == "read":
                counter(values[0])
            else:
                done.append((values[0], values[1]))
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return done


def _share_process(
    settings: Settings, tables: ReadModelTables, upto: int, share: tuple[int, int], messages: Any
) -> None:
    try:
        events, applied = _fold_share(
            settings, tables, upto, share, lambda read: messages.put(("read", read))
        )
        messages.put(("done", events, applied))
    except BaseException as error:  # reported to the parent, which raises it
        messages.put(("failed", repr(error)))
