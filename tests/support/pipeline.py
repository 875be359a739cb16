"""Running groupbuy's services against the test's own topics and schema."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from domain.definition import CampaignDefinition
from infra.adapters.app import open_app
from infra.settings import Settings

GROUPBUY = str(Path(sys.executable).parent / "groupbuy")
Service = Callable[[Settings, threading.Event], None]


@contextlib.contextmanager
def running(service: Service, settings: Settings) -> Iterator[threading.Event]:
    """A service on a thread of the test process, stopped (and checked) on exit."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def target() -> None:
        try:
            service(settings, stop)
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=target, name=service.__name__)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive(), f"{service.__name__} did not stop:\n{stacks()}"
    assert not failures, f"{service.__name__} failed: {failures[0]!r}"


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a groupbuy child process: this one's, with `settings` in place of
    whatever GROUPBUY_* variables it has (Kafka's security ones and the read replica's
    dropped first, since `settings` may have none: a test that just wrote reads it back)."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GROUPBUY_KAFKA_") and k != "GROUPBUY_READ_DATABASE_URL"
    }
    return inherited | settings.as_env()


def groupbuy(
    settings: Settings, *arguments: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`groupbuy ARGUMENTS` run against the test's own topics and schema, output captured."""
    return subprocess.run(
        [GROUPBUY, *arguments],
        env=child_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stacks() -> str:
    """Where every thread of this process is, to show why a service would not stop."""
    return "\n".join(
        f"--- {thread.name}\n"
        + "".join(traceback.format_stack(sys._current_frames()[thread.ident]))
        for thread in threading.enumerate()
        if thread.ident in sys._current_frames()
    )


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


class ServiceProcess:
    """`groupbuy <command>` as a child process, to be killed like a crashing machine."""

    def __init__(
        self,
        command: str,
        settings: Settings,
        log: Path,
        *arguments: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [GROUPBUY, command, *arguments],
                env=child_env(settings) | (env or {}),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def children(self) -> list[int]:
        """The process ids of its children (the workers of `ingest --workers`)."""
        pid = self.process.pid
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def free_port() -> int:
    """A TCP port nothing listens on now, on the loopback address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def order_pipeline(settings: Settings, *definitions: CampaignDefinition) -> Iterator[None]:
    """`definitions` opened now, every test site's topics made, and ingest, relay and
    project running on threads: an order in, its result and read model out."""
    from infra.services.ingest import run_ingest
    from infra.services.project import run_project
    from infra.services.relay import run_relay
    from tests.support.kafka_io import make_site_topics

    app = open_app(settings)
    try:
        for definition in definitions:
            app.open_campaign(definition, datetime.now(UTC))
    finally:
        app.close()
    make_site_topics(settings)
    with (
        running(run_ingest, settings),
        running(run_relay, settings),
        running(run_project, settings),
    ):
        yield
