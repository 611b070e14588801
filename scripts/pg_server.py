"""A real PostgreSQL server for tests: Debian's ``postgresql`` package, in a temporary folder, on a free
loopback port, with password (SCRAM) authentication.

The server refuses to run as root, so as root it runs as the ``postgres`` user (``runuser``) in a
folder that user owns. ``postgres`` is started directly (not daemonised by ``pg_ctl``) in its own
process group; ``stop`` sends that group SIGINT (fast shutdown) and SIGKILLs whatever is left after
a bound. PostgreSQL makes every child its own process group (``setsid``), so ``freeze``/``thaw``
(SIGSTOP/SIGCONT) signal the postmaster and each child found in /proc. ``stop`` then ``start`` on the
same folder and port is how tests make an outage.

``find_pg_bin`` says why not when the binaries are missing; the fixture in tests/conftest.py skips with
that reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

__all__ = ["PG_SKIP", "PgServer", "dump_text", "find_pg_bin"]

PG_SKIP = (
    "PostgreSQL server binaries not found (need /usr/lib/postgresql/<version>/bin/initdb and postgres, "
    "or ADAFACE_PG_BIN): apt-get install postgresql (.ci/run installs it)"
)
APP_USER = "app"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def find_pg_bin() -> tuple[Path | None, str]:
    """The folder with ``initdb`` and ``postgres`` (newest version first), or None and why."""
    override = os.environ.get("ADAFACE_PG_BIN")
    candidates = (
        [Path(override)]
        if override
        else sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    )
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            if os.geteuid() == 0:
                try:
                    pwd.getpwnam("postgres")
                except KeyError:
                    return None, "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as"
            return folder, ""
    return None, PG_SKIP


def _version(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in name.split("."))
    except ValueError:
        return (0,)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One initdb'd cluster; ``start``/``stop`` may be called repeatedly (see the module notes)."""

    def __init__(self, bin_dir: Path, durable: bool = False) -> None:
        """``durable=False`` (tests): fsync and full-page writes off, so creating databases and the
        shutdown checkpoint are quick on a busy disk; stops are clean, so nothing is lost."""
        self.bin_dir = bin_dir
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="adaface-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.superuser_password = secrets.token_urlsafe(18)
        self.password = secrets.token_urlsafe(18)  # the app user's
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0
        self._counter = 0
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        if self._as_postgres:
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run_tool(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        pwfile.unlink()

    # ---------------------------------------------------------------- process

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_postgres else command

    def _run_tool(self, tool: str, *args: str) -> None:
        done = subprocess.run(self._command(tool, *args), capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections (up to 30 s)."""
        if self.running:
            return
        log = self.log.open("ab")
        try:
            self._proc = subprocess.Popen(
                self._command(
                    "postgres",
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=40",
                    "-c",
                    "shared_buffers=32MB",
                    *([] if self.durable else ["-c", "fsync=off", "-c", "full_page_writes=off"]),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self._proc.returncode}): {self.log_tail()}")
            if self._accepts():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT_S} s: {self.log_tail()}")
            time.sleep(0.1)

    def _accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres", user="postgres"), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Fast shutdown: SIGINT to the server's process group (runuser and the postmaster); the
        backends follow the postmaster. Anything left after 15 s gets SIGKILL."""
        if self._proc is None:
            return
        pids = self.server_pids()
        self.thaw()  # a frozen server must run to shut down
        proc, self._proc = self._proc, None
        self._signal(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._signal(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend (each child of the postmaster is its own process
        group, so the group is not enough): connections stay open, nothing answers."""
        for pid in self.server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the server's processes and its process group (``runuser`` stops itself when its child
        is stopped, and must go on to reap it later)."""
        if self._proc is not None:
            self._signal(self._proc.pid, signal.SIGCONT)
        for pid in self.server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def server_pids(self) -> list[int]:
        """The postmaster, then its children (read from /proc)."""
        if self._proc is None:
            return []
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [postmaster, *_children(postmaster)]

    @staticmethod
    def _signal(group: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)

    def close(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # ---------------------------------------------------------------- databases

    def url(self, database: str, user: str = APP_USER) -> str:
        password = self.superuser_password if user == "postgres" else self.password
        return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database owned by the app user (created on first use); returns its URL."""
        import psycopg

        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        with psycopg.connect(self.url("postgres", user="postgres"), autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_USER,)).fetchone()
            if not exists:
                conn.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{self.password}'")
            conn.execute(f"CREATE DATABASE {name} OWNER {APP_USER}")  # its own statement: not in a transaction
        return self.url(name)


def dump_text(database_url: str) -> str:
    """Every value of every table of a database as text (to look for a secret in it)."""
    import psycopg

    out = []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )
        ]
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                out.append(" ".join(bytes(v).decode("latin-1") if isinstance(v, bytes) else str(v) for v in row))
    return "\n".join(out)


def _children(parent: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
