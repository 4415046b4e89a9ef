"""The test matrix: ``make test`` runs every default session below.

Interpreters come from the machine (pyenv shims or PATH); a missing one fails
the run instead of being skipped. Virtualenvs are built with uv, and every
default session installs exactly the committed lock (lock/*.txt); only the
non-default ``deps-latest`` session takes the newest releases on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import nox

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True
# `make test` runs these as two halves at once: keep the Makefile's CHECKS in step.
nox.options.sessions = [
    "lint",
    "typecheck",
    "migrations",
    "tests",
    "reliability",
    "fuzz",
    "scaleout",
    "bench-smoke",
    "extension",
    "embedded",
]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
LOCK = "lock/default.txt"
# lowest: the first 2.0.x that runs on Python 3.13 (see docs/decisions.md).
# latest: the newest locked release the interpreter can take (2.1.x needs
# Python 3.11+, so Python 3.10 gets the newest locked 2.0.x).
SQLALCHEMY = {"lowest": "lock/sqlalchemy-lowest.txt", "latest": LOCK}
DEFAULT_TESTS = ["--ignore=tests/reliability", "--ignore=tests/fuzz", "--ignore=tests/scaleout"]


def install(session: nox.Session, *packages: str, lock: str = LOCK) -> None:
    """Install packages at exactly the versions of the committed lock."""
    session.install("-c", lock, *packages)


os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
os.environ.setdefault("UV_PYTHON_PREFERENCE", "only-system")


@nox.session(python=PYTHONS)
@nox.parametrize("sqlalchemy", list(SQLALCHEMY))
def tests(session: nox.Session, sqlalchemy: str) -> None:
    """The test suite against real PostgreSQL and Redis."""
    install(session, "-e", ".[test]", lock=SQLALCHEMY[sqlalchemy])
    session.run("python", "-c", "import sqlalchemy; print('SQLAlchemy', sqlalchemy.__version__)")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *DEFAULT_TESTS, *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    install(session, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.12")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and on a typed application using its extension points."""
    install(session, "-e", ".[test,web]", "mypy")
    session.run("mypy", "alpha_data", "tests/typed_app")


@nox.session(python="3.12")
def migrations(session: nox.Session) -> None:
    """upgrade, downgrade, upgrade and ``alembic check`` on a fresh database."""
    install(session, "-e", ".[test]")
    session.run("python", "-m", "tests.migration_roundtrip")


@nox.session(name="bench-smoke", python="3.12")
def bench_smoke(session: nox.Session) -> None:
    """Every benchmark runs (quick sizes); timings are printed, never asserted."""
    install(session, "-e", ".[test,web]")  # web: uvicorn for the HTTP rows
    report = session.create_tmp() + "/bench-smoke.json"
    session.run("python", "-m", "bench.run", "--quick", "--output", report)


@nox.session(python="3.12")
def reliability(session: nox.Session) -> None:
    """Concurrency, faults, hostile input and secrets, against the real servers."""
    install(session, "-e", ".[test]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/reliability", *session.posargs)


@nox.session(python="3.12")
def fuzz(session: nox.Session) -> None:
    """schemathesis against the example API's own OpenAPI schema: no 5xx, schema-true."""
    install(session, "-e", ".[test,fuzz]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/fuzz", *session.posargs)


@nox.session(python="3.12")
def scaleout(session: nox.Session) -> None:
    """Replicas, PgBouncer and Redis Sentinel/Cluster, on throwaway real servers."""
    session.run("bash", "scripts/scaleout/install.sh", external=True)
    install(session, "-e", ".[test]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/scaleout", *session.posargs)


@nox.session(name="deps-latest", python="3.12", default=False)
def deps_latest(session: nox.Session) -> None:
    """Lint, type-check and the tests against the newest releases (not the lock).

    Not in ``make test``: run it (``make deps-latest``) before ``make deps-upgrade``
    to see what the next lock will break, on purpose rather than by surprise.
    """
    session.install("--upgrade", "--resolution", "highest", "-e", ".[test,web]", "ruff", "mypy")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "alpha_data")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *DEFAULT_TESTS, *session.posargs)


@nox.session(python="3.12")
def extension(session: nox.Session) -> None:
    """examples/watchlists on alpha_data's wheel: migrate, ``alembic check``, tests, mypy.

    Both packages are installed from wheels (not editable) and the migrations
    run from a directory outside the repository, so only what the wheels carry
    is used: alpha_data's packaged revisions, then the app's, which depend on them.
    """
    root = Path(__file__).resolve().parent
    app = root / "examples" / "watchlists"
    dist = Path(session.create_tmp()).resolve() / "dist"
    session.run("uv", "build", "--wheel", "-q", "-o", str(dist), str(root), external=True)
    wheel = max(dist.glob("alpha_data-*.whl"), key=lambda p: p.stat().st_mtime)
    install(
        session,
        f"alpha_data[web,test] @ {wheel.as_uri()}",
        f"{app}[test]",
        *("--reinstall-package", "alpha_data", "--reinstall-package", "watchlists"),
    )
    server = os.environ.get(
        "ALPHA_DATA_TEST_SERVER_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    env = {
        "ALPHA_DATA_DATABASE_URL": urlunsplit(
            urlsplit(server)._replace(path=f"/alpha_extension_{uuid.uuid4().hex[:10]}")
        ),
        "ALPHA_DATA_REDIS_URL": os.environ.get(
            "ALPHA_DATA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"
        ),
    }
    session.chdir(session.create_tmp())  # nothing of the checkout on the path
    session.run("alpha-data", "db", "create", env=env)
    try:
        session.run("alpha-data", "migrate", env=env)
        session.run("alembic", "-c", str(app / "alembic.ini"), "upgrade", "heads", env=env)
        session.run("alembic", "-c", str(app / "alembic.ini"), "check", env=env)
    finally:
        session.run("alpha-data", "db", "drop", "--yes", env=env)
    session.chdir(app)
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
    session.run("mypy", "--strict")


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
    install(session, "-e", ".[test,embedded]")
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
