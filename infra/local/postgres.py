"""A throwaway PostgreSQL cluster from Debian's packages, on loopback."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from infra.local.common import (
    LOOPBACK,
    LauncherError,
    port_answers,
    port_from_env,
    require_free_port,
    run,
    state_dir,
    wait_until,
)

USER = PASSWORD = DATABASE = "groupbuy"
# A throwaway cluster: losing it to a power cut is fine, so skip the fsyncs tests would wait on.
SETTINGS = {
    "listen_addresses": f"'{LOOPBACK}'",
    "unix_socket_directories": "''",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "fsync": "off",
    "full_page_writes": "off",
    "max_wal_size": "2GB",
}


@dataclass(frozen=True)
class LocalPostgres:
    port: int
    home: Path

    @classmethod
    def from_env(cls) -> LocalPostgres:
        return cls(port=port_from_env("GROUPBUY_PG_PORT", 25432), home=state_dir() / "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@{LOOPBACK}:{self.port}/{DATABASE}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and port_answers(self.port)

    def start(self) -> str:
        if self.is_running():
            return f"PostgreSQL already running at {LOOPBACK}:{self.port}"
        bin_dir = ensure_installed()
        require_free_port(self.port, "PostgreSQL", "GROUPBUY_PG_PORT")
        self._prepare_home()
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self._init(bin_dir)
        self._pg_ctl(bin_dir, "start", "-w", "-t", "60", "-l", str(self.log_file))
        if fresh:
            createdb = [str(bin_dir / "createdb"), "-h", LOOPBACK, "-p", str(self.port), "-U", USER]
            self._as_owner([*createdb, DATABASE], "creating the groupbuy database")
        wait_until(lambda: port_answers(self.port), timeout=30, failure=lambda: None)
        version = run([str(bin_dir / "postgres"), "--version"], "reading PostgreSQL's version", 10)
        return f"{version.strip()} started at {LOOPBACK}:{self.port} (log: {self.log_file})"

    def stop(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        self._pg_ctl(ensure_installed(), "stop", "-m", "fast", "-w", "-t", "60")
        return True

    def _prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its files belong to `postgres`
            shutil.chown(self.home, "postgres", "postgres")

    def _init(self, bin_dir: Path) -> None:
        password_file = self.home / "password"
        password_file.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres", "postgres")
        initdb = [str(bin_dir / "initdb"), "-D", str(self.data), "-U", USER, "-E", "UTF8"]
        initdb += ["--auth=scram-sha-256", f"--pwfile={password_file}", "--locale=C.UTF-8"]
        self._as_owner(initdb, "initialising the PostgreSQL cluster")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("".join(f"{k} = {v}\n" for k, v in SETTINGS.items()))
            conf.write(f"port = {self.port}\n")
        password_file.unlink()

    def _pg_ctl(self, bin_dir: Path, *args: str) -> None:
        self._as_owner([str(bin_dir / "pg_ctl"), "-D", str(self.data), *args], f"pg_ctl {args[0]}")

    def _as_owner(self, command: list[str], what: str) -> None:
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        command = ["env", f"PGPASSWORD={PASSWORD}", *command]
        run(command, what, timeout=120, log=self.home / "launcher.log")


def ensure_installed() -> Path:
    """The newest PostgreSQL server binaries, installing Debian's package when there are none."""
    found = server_bin_dirs()
    if not found:
        install_with_apt()
        found = server_bin_dirs()
    if not found:
        raise LauncherError("PostgreSQL's server binaries are still missing after apt-get install")
    return found[-1]


def server_bin_dirs() -> list[Path]:
    dirs = Path("/usr/lib/postgresql").glob("*/bin")
    return sorted((d for d in dirs if (d / "pg_ctl").exists()), key=lambda d: int(d.parent.name))


def install_with_apt() -> None:
    if shutil.which("apt-get") is None:
        raise LauncherError(
            "PostgreSQL is not installed and there is no apt-get: install PostgreSQL 15+"
        )
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    run([*sudo, "apt-get", "update", "-q"], "apt-get update", timeout=300)
    env_install = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q"]
    run([*env_install, "postgresql"], "apt-get install postgresql", timeout=600)
