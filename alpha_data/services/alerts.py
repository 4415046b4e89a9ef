"""Alert services: raise (published after commit) and acknowledge."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator

from alpha_data.errors import ConflictError, InvalidDataError
from alpha_data.events import AlertRaised
from alpha_data.models import Alert, Severity
from alpha_data.repositories.base import check_id
from alpha_data.services._common import Input, publish_after_commit, validate
from alpha_data.validation import check_text

if TYPE_CHECKING:
    from alpha_data.database import Database
    from alpha_data.uow import UnitOfWork

__all__ = ["acknowledge_alert", "raise_alert"]

MAX_MESSAGE = 10_000
MAX_TAGS = 20
MAX_TAG_LENGTH = 64


def _severity(value: Any) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Severity)
        raise InvalidDataError(f"severity must be one of {allowed}") from None


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidDataError("tags must be a list of strings")
    out: list[str] = []
    for tag in value:
        check_text(tag, "each tag", max_length=MAX_TAG_LENGTH)
        if not tag.isprintable():
            raise InvalidDataError("tags must not contain control characters")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise InvalidDataError(f"at most {MAX_TAGS} tags per alert")
    return tuple(out)


class NewAlert(Input):
    """Validated input of :func:`raise_alert`."""

    title: Annotated[str, BeforeValidator(lambda v: check_text(v, "title", max_length=200))]
    message: Annotated[
        str, BeforeValidator(lambda v: check_text(v, "message", max_length=MAX_MESSAGE))
    ]
    severity: Annotated[Severity, BeforeValidator(_severity)]
    source: Annotated[str, BeforeValidator(lambda v: check_text(v, "source", max_length=100))]
    tags: Annotated[tuple[str, ...], BeforeValidator(_tags)] = ()


async def raise_alert(
    db: Database,
    *,
    title: str,
    message: str,
    severity: Severity | str,
    source: str,
    tags: Iterable[str] = (),
) -> Alert:
    """Store an open alert; ``AlertRaised`` is published after the commit."""
    data = validate(
        NewAlert, title=title, message=message, severity=severity, source=source, tags=tags
    )

    async def insert(uow: UnitOfWork) -> Alert:
        alert = await uow.alerts.add(
            Alert(
                title=data.title,
                message=data.message,
                severity=data.severity,
                source=data.source,
                tags=list(data.tags),
            )
        )
        await publish_after_commit(
            uow,
            db,
            AlertRaised(
                alert_id=alert.id,
                title=alert.title,
                severity=alert.severity.value,
                source=alert.source,
            ),
        )
        return alert

    return await db.run(insert)


async def acknowledge_alert(db: Database, alert_id: int, *, by: str) -> Alert:
    """Acknowledge an alert (idempotent: the first acknowledger and time stay).

    NotFoundError for an unknown alert; ``by`` is 1 to 64 characters.
    """
    check_id(alert_id, "alert_id")
    check_text(by, "by", max_length=64)

    async def ack(uow: UnitOfWork) -> Alert:
        return await uow.alerts.acknowledge(alert_id, by)

    try:
        return await db.run(ack)
    except ConflictError:
        # A concurrent acknowledgement bumped the version first; reading again
        # finds it acknowledged and returns it unchanged.
        return await db.run(ack)
