"""pytest plugin: a real PostgreSQL server on a free 127.0.0.1 port, and a fresh database per test.

    def test_x(postgres_url):            # postgresql://halofarm@127.0.0.1:PORT/t_N, empty
        with Store(postgres_url) as store: ...

One server per test session (initdb + postgres in a temporary directory, trust auth, TCP on
loopback only, no Unix socket), one new database per test. ``PostgresServer`` is also used by
benchmarks/scale.py. initdb and postgres refuse to run as root; as root the server runs as the
unprivileged user ``nobody`` (or $HALOFARM_PG_USER), owning its own data directory.

The binaries are looked up on PATH, then in Debian's /usr/lib/postgresql/<version>/bin (not on
PATH). Missing binaries or psycopg skip the test with the reason, except under CI (``CI=true``),
where .ci/run installs them and a skip would hide every PostgreSQL test: there the test fails.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.mqtt_broker import HOST, free_port

SUPERUSER = "halofarm"
USER_ENV = "HALOFARM_PG_USER"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
INSTALL_HINT = "install it: `sudo apt-get install postgresql` (Debian/Ubuntu)"


def postgres_bindir() -> Path | None:
    """The directory holding initdb and postgres: PATH first, then Debian's versioned dirs."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(versions[-1]).parent if versions else None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(USER_ENV, "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"running as root and there is no user {name!r} to run PostgreSQL as "
            f"(initdb refuses root); set {USER_ENV} to an unprivileged user"
        ) from None


class PostgresServer:
    """initdb into a temporary directory, then postgres on a free loopback port until stop()."""

    def __init__(
        self,
        bindir: Path,
        *,
        fsync: bool = True,
        max_connections: int = 50,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.host = HOST
        self._user = _run_as()
        # As root, in /tmp: the server's user must be able to reach its directory, and
        # $TMPDIR may be under a home it cannot enter.
        parent = "/tmp" if self._user is not None and os.path.isdir("/tmp") else None
        self.dir = Path(tempfile.mkdtemp(prefix="halofarm-pg-", dir=parent))
        data = self.dir / "data"
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        log = self.dir / "initdb.log"
        with open(log, "wb") as out:
            rc = subprocess.call(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],  # fmt: skip
                stdout=out,
                stderr=subprocess.STDOUT,
                **self._as_user(),
            )
        if rc != 0:
            text = log.read_text(errors="replace")[-2000:]
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"initdb failed ({rc}): {text}")
        options = {
            "listen_addresses": HOST,
            "unix_socket_directories": "",
            "max_connections": str(max_connections),
            "fsync": "on" if fsync else "off",
            "synchronous_commit": "on" if fsync else "off",
            "full_page_writes": "on" if fsync else "off",
            **(settings or {}),
        }
        args = [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port)]
        for key, value in options.items():
            args += ["-c", f"{key}={value}"]
        self._log = open(self.dir / "postgres.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            **self._as_user(),
        )  # fmt: skip
        self._wait_ready()
        self._names = itertools.count()

    def _as_user(self) -> dict:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"postgres exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"postgres did not start: {self.log_tail()}") from None
                time.sleep(0.05)

    def log_tail(self) -> str:
        return (self.dir / "postgres.log").read_text(errors="replace")[-2000:]

    def new_database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL if it hangs; the data directory is removed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must provide it: .ci/run installs postgresql)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'halofarm[postgres]'")
    bindir = postgres_bindir()
    if bindir is None:
        _unavailable(f"PostgreSQL's initdb/postgres not found; {INSTALL_HINT}")
    server = PostgresServer(bindir, fsync=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()
