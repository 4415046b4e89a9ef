"""One repository per aggregate, each bound to a unit of work's session."""

from alpha_data.repositories.alerts import AlertRepository
from alpha_data.repositories.base import Repository
from alpha_data.repositories.handle import SessionBound, SessionHandle
from alpha_data.repositories.metrics import MetricPoint, MetricsRepository
from alpha_data.repositories.pagination import Page
from alpha_data.repositories.portfolios import PortfolioRepository
from alpha_data.repositories.users import ApiKeyRepository, UserRepository

__all__ = [
    "AlertRepository",
    "ApiKeyRepository",
    "MetricPoint",
    "MetricsRepository",
    "Page",
    "PortfolioRepository",
    "Repository",
    "SessionBound",
    "SessionHandle",
    "UserRepository",
]
