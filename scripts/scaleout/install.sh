#!/usr/bin/env bash
# Install what the `scaleout` nox session needs from Debian's packages, when missing:
# PgBouncer (the PostgreSQL 15 binaries and redis-server are already required by `make test`).
# Idempotent; needs root (or passwordless sudo) only when something is missing.
set -euo pipefail

if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "error: pgbouncer is missing and this user cannot install it (run: apt-get install -y pgbouncer)" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends pgbouncer
# The package starts a system-wide pgbouncer on 127.0.0.1:6432; the tests run
# their own, so stop and disable the packaged one (never fails the install).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1; then
    $SUDO service pgbouncer stop >/dev/null 2>&1 || true
fi
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]
