"""A consumer group join that a short poll cannot lose (kafka-python 3.0.12).

kafka-python sends a JoinGroup, then a SyncGroup, as one task on its IO thread, and the
caller's `poll(timeout_ms)` waits for it at most that long. When the round trip takes
longer (a loaded machine: more than the 0.2 s our loops poll for), `poll` returns and the
task finishes in the background. Then either:

- the next `poll` sees a finished task and sends a new JoinGroup instead of taking the
  assignment the finished one got: the member joins again and again, a new generation
  each time, and never consumes; or
- the leader of a rebalance it started itself (a new topic, for a pattern subscription)
  no longer sees a reason to rejoin once it has made the assignment, so no `poll` ever
  takes the finished task: the member stays "rebalancing" with no partitions, for ever.

Measured here: a consumer polling for 5 ms was not given its partitions in 20 s
(`tests/integration/test_kafka_clients.py`); on a loaded machine, ingestion never took
up a new site's topic.

`keep_finished_joins` makes every poll go on with a join in flight or finished, and take
the finished one's outcome (its assignment, or its error, which kafka-python then handles
as it would have), as Kafka's own client does.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka.coordinator.base import BaseCoordinator
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.future import Future

log = logging.getLogger(__name__)


def keep_finished_joins() -> None:
    """Wrap kafka-python's join so that a join finished between two polls is taken, not
    sent again nor left. Applied once, by importing `infra.adapters.kafka_clients`."""
    original = BaseCoordinator.join_group_async
    if getattr(original, "keeps_finished_joins", False):
        return
    need_rejoin = ConsumerCoordinator.need_rejoin
    if not hasattr(original, "__code__") or "_join_task" not in original.__code__.co_names:
        log.warning(
            "kafka-python's group join changed (no _join_task): not wrapped; a consumer "
            "whose polls are shorter than a join may not get its partitions"
        )
        return

    async def join_group_async(self: Any, timeout_ms: Any = None) -> Any:
        finished = getattr(self, "_join_task", None)
        if isinstance(finished, Future) and finished.is_done:
            # kafka-python would send a new JoinGroup for a finished task: hand it a task
            # not yet done that ends as the finished one did, on the IO loop's next turn.
            self._join_task = self._manager.call_soon(_outcome_of, finished)
        return await original(self, timeout_ms)

    def need_rejoin_or_join_pending(self: Any) -> bool:
        return getattr(self, "_join_task", None) is not None or bool(need_rejoin(self))

    join_group_async.keeps_finished_joins = True  # type: ignore[attr-defined]
    join_group_async.__doc__ = original.__doc__
    need_rejoin_or_join_pending.__doc__ = need_rejoin.__doc__
    BaseCoordinator.join_group_async = join_group_async
    ConsumerCoordinator.need_rejoin = need_rejoin_or_join_pending


def _outcome_of(finished: Future) -> Any:
    if finished.exception is not None:
        raise finished.exception
    return finished.value
