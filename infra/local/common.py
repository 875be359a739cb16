"""What both launchers share: where state lives, ports, waiting, stopping, errors."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LauncherError(Exception):
    """A service could not be started or stopped; the message says why and what to do."""


def state_dir() -> Path:
    """Where the throwaway clusters keep their data, logs and pid files."""
    default = Path(tempfile.gettempdir()) / f"groupbuy-{os.getuid()}"
    path = Path(os.environ.get("GROUPBUY_STATE_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)  # the postgres user must reach its data folder inside
    return path


def cache_dir() -> Path:
    """Where downloads that outlive a cluster go (the Kafka jars)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "groupbuy"
    path = Path(os.environ.get("GROUPBUY_CACHE_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LauncherError(f"{name}={raw!r} is not a TCP port number")
    return int(raw)


def port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def require_free_port(port: int, service: str, variable: str) -> None:
    if port_answers(port):
        raise LauncherError(
            f"{service}: port {port} on {LOOPBACK} is already in use by another process; "
            f"stop it or set {variable} to a free port"
        )


def wait_until(
    condition: Callable[[], bool], timeout: float, failure: Callable[[], str | None]
) -> None:
    """Poll `condition` until true; `failure` returns a reason to give up early (a dead process)."""
    deadline = time.monotonic() + timeout
    while not condition():
        reason = failure()
        if reason:
            raise LauncherError(reason)
        if time.monotonic() > deadline:
            raise LauncherError(f"gave up after {timeout:.0f} s: " + (failure() or "no answer"))
        time.sleep(0.2)


def run(command: Sequence[str], what: str, timeout: float, log: Path | None = None) -> str:
    """Run a short command to completion; raise a one-line LauncherError if it fails or hangs."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as error:
        raise LauncherError(f"{what}: {error.filename} is not installed") from error
    except subprocess.TimeoutExpired as error:
        raise LauncherError(f"{what}: no result after {timeout:.0f} s") from error
    output = done.stdout + done.stderr
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(command)}\n{output}\n")
    if done.returncode != 0:
        where = f" (full output in {log})" if log else ""
        raise LauncherError(f"{what} failed: {first_error(output)}{where}")
    return output


def first_error(output: str) -> str:
    """The line of a tool's output that says what went wrong (Maven: the first [ERROR])."""
    lines = [ANSI.sub("", line).strip() for line in output.splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith("[ERROR]") and len(line) > 8]
    return (errors or lines[-1:] or ["(no output)"])[0]


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is still alive."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:  # alive, owned by another user
        return pid
    return pid


def stop_pid(pid_file: Path, timeout: float = 30.0) -> bool:
    """SIGTERM the recorded process, SIGKILL it if it lingers; False if none was running."""
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while read_pid(pid_file) is not None and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if read_pid(pid_file) is not None:
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    # A child of this very process stays a zombie (and "alive") until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
