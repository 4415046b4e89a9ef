"""Event models: the typed payloads, their identity, their aggregate and the registry.

Every event is a frozen pydantic model travelling on one ``channel``:

* ``event_id`` is unique (a uuid4 hex, made when the event is built): a
  consumer drops a redelivered duplicate by it.
* ``sequence`` is the per-aggregate number the outbox assigns at commit
  (0 until then): events of one aggregate (``aggregate_key()``, e.g.
  ``portfolio:12``) are numbered 1, 2, 3, ... in commit order, so a consumer
  can restore that order whatever order the deliveries arrive in.

Each subclass that names its own ``channel`` registers itself, so a stored or
received message can be turned back into its class: ``event_type(channel)``.
Application events register the same way; two classes on one channel are a
``TypeError`` when the second is defined.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AlertRaised",
    "Event",
    "PositionChanged",
    "TradeExecuted",
    "event_type",
    "event_types",
]

_REGISTRY: dict[str, type[Event]] = {}
_CHANNEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _new_id() -> str:
    return uuid.uuid4().hex


class Event(BaseModel):
    """Base of every event; ``channel`` names the channel (and stream) it travels on."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    channel: ClassVar[str] = "event"

    event_id: str = Field(default_factory=_new_id, min_length=1, max_length=128)
    sequence: int = Field(default=0, ge=0)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Register a subclass that names its own channel (once per channel)."""
        super().__pydantic_init_subclass__(**kwargs)
        if "channel" not in cls.__dict__:
            return  # an intermediate base class: travels on no channel of its own
        channel = cls.channel
        if not channel or not set(channel) <= _CHANNEL_CHARS:
            raise TypeError(
                f"{cls.__qualname__}.channel must be letters, digits, '_', '-' or '.', "
                f"got {channel!r}"
            )
        known = _REGISTRY.get(channel)
        if known is not None and known is not cls:
            raise TypeError(
                f"event channel {channel!r} is already taken by "
                f"{known.__module__}.{known.__qualname__}; "
                f"{cls.__module__}.{cls.__qualname__} needs a channel of its own"
            )
        _REGISTRY[channel] = cls

    def aggregate_key(self) -> str:
        """The aggregate whose commit order ``sequence`` numbers (default: the channel)."""
        return self.channel


def event_type(channel: str) -> type[Event]:
    """The event class registered for ``channel``; KeyError naming it when there is none."""
    try:
        return _REGISTRY[channel]
    except KeyError:
        raise KeyError(f"no event class is registered for channel {channel!r}") from None


def event_types() -> dict[str, type[Event]]:
    """A copy of the registry: channel → event class."""
    return dict(_REGISTRY)


class TradeExecuted(Event):
    """A trade was committed."""

    channel: ClassVar[str] = "trade_executed"
    trade_id: int
    portfolio_id: int
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    executed_at: datetime

    def aggregate_key(self) -> str:
        """Trades are ordered per portfolio."""
        return f"portfolio:{self.portfolio_id}"


class PositionChanged(Event):
    """A position's quantity changed (0 means it was closed)."""

    channel: ClassVar[str] = "position_changed"
    portfolio_id: int
    symbol: str
    quantity: Decimal
    entry_price: Decimal | None

    def aggregate_key(self) -> str:
        """Position changes are ordered per portfolio (with its trades)."""
        return f"portfolio:{self.portfolio_id}"


class AlertRaised(Event):
    """An alert was committed."""

    channel: ClassVar[str] = "alert_raised"
    alert_id: int
    title: str
    severity: str
    source: str

    def aggregate_key(self) -> str:
        """Each alert is its own aggregate."""
        return f"alert:{self.alert_id}"
