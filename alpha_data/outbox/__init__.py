"""Transactional outbox: after-commit effects (cache invalidations, events) that survive faults.

``Outbox`` (writer.py) records a commit's effects in its transaction and
delivers them right after COMMIT; ``Relay`` (relay.py) delivers whatever the
committing process could not. See docs/caching.md and docs/decisions.md.
"""

from alpha_data.outbox.effects import Effects
from alpha_data.outbox.relay import Relay
from alpha_data.outbox.writer import Outbox, OutboxStats, Recorded

__all__ = ["Effects", "Outbox", "OutboxStats", "Recorded", "Relay"]
