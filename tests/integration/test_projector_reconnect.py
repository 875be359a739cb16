"""The projector gets a new connection when its own cannot take the next batch."""

from __future__ import annotations

import pytest

from consumers.projector import ProjectorSink
from infra.settings import Settings
from projections.read_models import ReadModelTables


@pytest.mark.parametrize("left", ["in pipeline mode", "in a transaction", "closed"])
def test_a_connection_left_unusable_by_an_outage_is_replaced_on_the_retry(
    settings: Settings, left: str
) -> None:
    sink = ProjectorSink(settings.postgres_conninfo, ReadModelTables(settings.database_schema))
    old = sink.conn
    # How a server that went away mid-batch can leave it: in the soak's database stop, not
    # broken, not closed, but still in pipeline mode, refusing every query after.
    if left == "in pipeline mode":
        old.pgconn.enter_pipeline_mode()
    elif left == "in a transaction":
        old.execute("BEGIN")
    else:
        old.close()

    sink.forget()  # what the loop calls before it applies the batch again

    try:
        assert sink.conn is not old
        assert sink.stored_positions(["t:0"]) == {"t:0": None}
    finally:
        sink.close()
        old.close()


def test_a_usable_connection_is_kept(settings: Settings) -> None:
    sink = ProjectorSink(settings.postgres_conninfo, ReadModelTables(settings.database_schema))
    old = sink.conn
    try:
        sink.forget()
        assert sink.conn is old
    finally:
        sink.close()
