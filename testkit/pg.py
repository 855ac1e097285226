"""A private PostgreSQL cluster for the tests and the bench: `initdb` and `pg_ctl` in a
temporary folder, on a free loopback port, never the machine's default cluster.

PostgreSQL refuses to run as root, and CI runs as root: there the cluster runs as the
unprivileged user `clinsum-test` (created with `useradd` if missing) through `runuser`. The
binaries are Debian's, found under /usr/lib/postgresql/*/bin (`make setup` installs them).
Every command has a time-out; `stop()` stops the server and removes the folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from testkit.processes import free_port

USER = "clinsum-test"
SUPERUSER = "postgres"
OWNER = "clinsum"  # owns the test databases
CMD_TIMEOUT_S = 60


def bin_dir() -> Path:
    """The newest /usr/lib/postgresql/N/bin holding initdb and pg_ctl."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make setup`"
        )
    return found[-1]


class PgCluster:
    """One running cluster: `url(db, user)`, `sql(...)`, `stop_server()`/`start_server()`."""

    def __init__(self, *, fsync: bool = True) -> None:
        self.bin = bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="clinsum-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.passwords = {SUPERUSER: secrets.token_hex(12), OWNER: secrets.token_hex(12)}
        self._as: list[str] = []
        if os.geteuid() == 0:
            _ensure_user()
            shutil.chown(self.root, USER, USER)
            self._as = ["runuser", "-u", USER, "--"]
        pwfile = self.root / "pw"
        pwfile.write_text(self.passwords[SUPERUSER] + "\n")
        if self._as:
            shutil.chown(pwfile, USER, USER)
        self._run(
            "initdb",
            *("-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(pwfile)),
            *("--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"),
        )
        pwfile.unlink()
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=100",
        ]
        if not fsync:
            options += ["-c fsync=off", "-c synchronous_commit=off"]
        self._options = " ".join(options)
        self.start_server()
        self.sql(f"CREATE ROLE {OWNER} LOGIN PASSWORD '{self.passwords[OWNER]}'")

    def _run(self, tool: str, *args: str) -> str:
        cmd = [*self._as, str(self.bin / tool), *args]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, cwd=self.root
        )
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}\n{log}")
        return done.stdout

    def start_server(self) -> None:
        self._run(
            "pg_ctl",
            *("-D", str(self.data), "-l", str(self.log), "-o", self._options),
            *("-w", "-t", "60", "start"),
        )

    def stop_server(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, db: str = "postgres", user: str = OWNER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres") -> str:
        """Run one statement as the superuser over the cluster's own Unix socket."""
        return self._run(
            "psql",
            *("-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER, "-d", db),
            *("-v", "ON_ERROR_STOP=1", "-Atqc", statement),
        )

    def new_database(self, owner: str = OWNER) -> str:
        """A fresh, empty database owned by `owner`; its name."""
        name = "t_" + secrets.token_hex(6)
        self.sql(f"CREATE DATABASE {name} OWNER {owner}")
        return name

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if self.running():
                self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)


def _ensure_user() -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
            capture_output=True,
            timeout=CMD_TIMEOUT_S,
        )


__all__ = ["OWNER", "SUPERUSER", "PgCluster", "bin_dir"]
