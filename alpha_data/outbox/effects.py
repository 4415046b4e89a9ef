"""What an outbox row holds (a commit's tags and events) and how it is delivered.

The payload is ``{"tags": [...], "events": [{"channel": ..., "data": {...}}]}``;
each event's sequence is not stored in it but derived from the row's
``sequences`` (``{aggregate: last}``, what the commit took): the i-th of the n
events of an aggregate gets ``last - n + i``. Delivering a row twice is
harmless: a tag bump sets a fresh token, an event keeps its id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alpha_data.events import Event, event_type
from alpha_data.redisio.protocol import CacheUnavailable

if TYPE_CHECKING:
    from alpha_data.cache import Cache
    from alpha_data.events import EventBus

__all__ = ["Effects", "deliver", "from_payload", "sequenced"]


@dataclass
class Effects:
    """The after-commit effects of one commit: tags to invalidate, events to deliver."""

    tags: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tags or self.events)

    def payload(self) -> dict[str, Any]:
        """The JSON the outbox row stores (events without their sequence)."""
        return {
            "tags": sorted(self.tags),
            "events": [
                {"channel": e.channel, "data": e.model_dump(mode="json", exclude={"sequence"})}
                for e in self.events
            ],
        }

    def counts(self) -> dict[str, int]:
        """How many events each aggregate has in this commit."""
        return dict(Counter(e.aggregate_key() for e in self.events))


def sequenced(events: Sequence[Event], taken: Mapping[str, int]) -> list[Event]:
    """``events`` with the sequence numbers the commit took (``{aggregate: last}``)."""
    remaining = Counter(e.aggregate_key() for e in events)
    out: list[Event] = []
    for event in events:
        key = event.aggregate_key()
        number = taken[key] - remaining[key] + 1
        remaining[key] -= 1
        out.append(event.model_copy(update={"sequence": number}))
    return out


def from_payload(payload: Mapping[str, Any], taken: Mapping[str, int]) -> Effects:
    """The effects a stored row describes, events sequenced."""
    events = [
        event_type(item["channel"]).model_validate(item["data"])
        for item in payload.get("events", ())
    ]
    return Effects(tags=list(payload.get("tags", ())), events=sequenced(events, taken))


async def deliver(cache: Cache, bus: EventBus, effects: Effects, *, probe: bool = False) -> None:
    """Invalidate the tags, then deliver the events; raises CacheUnavailable on failure.

    ``probe`` (relays) tries Redis even while the cache's circuit is open.
    """
    if effects.tags and not await cache.invalidate(effects.tags, probe=probe):
        raise CacheUnavailable("cache invalidation was not delivered")
    if effects.events:
        await bus.deliver(effects.events)
