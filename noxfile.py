"""The test matrix: ``make test`` runs every default session below.

Interpreters come from the machine (pyenv shims or PATH); a missing one fails
the run instead of being skipped. Virtualenvs are built with uv.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "migrations",
    "tests",
    "reliability",
    "fuzz",
    "scaleout",
    "bench-smoke",
    "embedded",
]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# lowest: the first 2.0.x that runs on Python 3.13 (see docs/decisions.md).
# latest: the newest release the interpreter can take (2.1.x needs Python 3.11+,
# so Python 3.10 gets the newest 2.0.x).
SQLALCHEMY = {
    "lowest": ["sqlalchemy[asyncio]==2.0.31"],
    "latest": ["--upgrade-package", "sqlalchemy", "sqlalchemy[asyncio]>=2.0.31,<2.2"],
}

os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
os.environ.setdefault("UV_PYTHON_PREFERENCE", "only-system")


@nox.session(python=PYTHONS)
@nox.parametrize("sqlalchemy", list(SQLALCHEMY))
def tests(session: nox.Session, sqlalchemy: str) -> None:
    """The test suite against real PostgreSQL and Redis."""
    session.install("-e", ".[test]", *SQLALCHEMY[sqlalchemy])
    session.run("python", "-c", "import sqlalchemy; print('SQLAlchemy', sqlalchemy.__version__)")
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--ignore=tests/reliability",
        "--ignore=tests/fuzz",
        "--ignore=tests/scaleout",
        *session.posargs,
    )


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.12")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test,web]", "mypy>=1.11")
    session.run("mypy", "alpha_data")


@nox.session(python="3.12")
def migrations(session: nox.Session) -> None:
    """upgrade, downgrade, upgrade and ``alembic check`` on a fresh database."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "tests.migration_roundtrip")


@nox.session(name="bench-smoke", python="3.12")
def bench_smoke(session: nox.Session) -> None:
    """Every benchmark runs (quick sizes); timings are printed, never asserted."""
    session.install("-e", ".[test]")
    report = session.create_tmp() + "/bench-smoke.json"
    session.run("python", "-m", "bench.run", "--quick", "--output", report)


@nox.session(python="3.12")
def reliability(session: nox.Session) -> None:
    """Concurrency, faults, hostile input and secrets, against the real servers."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/reliability", *session.posargs)


@nox.session(python="3.12")
def fuzz(session: nox.Session) -> None:
    """schemathesis against the example API's own OpenAPI schema: no 5xx, schema-true."""
    session.install("-e", ".[test,fuzz]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/fuzz", *session.posargs)


@nox.session(python="3.12")
def scaleout(session: nox.Session) -> None:
    """Replicas, PgBouncer and Redis Sentinel/Cluster, on throwaway real servers."""
    session.run("bash", "scripts/scaleout/install.sh", external=True)
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/scaleout", *session.posargs)


#: Env that could point the run at a real server: removed, so nothing is configured.
_SERVICE_ENV = (
    "ALPHA_DATA_DATABASE_URL",
    "ALPHA_DATA_REDIS_URL",
    "ALPHA_DATA_TEST_SERVER_URL",
    "ALPHA_DATA_TEST_REDIS_URL",
    "ALPHA_DATA_TEST_EMBEDDED",
    "ALPHA_DATA_EMBEDDED",
)


def _no_network() -> list[str]:
    """A command prefix running with no network at all (util-linux unshare), or []."""
    prefix = ["unshare", "--map-root-user", "--net", "--"]
    if shutil.which("unshare") is None:
        return []
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)  # noqa: S603
    return prefix if probe.returncode == 0 else []


@nox.session(python="3.12")
def embedded(session: nox.Session) -> None:
    """The demo and part of the suite with no server configured or reachable: embedded only.

    Runs in a network namespace of its own (nothing answers at 127.0.0.1:5432/6379), with no
    ALPHA_DATA_* URL set, so only the fallback to the embedded servers can make it pass.
    Where namespaces are unavailable, the embedded servers are asked for explicitly.
    """
    session.install("-e", ".[test,embedded]")
    data = os.path.join(os.path.abspath(session.create_tmp()), "embedded-data")
    env = {"ALPHA_DATA_EMBEDDED_DIR": data}
    isolate = _no_network()
    unset = ["env", *(f"--unset={name}" for name in _SERVICE_ENV)]
    if not isolate:
        session.warn("no network namespace here: asking for the embedded servers explicitly")
        unset += ["ALPHA_DATA_EMBEDDED=1", "ALPHA_DATA_TEST_EMBEDDED=1"]
    session.run("alpha-data", "embedded", "clean", "--yes", env=env)  # measure a first start
    with session.chdir(session.create_tmp()):  # away from a developer's .env
        session.run(*isolate, *unset, "alpha-data", "demo", env=env, external=True)
    session.run(
        *isolate,
        *unset,
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_embedded.py",
        "tests/test_repositories.py",
        "tests/test_metrics.py",
        "tests/test_uow.py",
        *session.posargs,
        env=env,
        external=True,
    )
    session.run("alpha-data", "embedded", "stop", env=env)
