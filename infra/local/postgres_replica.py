"""A throwaway streaming replica of the local PostgreSQL, for readers off the primary."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from infra.local.common import (
    LOOPBACK,
    LauncherError,
    port_answers,
    port_from_env,
    require_free_port,
    state_dir,
    wait_until,
)
from infra.local.postgres import USER, LocalPostgres, ensure_installed


@dataclass(frozen=True)
class LocalPostgresReplica(LocalPostgres):
    primary: LocalPostgres = field(default_factory=LocalPostgres.from_env)

    @classmethod
    def from_env(cls) -> LocalPostgresReplica:
        return cls(
            port=port_from_env("GROUPBUY_PG_REPLICA_PORT", 25434),
            home=state_dir() / "postgres-replica",
        )

    def start(self) -> str:
        """Copy the running primary afresh, then start the copy as its hot standby.

        Afresh each start, not from the copy a last run left: that copy may belong to a
        primary made again since, or lack WAL the primary has recycled meanwhile, and then
        it would start and never catch up. A copy of the local cluster takes seconds.
        """
        if self.is_running():
            return f"the PostgreSQL replica already running at {LOOPBACK}:{self.port}"
        if not self.primary.is_running():
            raise LauncherError(
                f"the PostgreSQL replica follows the local PostgreSQL at {LOOPBACK}:"
                f"{self.primary.port}, which is not running: start it first (`make up`)"
            )
        bin_dir = ensure_installed()
        require_free_port(self.port, "the PostgreSQL replica", "GROUPBUY_PG_REPLICA_PORT")
        self._prepare_home()
        shutil.rmtree(self.data, ignore_errors=True)
        self._copy_primary(bin_dir)
        self._pg_ctl(bin_dir, "start", "-w", "-t", "60", "-l", str(self.log_file))
        wait_until(lambda: port_answers(self.port), timeout=30, failure=lambda: None)
        return (
            f"PostgreSQL replica of {LOOPBACK}:{self.primary.port} started at "
            f"{LOOPBACK}:{self.port} (log: {self.log_file})"
        )

    def _copy_primary(self, bin_dir: Path) -> None:
        """A base backup with the WAL streamed alongside, configured (-R) to follow the
        primary as a standby, on a port of its own."""
        backup = [str(bin_dir / "pg_basebackup"), "-h", LOOPBACK, "-p", str(self.primary.port)]
        backup += ["-U", USER, "-D", str(self.data), "-R", "-X", "stream", "-c", "fast"]
        self._as_owner(backup, "copying the primary with pg_basebackup")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.port}\n")  # after the primary's own, so it wins
            # The primary keeps the rows a long read here still sees (an export, a replay's
            # fold), rather than its cleanup cancelling that read on the replica.
            conf.write("hot_standby_feedback = on\n")
