"""alpha_data.urls: one spelling of where a URL points, and password masking."""

from __future__ import annotations

import pytest

from alpha_data import Settings
from alpha_data.cli.db import _server_and_name
from alpha_data.observability import probes
from alpha_data.settings import mask_url as settings_mask_url
from alpha_data.urls import UNPARSEABLE, database_name, mask_url, server_address, where

URL = "postgresql+asyncpg://ana:s%40cret@db.internal:6543/my%20db"


def test_a_percent_encoded_database_name_is_decoded_the_same_everywhere() -> None:
    assert database_name(URL) == "my db"
    assert where(URL) == "db.internal:6543/my db"
    assert server_address(URL) == "db.internal:6543"
    assert probes.where(URL) == where(URL)  # replica probes and the router join on it
    settings = Settings(database_url=URL, _env_file=None)  # type: ignore[call-arg]
    assert _server_and_name(settings)[1] == "my db"  # what `alpha-data db create` creates


def test_masking_keeps_the_rest_of_the_url_so_it_round_trips() -> None:
    masked = mask_url(URL)
    assert masked == "postgresql+asyncpg://ana:***@db.internal:6543/my%20db"
    assert "s%40cret" not in masked and "cret" not in masked
    assert where(masked) == where(URL) and database_name(masked) == "my db"
    assert settings_mask_url is mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u@h/db", "postgresql://u@h/db"),  # no password: unchanged
        ("postgresql://:pw@h:5432/db", "postgresql://:***@h:5432/db"),
        ("postgresql://u:pw@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (
            "redis+sentinel://u:pw@s1:26379,s2:26379/mymaster",
            "redis+sentinel://u:***@s1:26379,s2:26379/mymaster",
        ),
        ("postgresql://u:pw@h:99999999/db", UNPARSEABLE),  # never echo what we cannot parse
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "pw" not in mask_url(url)


def test_defaults_and_sockets() -> None:
    assert where("postgresql+asyncpg://u@/db?host=/run/postgresql") == "localhost:5432/db"
    assert where("postgresql://u:pw@[::1]/x") == "[::1]:5432/x"
    assert where("postgresql://u:pw@h:99999999/db") == UNPARSEABLE
