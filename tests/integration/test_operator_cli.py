"""`groupbuy campaign open|extend|cancel`: operators change campaigns from a shell or a script."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.campaign import Campaign
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.services.project import run_project
from infra.services.relay import run_relay
from infra.settings import Settings
from tests.support.builders import campaign
from tests.support.kafka_io import wait_for
from tests.support.pipeline import GROUPBUY, groupbuy, running


def stored(settings: Settings, campaign_id: str) -> Campaign:
    app = open_app(settings)
    try:
        return app.get_campaign(campaign_id)
    finally:
        app.close()


def instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def definition(unique: str) -> dict[str, Any]:
    return campaign(f"op-{unique}").to_json_dict()


@pytest.fixture
def definition_file(tmp_path: Path, definition: dict[str, Any]) -> Path:
    path = tmp_path / "campaign.json"
    path.write_text(json.dumps(definition))
    return path


@pytest.fixture
def opened(settings: Settings, definition_file: Path, definition: dict[str, Any]) -> str:
    done = groupbuy(settings, "campaign", "open", str(definition_file))
    assert done.returncode == 0, done.stderr
    return str(definition["campaign_id"])


def test_open_from_a_file_stores_the_campaign_and_shows_in_the_read_model(
    settings: Settings, definition_file: Path, definition: dict[str, Any]
) -> None:
    campaign_id = definition["campaign_id"]

    done = groupbuy(settings, "campaign", "open", str(definition_file), "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "campaign_id": campaign_id,
        "status": "open",
        "deadline": definition["deadline"],
    }
    assert stored(settings, campaign_id).definition.to_json_dict() == definition
    supplier_topic = Topics(settings.topic_prefix).settlements(definition["supplier_id"])
    with kafka_clients.admin(settings) as admin:
        assert supplier_topic in admin.list_topics()  # the supplier may subscribe at once
    with running(run_relay, settings), running(run_project, settings):
        wait_for(
            lambda: groupbuy(settings, "campaign", "show", campaign_id).returncode == 0,
            what="the opened campaign in the read model",
        )
    view = json.loads(groupbuy(settings, "campaign", "show", campaign_id, "--json").stdout)
    assert (view["status"], view["unit_price"], view["committed_quantity"]) == ("open", "10.00", 0)


def test_open_reads_stdin_and_opening_the_same_definition_again_changes_nothing(
    settings: Settings, definition: dict[str, Any]
) -> None:
    first = groupbuy(settings, "campaign", "open", "-", stdin=json.dumps(definition))
    again = groupbuy(settings, "campaign", "open", "-", stdin=json.dumps(definition))

    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert f"opened {definition['campaign_id']}: open" in first.stdout
    assert stored(settings, definition["campaign_id"]).version == 1


def test_opening_an_id_again_with_another_definition_is_refused(
    settings: Settings, opened: str, definition: dict[str, Any]
) -> None:
    changed = definition | {"title": "Another product"}

    done = groupbuy(settings, "campaign", "open", "-", stdin=json.dumps(changed))

    assert done.returncode == 5
    assert f"campaign {opened!r} is already open with another definition" in done.stderr
    assert stored(settings, opened).definition.title == "A test product"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON: Expecting property name enclosed in double quotes: line 1"),
        ('["a list"]', "definition: must be a JSON object"),
        (
            json.dumps({"campaign_id": "Bad Slug", "floor_price": 79, "sku": "S"}),
            "campaign_id: must be 1 to 64 lowercase letters",
        ),
    ],
    ids=["not-json", "not-an-object", "bad-fields"],
)
def test_a_bad_definition_file_is_named_with_its_problem(
    settings: Settings, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)

    done = groupbuy(settings, "campaign", "open", str(path))

    assert done.returncode == 1
    assert done.stderr.startswith(f"groupbuy: {path}")
    assert message in done.stderr
    assert done.stdout == ""


def test_every_problem_of_a_definition_is_listed_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "campaign.json"
    path.write_text(json.dumps({"campaign_id": "ok-id", "floor_price": 79.0, "deadline": "soon"}))

    done = groupbuy(settings, "campaign", "open", str(path))

    assert done.returncode == 1
    for field in ("sku", "title", "supplier_id", "pricing", "floor_price", "deadline"):
        assert f"  - {field}: " in done.stderr, field


def test_a_missing_definition_file_is_named(settings: Settings, tmp_path: Path) -> None:
    done = groupbuy(settings, "campaign", "open", str(tmp_path / "nowhere.json"))

    assert done.returncode == 1
    assert f"cannot read {tmp_path / 'nowhere.json'}: [Errno 2] No such file" in done.stderr


def test_a_deadline_in_the_past_is_refused_as_bad_input(
    settings: Settings, definition: dict[str, Any]
) -> None:
    past = definition | {"deadline": "2020-01-01T00:00:00Z"}

    done = groupbuy(settings, "campaign", "open", "-", stdin=json.dumps(past))

    assert done.returncode == 1
    assert "deadline: must be later than now" in done.stderr


def test_extend_moves_the_deadline_later(settings: Settings, opened: str) -> None:
    later = stored(settings, opened).deadline + timedelta(days=2)

    done = groupbuy(settings, "campaign", "extend", opened, "--deadline", instant(later), "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deadline"] == instant(later)
    assert stored(settings, opened).deadline == later


def test_extend_to_an_earlier_deadline_is_refused(settings: Settings, opened: str) -> None:
    before = stored(settings, opened).deadline
    earlier = before - timedelta(minutes=10)

    done = groupbuy(settings, "campaign", "extend", opened, "--deadline", instant(earlier))

    assert done.returncode == 5
    assert "a new deadline must be later than that" in done.stderr
    assert stored(settings, opened).deadline == before


@pytest.mark.parametrize(
    "deadline", ["tomorrow", "2026-12-08T18:00:00+02:00", "2026-02-30T00:00:00Z"]
)
def test_extend_with_an_unreadable_deadline_says_what_is_expected(
    settings: Settings, opened: str, deadline: str
) -> None:
    done = groupbuy(settings, "campaign", "extend", opened, "--deadline", deadline)

    assert done.returncode == 1
    assert done.stderr.startswith("groupbuy: --deadline ")


def test_cancel_closes_the_campaign_and_a_second_cancel_is_refused(
    settings: Settings, opened: str
) -> None:
    first = groupbuy(settings, "campaign", "cancel", opened, "--json")
    second = groupbuy(settings, "campaign", "cancel", opened)
    extend = groupbuy(
        settings,
        "campaign",
        "extend",
        opened,
        "--deadline",
        instant(datetime.now(UTC) + timedelta(days=9)),
    )

    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["status"] == "cancelled"
    assert stored(settings, opened).status == "cancelled"
    assert (second.returncode, extend.returncode) == (5, 5)
    assert "it already closed (cancelled)" in second.stderr
    assert "is no longer open: it closed (cancelled)" in extend.stderr


@pytest.mark.parametrize("action", [["cancel"], ["extend", "--deadline", "2030-01-01T00:00:00Z"]])
def test_an_unknown_campaign_exits_with_its_own_code(settings: Settings, action: list[str]) -> None:
    done = groupbuy(settings, "campaign", action[0], "no-such-campaign", *action[1:])

    assert done.returncode == 4
    assert "no campaign 'no-such-campaign'; check the id or open it first" in done.stderr


def test_an_unreachable_database_is_named_before_anything_is_written(
    settings: Settings, definition_file: Path
) -> None:
    nowhere = replace(settings, database_url="postgresql://u:secret@127.0.0.1:9/groupbuy")

    done = groupbuy(nowhere, "campaign", "open", str(definition_file))

    assert done.returncode == 3
    assert "cannot reach PostgreSQL at 127.0.0.1:9/groupbuy" in done.stderr
    assert "GROUPBUY_DATABASE_URL" in done.stderr
    assert "secret" not in done.stderr


@pytest.mark.parametrize("service", ["ingest", "relay", "project", "clock", "settle", "run"])
def test_a_service_names_an_unreachable_kafka_at_once(settings: Settings, service: str) -> None:
    nowhere = replace(settings, kafka_bootstrap="127.0.0.1:9")

    done = groupbuy(nowhere, service)

    assert done.returncode == 3
    settings_line, error = done.stderr.strip().splitlines()  # the settings first, then why
    assert f" {service} starting with GROUPBUY_DATABASE_URL=" in settings_line
    assert error == (
        "groupbuy: cannot reach Kafka at 127.0.0.1:9: [Errno 111] Connection refused "
        "(check GROUPBUY_KAFKA_BOOTSTRAP, or run `make up`)"
    )


def test_a_service_names_an_unreachable_database(settings: Settings) -> None:
    nowhere = replace(settings, database_url="postgresql://u:secret@127.0.0.1:9/groupbuy")

    done = groupbuy(nowhere, "ingest")

    assert done.returncode == 3
    assert "cannot reach PostgreSQL at 127.0.0.1:9/groupbuy" in done.stderr


@pytest.mark.parametrize(
    "command",
    [[], ["campaign"], ["campaign", "open"], ["campaign", "extend"], ["campaign", "cancel"]]
    + [[name] for name in ("ingest", "relay", "project", "clock", "settle", "run", "replay")]
    + [[name] for name in ("history", "whatif", "demand", "export", "demo")],
    ids=lambda command: " ".join(command) or "groupbuy",
)
def test_every_command_has_help_with_the_exit_codes(command: list[str]) -> None:
    done = subprocess.run(
        [GROUPBUY, *command, "--help"], capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: groupbuy")
    assert "exit codes: 0 done, 1 bad input, 2 bad usage, 3 a service" in " ".join(
        done.stdout.split()
    )
