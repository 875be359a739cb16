"""The server's kept answers: never one read before a change it did not see."""

from __future__ import annotations

from infra.http.live import Answers


def test_an_answer_is_kept_until_its_campaign_changes() -> None:
    answers = Answers()
    answers.put("c1", "v1", answers.ticket("c1"))
    answers.put("c2", "w1", answers.ticket("c2"))

    assert answers.get("c1") == "v1"
    answers.changed("c1")
    assert answers.get("c1") is None
    assert answers.get("c2") == "w1"  # another campaign's change leaves it


def test_an_answer_read_before_a_change_is_not_kept() -> None:
    answers = Answers()
    ticket = answers.ticket("c1")  # the read starts
    answers.changed("c1")  # the projector commits meanwhile
    answers.put("c1", "stale", ticket)

    assert answers.get("c1") is None


def test_an_answer_read_before_the_connection_was_lost_is_not_kept() -> None:
    answers = Answers()
    answers.put("c2", "w1", answers.ticket("c2"))
    ticket = answers.ticket("c1")  # the read starts
    answers.forget()  # the listening connection is lost: changes may go unheard
    answers.put("c1", "maybe stale", ticket)

    assert answers.get("c1") is None
    assert answers.get("c2") is None
    answers.put("c1", "fresh", answers.ticket("c1"))
    assert answers.get("c1") == "fresh"
