"""Build hook: the wheel carries the repository's Alembic tree as ``alpha_data/_migrations``.

The top-level ``migrations/`` directory stays the one reviewed tree (``alembic``
run from the repository uses it); this hook copies its revisions, ``env.py`` and
``script.py.mako`` into the built package so that ``alpha-data migrate`` works
from an installed wheel. Nothing is duplicated in the repository. All metadata
lives in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "migrations"
PACKAGED = ("env.py", "script.py.mako", "versions/*.py")


class BuildPyWithMigrations(build_py):
    """``build_py`` plus a copy of ``migrations/`` into ``alpha_data/_migrations``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the repository's tree
            return
        target = Path(self.build_lib) / "alpha_data" / "_migrations"
        for pattern in PACKAGED:
            for source in sorted(SOURCE.glob(pattern)):
                destination = target / source.relative_to(SOURCE)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)


setup(cmdclass={"build_py": BuildPyWithMigrations})
