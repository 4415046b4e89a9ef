"""Refresh the committed lock (lock/*.txt) with uv and print what changed.

    python scripts/lock.py            # add what pyproject.toml gained, keep every other pin
    python scripts/lock.py --upgrade  # move every pin to the newest release allowed

lock/default.txt is the universal resolution (Python 3.10-3.13) of every extra,
with the "latest" SQLAlchemy leg; lock/sqlalchemy-lowest.txt is the same set
with SQLAlchemy 2.0.31, derived from it so both legs differ in nothing else.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "lock"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)(?:\s*;\s*(.+))?$")


def pins(path: Path) -> dict[str, str]:
    """name (with its marker, if any) -> version, read from a compiled lock."""
    found: dict[str, str] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            name, version, marker = match.groups()
            found[f"{name.lower()} ; {marker}" if marker else name.lower()] = version
    return found


def compile_lock(output: Path, *constraints: Path, upgrade: bool = False) -> None:
    command = [
        sys.executable, "-m", "uv", "pip", "compile", "pyproject.toml",
        "--all-extras", "--universal", "--python-version", "3.10", "--quiet",
        "--output-file", str(output.relative_to(ROOT)),
        "--custom-compile-command", "make lock  (or make deps-upgrade)",
    ]  # fmt: skip
    for constraint in constraints:
        command += ["--constraint", str(constraint)]
    if upgrade:
        command.append("--upgrade")
    subprocess.run(command, cwd=ROOT, check=True)  # noqa: S603 (a fixed uv command line)


def main() -> int:
    upgrade = "--upgrade" in sys.argv[1:]
    default, lowest = LOCK / "default.txt", LOCK / "sqlalchemy-lowest.txt"
    before = pins(default)
    compile_lock(default, LOCK / "latest.in", upgrade=upgrade)
    # The lowest leg: every pin of the default lock except SQLAlchemy's.
    others = [line for line in default.read_text().splitlines() if PIN.match(line.strip())]
    others = [line for line in others if not line.lower().startswith("sqlalchemy==")]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(others) + "\n")
    try:
        compile_lock(lowest, Path(handle.name), LOCK / "lowest.in")
    finally:
        Path(handle.name).unlink()
    after = pins(default)
    changes = [
        f"  {name}: {before.get(name, '(new)')} -> {after.get(name, '(gone)')}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]
    print("lock unchanged" if not changes else "lock changes:\n" + "\n".join(changes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
