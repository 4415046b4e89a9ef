"""Throwaway PostgreSQL, PgBouncer and Redis processes on free loopback ports.

Everything lives in one temporary directory and listens on 127.0.0.1 only;
``Components.close()`` stops every process it started (also from ``atexit``
if a test run is interrupted) and removes the directory. PostgreSQL and
PgBouncer refuse to run as root, so under root they run as the ``postgres``
system user.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("ALPHA_DATA_PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVICE_USER = os.environ.get("ALPHA_DATA_SERVICE_USER", "postgres")
HOST = "127.0.0.1"


def free_port(*, bus: bool = False) -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    ``bus``: also port + 10000 (a Redis Cluster node's bus port) must be free.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((HOST, port + 10000))
                except OSError:
                    continue
            return port


def wait_for_port(
    port: int, timeout: float = 20.0, process: subprocess.Popen[Any] | None = None
) -> None:
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout}s")


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


PREFIX = "alpha-scaleout-"


class Components:
    """Owns the temporary directory and every process started in it.

    The directory records the owner's pid and every process started, so a
    later run removes what a killed run (SIGKILL) left behind. SIGTERM is
    turned into KeyboardInterrupt, so pytest's teardown still runs.
    """

    def __init__(self) -> None:
        sweep_leftovers()
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _interrupt)
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.root / "owner.pid").write_text(str(os.getpid()))
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVICE_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self._stoppers: list[Callable[[], None]] = []
        self._closed = False
        atexit.register(self.close)

    def path(self, name: str) -> Path:
        """A directory ``name`` inside the root, owned by the service user."""
        path = self.root / name
        path.mkdir(mode=0o700, exist_ok=True)
        if self._as_user:
            os.chown(path, self._as_user["user"], self._as_user["group"])
        return path

    def write(self, path: Path, text: str) -> Path:
        """Write ``text`` to ``path`` (owned by the service user)."""
        path.write_text(text)
        if self._as_user:
            os.chown(path, self._as_user["user"], self._as_user["group"])
        return path

    def run(self, cmd: Sequence[str | os.PathLike[str]], timeout: float = 60.0) -> str:
        """Run ``cmd`` as the service user; its output, or RuntimeError with it."""
        done = subprocess.run(
            [str(c) for c in cmd],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **self._as_user,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def spawn(self, cmd: Sequence[str | os.PathLike[str]], log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running process as the service user; stopped by ``close``."""
        out = log.open("ab")
        process = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=self.root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._as_user,
        )
        out.close()
        with (self.root / "spawned.pids").open("a") as pids:
            pids.write(f"{process.pid}\n")
        self.on_close(lambda: stop_process(process))
        return process

    def on_close(self, stopper: Callable[[], None]) -> None:
        """Run ``stopper`` at close (last registered, first run)."""
        self._stoppers.append(stopper)

    def close(self) -> None:
        """Stop everything and remove the directory (never raises)."""
        if self._closed:
            return
        self._closed = True
        while self._stoppers:
            stopper = self._stoppers.pop()
            with contextlib.suppress(Exception):
                stopper()
        shutil.rmtree(self.root, ignore_errors=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _alive(pid: int) -> bool:
    """True for a running process (a zombie is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def sweep_leftovers() -> None:
    """Stop the servers of earlier runs whose owner died, and remove their directories."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((root / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue  # a run in progress (maybe another engineer's)
        for postmaster in root.glob("*/postmaster.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(postmaster.read_text().split()[0])
                if _runs_in(pid, root):
                    os.kill(pid, signal.SIGQUIT)  # immediate shutdown
        with contextlib.suppress(OSError):
            for line in (root / "spawned.pids").read_text().split():
                with contextlib.suppress(ValueError, OSError):
                    if _runs_in(int(line), root):
                        os.killpg(int(line), signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def _runs_in(pid: int, root: Path) -> bool:
    """True when process ``pid`` works inside ``root`` (it is ours, not a reused pid)."""
    try:
        return os.readlink(f"/proc/{pid}/cwd").startswith(str(root))
    except OSError:
        return False


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


# -- PostgreSQL ----------------------------------------------------------------

_PRIMARY_CONF = """
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 5
wal_keep_size = 128MB
hot_standby = on
hot_standby_feedback = on
max_connections = 120
shared_buffers = 32MB
fsync = off
full_page_writes = off
synchronous_commit = on
wal_sender_timeout = 5s
wal_receiver_status_interval = 1s
log_min_messages = warning
log_connections = off
"""

_HBA = """
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


class PgNode:
    """One PostgreSQL server (primary or streaming replica) controlled with pg_ctl."""

    def __init__(self, env: Components, name: str, port: int) -> None:
        self.env = env
        self.name = name
        self.port = port
        self.datadir = env.root / name
        self.socket_dir = env.path(f"{name}-sock")
        self.log = env.root / f"{name}.log"

    def url(self, database: str = "postgres") -> str:
        """``postgresql+asyncpg://postgres@127.0.0.1:<port>/<database>``"""
        return f"postgresql+asyncpg://postgres@{HOST}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq/asyncpg DSN for ``database``."""
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.socket_dir}"
        self.env.run(
            [
                PG_BIN / "pg_ctl",
                "-D",
                self.datadir,
                "-l",
                self.log,
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>`` (``immediate`` is a crash); no-op when not running."""
        if self.running:
            self.env.run(
                [PG_BIN / "pg_ctl", "-D", self.datadir, "-m", mode, "-w", "-t", "30", "stop"]
            )

    @property
    def running(self) -> bool:
        """True while the postmaster runs."""
        try:
            self.env.run([PG_BIN / "pg_ctl", "-D", self.datadir, "status"], timeout=10)
        except RuntimeError:
            return False
        return True


def start_primary(env: Components) -> PgNode:
    """initdb a fresh cluster configured for streaming replication and start it."""
    node = PgNode(env, "primary", free_port())
    env.run(
        [
            PG_BIN / "initdb",
            "-D",
            node.datadir,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        timeout=120,
    )
    with (node.datadir / "postgresql.conf").open("a") as conf:
        conf.write(_PRIMARY_CONF)
    (node.datadir / "pg_hba.conf").write_text(_HBA)
    env.on_close(lambda: node.stop("immediate"))
    node.start()
    return node


def start_replica(env: Components, primary: PgNode, name: str = "replica") -> PgNode:
    """``pg_basebackup -R`` from ``primary`` into a hot standby and start it."""
    node = PgNode(env, name, free_port())
    env.run(
        [
            PG_BIN / "pg_basebackup",
            "-h",
            HOST,
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            node.datadir,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ],
        timeout=120,
    )
    env.on_close(lambda: node.stop("immediate"))
    node.start()
    return node


# -- PgBouncer -----------------------------------------------------------------


def pgbouncer_binary() -> str:
    """Where pgbouncer is (scripts/scaleout/install.sh installs it)."""
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise RuntimeError("pgbouncer is not installed: run scripts/scaleout/install.sh")
    return found


class PgBouncer:
    """PgBouncer in transaction pooling mode in front of one PostgreSQL server."""

    def __init__(
        self, env: Components, target: PgNode, database: str, *, pool_size: int = 4
    ) -> None:
        self.env = env
        self.port = free_port()
        self.database = database
        workdir = env.path("pgbouncer")
        userlist = env.write(workdir / "userlist.txt", '"postgres" ""\n')
        # statement_timeout cannot be a startup parameter behind PgBouncer: the
        # server side sets it once per server connection (connect_query), as
        # docs/scaling.md recommends (ALTER ROLE ... SET works as well).
        server = f"host={HOST} port={target.port} dbname={database}"
        ini = f"""
[databases]
{database} = {server} connect_query='SET statement_timeout = 30000'

[pgbouncer]
listen_addr = {HOST}
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {userlist}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
max_db_connections = {pool_size}
server_check_delay = 10
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
admin_users = postgres
stats_users = postgres
"""
        self.ini = env.write(workdir / "pgbouncer.ini", ini)
        self.process = env.spawn([pgbouncer_binary(), self.ini], workdir / "stdout.log")
        wait_for_port(self.port, process=self.process)

    def url(self) -> str:
        """The asyncpg URL of the pooled database."""
        return f"postgresql+asyncpg://postgres@{HOST}:{self.port}/{self.database}"

    def show(self, what: str) -> list[dict[str, str]]:
        """``SHOW <what>`` on the admin console (psql: it speaks the simple protocol only)."""
        out = self.env.run(
            [
                PG_BIN / "psql",
                "-h",
                HOST,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-X",
                "--csv",
                "-c",
                f"SHOW {what}",
                "pgbouncer",
            ],
            timeout=10,
        )
        return list(csv.DictReader(io.StringIO(out)))


# -- Redis -----------------------------------------------------------------------


class RedisNode:
    """A redis-server without persistence (optionally a replica of another)."""

    def __init__(
        self,
        env: Components,
        name: str,
        *,
        replica_of: RedisNode | None = None,
        cluster: bool = False,
    ) -> None:
        self.env = env
        self.port = free_port(bus=cluster)
        workdir = env.path(name)
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ]
        if replica_of is not None:
            cmd += ["--replicaof", HOST, str(replica_of.port)]
        if cluster:
            cmd += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(workdir / "nodes.conf"),
            ]
        self.process = env.spawn(cmd, workdir / "redis.log")
        wait_for_port(self.port, process=self.process)

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:<port>/<db>``"""
        return f"redis://{HOST}:{self.port}/{db}"


class Sentinel:
    """One redis-sentinel watching ``master`` as ``service``."""

    def __init__(self, env: Components, master: RedisNode, service: str) -> None:
        self.env = env
        self.port = free_port()
        self.service = service
        workdir = env.path(f"sentinel-{self.port}")
        conf = env.write(
            workdir / "sentinel.conf",
            f"""port {self.port}
bind {HOST}
protected-mode no
dir {workdir}
sentinel resolve-hostnames no
sentinel monitor {service} {HOST} {master.port} 1
sentinel down-after-milliseconds {service} 1000
sentinel failover-timeout {service} 5000
sentinel parallel-syncs {service} 1
""",
        )
        self.process = env.spawn(
            ["redis-server", str(conf), "--sentinel"], workdir / "sentinel.log"
        )
        wait_for_port(self.port, process=self.process)

    def url(self, db: int = 0) -> str:
        """``redis+sentinel://127.0.0.1:<port>/<service>/<db>``"""
        return f"redis+sentinel://{HOST}:{self.port}/{self.service}/{db}"


def start_redis_cluster(env: Components, masters: int = 3) -> list[RedisNode]:
    """``masters`` cluster-enabled nodes joined with ``redis-cli --cluster create``."""
    nodes = [RedisNode(env, f"cluster-{i}", cluster=True) for i in range(masters)]
    addresses = [f"{HOST}:{n.port}" for n in nodes]
    env.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        timeout=60,
    )

    def ready() -> bool:
        for node in nodes:
            info = env.run(["redis-cli", "-p", str(node.port), "cluster", "info"], timeout=10)
            if "cluster_state:ok" not in info:
                return False
        return True

    wait_until(ready, 30, "the Redis cluster to be ok", interval=0.1)
    return nodes
