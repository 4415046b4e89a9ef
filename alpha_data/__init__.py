"""alpha_data: the async data layer of AlphaPulse.

``Database`` owns the engine, pool and Redis; ``Database.unit_of_work()`` opens
a ``UnitOfWork`` whose repositories return typed ORM objects.
"""

from alpha_data.database import Database, Health
from alpha_data.repositories import MetricPoint, Page
from alpha_data.settings import Settings
from alpha_data.uow import UnitOfWork

__all__ = ["Database", "Health", "MetricPoint", "Page", "Settings", "UnitOfWork"]
__version__ = "0.1.0"
