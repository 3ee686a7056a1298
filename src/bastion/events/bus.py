"""The in-process event bus: synchronous fan-out to subscribers, never blocking the publisher.

Topics in use: ``audit`` (one record per request), ``security`` (security events such as
refresh-token reuse or authentication bursts), ``control`` (revocations and other changes every
gateway node must apply). A subscriber that raises is logged and kept; it cannot break the
publisher or the other subscribers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("bastion.events")

Event = dict[str, Any]
Handler = Callable[[Event], None]

TOPICS = ("audit", "security", "control")


class EventBus:
    """In-process publish/subscribe."""

    def __init__(self) -> None:
        self._subs: dict[str, list[Handler]] = {t: [] for t in TOPICS}

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(event)`` for each event on ``topic``; returns an unsubscribe function."""
        if topic not in self._subs:
            raise ValueError(f"unknown topic {topic!r}")
        self._subs[topic].append(handler)

        def unsubscribe() -> None:
            if handler in self._subs[topic]:
                self._subs[topic].remove(handler)

        return unsubscribe

    def has_subscribers(self, topic: str) -> bool:
        """Whether anyone listens on ``topic`` (a publisher may then skip building events)."""
        return bool(self._subs.get(topic))

    def publish(self, topic: str, event: Event) -> None:
        """Deliver ``event`` to every subscriber of ``topic`` now, in subscription order."""
        for handler in tuple(self._subs[topic]):
            try:
                handler(event)
            except Exception:  # a broken subscriber must not break the gateway
                log.exception("event subscriber failed on topic %s", topic)
