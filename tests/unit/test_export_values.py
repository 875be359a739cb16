"""`groupbuy export` writes every stored value, and nothing a spreadsheet would run."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from analysis.flatten import flatten
from infra.cli.common import CommandError
from infra.cli.export import CsvWriter, ParquetWriter, write_file
from tests.unit.analysis_history import history

# Values events stored before the contract's field limits can hold.
OLD_VALUES = {
    "max_unit_price": Decimal("95.0000001"),
    "unit_price": Decimal("1000000000000.00"),
    "quantity": 10**100,
    "buyer_id": "b\ud800",
    "placed_at": datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=14))),
}
FORMULAS = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def rows() -> list[dict[str, Any]]:
    return [flatten(n, "small", event) for n, event in enumerate(history(), start=1)]


def placed_with(changes: dict[str, Any]) -> dict[str, Any]:
    placed = rows()[1]
    assert placed["type"] == "commitment.placed"
    return placed | changes


def test_parquet_writes_values_its_types_cannot_hold_as_null_and_as_text_beside() -> None:
    file = io.BytesIO()
    writer = ParquetWriter(file)
    writer.write([*rows(), placed_with(OLD_VALUES)])
    writer.close()

    written = pq.read_table(io.BytesIO(file.getvalue())).to_pylist()
    old = written[-1]
    assert json.loads(old["out_of_range"]) == {
        "max_unit_price": "95.0000001",
        "unit_price": "1000000000000.00",
        "quantity": "1" + "0" * 100,
        "buyer_id": "b\ud800",
        "placed_at": "9999-12-31T23:00:00-14:00",
    }
    assert {name: old[name] for name in OLD_VALUES} == dict.fromkeys(OLD_VALUES)
    assert all(row["out_of_range"] is None for row in written[:-1])
    assert writer.notes() == [
        "5 values did not fit their column's type: written as null, and as text in the "
        "out_of_range column"
    ]


def test_csv_writes_every_old_value_as_it_is() -> None:
    file = io.BytesIO()
    writer = CsvWriter(file)
    writer.write([placed_with(OLD_VALUES)])
    writer.close()

    (row,) = csv.DictReader(io.StringIO(file.getvalue().decode()))
    assert (row["max_unit_price"], row["unit_price"]) == ("95.0000001", "1000000000000.00")
    assert row["quantity"] == "1" + "0" * 100
    assert row["buyer_id"] == "b\\ud800"
    assert row["placed_at"] == "9999-12-31T23:00:00-14:00"
    assert writer.notes() == ["1 text values were not valid Unicode: written with \\ escapes"]


@pytest.mark.parametrize("formula", FORMULAS)
def test_csv_text_that_a_spreadsheet_would_run_gets_a_leading_apostrophe(formula: str) -> None:
    file = io.BytesIO()
    writer = CsvWriter(file)
    writer.write([placed_with({"buyer_id": formula, "site_id": formula, "order_id": "a:1"})])
    writer.close()

    (row,) = csv.DictReader(io.StringIO(file.getvalue().decode(), newline=""))
    assert (row["buyer_id"], row["site_id"]) == ("'" + formula, "'" + formula)
    assert row["order_id"] == "a:1"
    assert row["quantity"] == "3"  # figures are written as they are


def failing_pages() -> Iterator[list[dict[str, Any]]]:
    yield rows()
    raise RuntimeError("the store went away half-way")


@pytest.mark.parametrize("writer", [CsvWriter, ParquetWriter])
def test_a_failed_export_leaves_no_file_behind(writer: Any, tmp_path: Path) -> None:
    out = tmp_path / "events.out"

    with pytest.raises(RuntimeError, match="half-way"):
        write_file(out, writer, failing_pages())

    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_path_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "events.csv"

    with pytest.raises(CommandError, match="cannot write"):
        write_file(out, CsvWriter, iter([rows()]))

    assert list(tmp_path.iterdir()) == []
