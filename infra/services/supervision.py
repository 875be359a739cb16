"""Runs services (or a service's parts) so that one that stops stops them all, loudly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Task = Callable[[threading.Event], None]  # runs until the event is set
CHECK_EVERY = 0.5  # seconds between looks at the threads while they run
STOP_GRACE = 30.0  # seconds the others get to stop once one has failed


class ServiceStoppedError(Exception):
    """A service ended on its own (it raised, or returned unasked): its process must exit
    non-zero, so that a supervisor restarts it whole."""


def run_reporting(name: str, task: Task, stop: threading.Event) -> None:
    """Run `task` until `stop`; if it raises, or ends while `stop` is not set, log why,
    set `stop` and raise ServiceStoppedError naming it."""
    try:
        task(stop)
    except ServiceStoppedError as error:
        stop.set()  # one of its own parts stopped, and was logged with its traceback
        raise ServiceStoppedError(f"{name}: {error}") from error
    except Exception as error:
        stop.set()
        log.exception("%s stopped: %s", name, describe(error))
        raise ServiceStoppedError(f"{name} stopped: {describe(error)}") from error
    if not stop.is_set():
        stop.set()
        log.error("%s stopped though nobody asked it to", name)
        raise ServiceStoppedError(f"{name} stopped though nobody asked it to")


def run_together(tasks: dict[str, Task], stop: threading.Event) -> None:
    """Run each task on a thread of its own until `stop`.

    The first that stops on its own sets `stop` for the others; once they have stopped (or
    after STOP_GRACE), this raises ServiceStoppedError naming it.
    """
    failures: list[ServiceStoppedError] = []

    def target(name: str, task: Task) -> None:
        try:
            run_reporting(name, task, stop)
        except ServiceStoppedError as failure:
            failures.append(failure)

    threads = [
        # Daemons: a thread that will not stop after a failure must not keep the process up.
        threading.Thread(target=target, args=(name, task), name=name, daemon=True)
        for name, task in tasks.items()
    ]
    for thread in threads:
        thread.start()
    given_up_at: float | None = None
    while alive := [thread for thread in threads if thread.is_alive()]:
        alive[0].join(timeout=CHECK_EVERY)
        if failures and given_up_at is None:
            given_up_at = time.monotonic() + STOP_GRACE
        if given_up_at is not None and time.monotonic() > given_up_at:
            names = ", ".join(thread.name for thread in alive)
            log.error("%s did not stop within %.0f s; leaving it behind", names, STOP_GRACE)
            break
    if failures:
        raise failures[0]


def describe(error: BaseException) -> str:
    """The error's type and the first line of its message (the rest is in the traceback)."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name
