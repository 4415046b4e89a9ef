"""The ``alpha-data`` command: database, migrations, seed, demo, health, bench, relay, embedded."""

from __future__ import annotations

from alpha_data.cli import db as db_commands
from alpha_data.cli import demo as _demo  # noqa: F401 - registers `demo`
from alpha_data.cli import relay as _relay  # noqa: F401 - registers `relay`
from alpha_data.cli import seed as _seed  # noqa: F401 - registers `seed`
from alpha_data.cli import serve as _serve  # noqa: F401 - registers `serve`, `bench`
from alpha_data.cli.common import app
from alpha_data.cli.embedded import embedded_app
from alpha_data.cli.metrics import metrics_app

__all__ = ["app", "main"]

app.add_typer(db_commands.db_app, name="db")
app.add_typer(metrics_app, name="metrics")
app.add_typer(embedded_app, name="embedded")
db_commands.register(app)


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
