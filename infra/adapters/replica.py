"""How far a PostgreSQL replica is behind its primary, so that its readers can say so."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

# One round trip. The receiver's status is hidden from roles without pg_read_all_stats (an
# analyst's SELECT-only role), who still see that a receiver runs: that much counts as
# streaming for them.
LAG = """
SELECT pg_is_in_recovery(),
       pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn(),
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
       EXISTS (SELECT FROM pg_stat_wal_receiver WHERE coalesce(status, 'streaming') = 'streaming')
"""


@dataclass(frozen=True)
class ReplicaLag:
    """How stale a replica's answers may be."""

    seconds: float  # 0 when it has replayed all it received; else since its last replayed commit
    streaming: bool  # False: it hears nothing from its primary, so it may be further behind

    def note(self, variable: str) -> str:
        """One line for a person reading from the replica named by `variable`."""
        if not self.streaming:
            behind = f", {self.seconds:.1f} s behind at least" if self.seconds else ""
            return (
                f"note: reading from a replica that is not streaming from its primary, so it "
                f"may be behind{behind} ({variable})"
            )
        return f"note: reading from a replica {self.seconds:.1f} s behind its primary ({variable})"


def replica_lag(conn: psycopg.Connection[Any]) -> ReplicaLag | None:
    """The lag of the server `conn` reads from; None when it is no replica (a primary)."""
    row = conn.execute(LAG).fetchone()
    assert row is not None
    in_recovery, caught_up, since_replay, streaming = row
    if not in_recovery:
        return None
    seconds = 0.0 if caught_up else max(0.0, since_replay or 0.0)
    return ReplicaLag(seconds, streaming)


def current_lsn(conn: psycopg.Connection[Any]) -> str:
    """Where the primary `conn` reads from has written its WAL up to, now."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def wait_for_replay(conn: psycopg.Connection[Any], lsn: str, timeout: float) -> bool:
    """Whether the replica `conn` reads from replays the primary's WAL up to `lsn` within
    `timeout` seconds (what was committed there by then is visible here after)."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
        if row is not None and row[0]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
