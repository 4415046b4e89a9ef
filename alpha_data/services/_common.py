"""Helpers shared by the services: pydantic input models and after-commit publishing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from alpha_data.errors import InvalidDataError

if TYPE_CHECKING:
    from alpha_data.database import Database
    from alpha_data.events import Event
    from alpha_data.uow import UnitOfWork

__all__ = ["Input", "publish_after_commit", "validate"]

M = TypeVar("M", bound=BaseModel)


class Input(BaseModel):
    """Base of service inputs: immutable, no unknown fields, inputs never echoed in errors."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
        arbitrary_types_allowed=False,
    )


def _describe(error: Any) -> str:
    loc = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, InvalidDataError):
        message = cause.message
        return message if not loc or message.startswith(loc) else f"{loc}: {message}"
    message = str(error.get("msg", "invalid value"))
    return f"{loc}: {message}" if loc else message


def validate(model: type[M], **data: Any) -> M:
    """Build ``model`` from ``data`` or raise InvalidDataError naming every bad field.

    Only field names and rule descriptions appear in the message, never the
    values that were given.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        messages = [_describe(err) for err in exc.errors(include_input=False, include_url=False)]
        raise InvalidDataError("; ".join(messages) or "invalid input") from None


async def publish_after_commit(uow: UnitOfWork, db: Database, event: Event) -> None:
    """Deliver ``event`` once the UoW's transaction has committed (never on rollback).

    The event goes into the commit's outbox row (alpha_data.outbox): it is
    delivered at least once even if this process cannot deliver it.
    """
    uow.publish_after_commit(event)
