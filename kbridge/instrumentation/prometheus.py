"""Prometheus metrics built from kbridge's events, served over HTTP by the listener and by workers.

Needs prometheus_client (`pip install kbridge[prometheus]`); nothing else in kbridge imports it.

Every counter counts messages (a batch_consuming run counts its size), labelled by
group_id and topic, so one query can follow a topic from fetch to perform:

    kbridge_fetched_total - kbridge_filtered_total  ~  kbridge_enqueued_total  ~  kbridge_performed_total

Why workers use prometheus_client's multiprocess mode: Celery's prefork pool performs in
child processes, each with its own memory, and a scrape reaches one process. In
multiprocess mode every process writes its values to files in PROMETHEUS_MULTIPROC_DIR,
and the worker's main process serves their sum on one port. So a worker is one scrape
target whatever its concurrency, and the counts of a child that was replaced
(max_tasks_per_child, a crash) are kept. The listener is one process and serves its
own registry.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import KBridgeError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .monitor import Monitor

log = logging.getLogger("kbridge.instrumentation")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# This host only, unless told otherwise: the metrics_host setting, or --metrics-host. In a container
# or a pod, a scraper reaches the process on the pod's own address, so set it to "0.0.0.0" there.
DEFAULT_ADDR = "127.0.0.1"
ENQUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PERFORM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
LABELS = ("group_id", "topic")

# name, help: the counters, each kbridge_<name>_total, and the events that feed them (see _COUNTED).
COUNTERS: dict[str, str] = {
    "fetched": "Messages fetched from Kafka by the listener.",
    "filtered": "Messages a before_enqueue filter rejected: committed, never enqueued.",
    "enqueued": "Messages handed to the backend, with the broker's confirmation.",
    "performed": "Messages whose perform() succeeded (a batch counts its size).",
    "failed": "Messages whose perform() attempt raised, timeouts included; every attempt counts.",
    "retried": "Messages whose task was scheduled again after a failed attempt.",
    "dead_lettered": "Messages dead-lettered, with Kafka's acknowledgement.",
    "expired": "Messages older than the topic's expire_after when fetched: committed, never handed over.",
    "breaker_tripped": "Times the dead-letter breaker held a route (label topic: the partition it tripped on).",
}


def _require() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise KBridgeError(
            "Prometheus metrics need prometheus_client: pip install 'kbridge[prometheus]'"
        ) from None


class PrometheusListener:
    """Turns events into Prometheus metrics in its own registry; attach(monitor) to start counting.

    Its own registry (not prometheus_client's global one) so that several apps, or
    tests, never collide on metric names, and so that you choose what is served.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        _require()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        self.counters = {
            name: Counter(f"kbridge_{name}", doc, LABELS, registry=self.registry) for name, doc in COUNTERS.items()
        }
        self.enqueue_seconds = Histogram(
            "kbridge_enqueue_seconds", "Time the backend took to confirm one partition's batch (enqueue latency).",
            LABELS, buckets=ENQUEUE_BUCKETS, registry=self.registry,
        )
        self.perform_seconds = Histogram(
            "kbridge_perform_seconds", "Duration of perform() runs, failed ones included.",
            LABELS, buckets=PERFORM_BUCKETS, registry=self.registry,
        )
        self.lag = Gauge(
            "kbridge_consumer_lag",
            "Records between the last fetched message and the partition's high watermark, as of that fetch.",
            ("group_id", "topic", "partition"), registry=self.registry, multiprocess_mode="livemax",
        )
        self._handlers = {
            "fetch": self._on_fetch,
            "filter.rejected": self._on_filtered,
            "enqueue": self._on_enqueue,
            "perform.finished": self._on_performed,
            "perform.failed": self._on_failed,
            "retry": self._on_retry,
            "dead_letter": self._on_dead_letter,
            "rebalance.revoked": self._on_revoked,
            "expired": self._on_expired,
            "breaker.tripped": self._on_breaker_tripped,
        }

    def attach(self, monitor: Monitor) -> PrometheusListener:
        for event in self._handlers:
            monitor.subscribe(event, self)
        return self

    def detach(self, monitor: Monitor) -> None:
        for event in self._handlers:
            monitor.unsubscribe(event, self)

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        self._handlers[event](payload)

    def _count(self, name: str, payload: dict[str, Any], amount: int = 1) -> None:
        self.counters[name].labels(payload["group_id"], payload["topic"]).inc(amount)

    def _on_fetch(self, p: dict[str, Any]) -> None:
        self._count("fetched", p, p["messages"])
        if p["lag"] is not None:
            self.lag.labels(p["group_id"], p["topic"], str(p["partition"])).set(p["lag"])

    def _on_filtered(self, p: dict[str, Any]) -> None:
        self._count("filtered", p)

    def _on_enqueue(self, p: dict[str, Any]) -> None:
        self._count("enqueued", p, p["messages"])
        self.enqueue_seconds.labels(p["group_id"], p["topic"]).observe(p["seconds"])

    def _on_performed(self, p: dict[str, Any]) -> None:
        self._count("performed", p, p["messages"])
        self.perform_seconds.labels(p["group_id"], p["topic"]).observe(p["seconds"])

    def _on_failed(self, p: dict[str, Any]) -> None:
        self._count("failed", p, p["messages"])
        self.perform_seconds.labels(p["group_id"], p["topic"]).observe(p["seconds"])

    def _on_retry(self, p: dict[str, Any]) -> None:
        self._count("retried", p, p["messages"])

    def _on_dead_letter(self, p: dict[str, Any]) -> None:
        self._count("dead_lettered", p)

    def _on_expired(self, p: dict[str, Any]) -> None:
        self._count("expired", p, p["messages"])

    def _on_breaker_tripped(self, p: dict[str, Any]) -> None:
        self._count("breaker_tripped", p)

    def _on_revoked(self, p: dict[str, Any]) -> None:
        """A partition now read by another listener must not keep reporting this one's stale lag."""
        for topic, partition in p["partitions"]:
            try:
                self.lag.remove(p["group_id"], topic, str(partition))
            except KeyError:
                pass


@dataclass
class MetricsServer:
    """An HTTP server answering /metrics (any path, in fact) from a daemon thread."""

    port: int
    _httpd: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


IDLE_TIMEOUT = 5.0  # seconds a connection may stay silent before it is closed (as the health server)


def serve(registry: CollectorRegistry, port: int, addr: str = DEFAULT_ADDR,
          idle_timeout: float = IDLE_TIMEOUT) -> MetricsServer:
    """Serve registry on addr:port; port 0 picks a free one (see .port).

    prometheus_client's own server keeps a thread per open connection for as long as the
    peer likes; this one closes a connection that sends nothing within idle_timeout.
    """
    _require()
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Handler(WSGIRequestHandler):
        timeout = idle_timeout

        def log_message(self, format: str, *args: Any) -> None:
            return None  # scrapes are not worth a log line each

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    try:
        httpd = make_server(addr, port, make_wsgi_app(registry), Server, handler_class=Handler)
    except OSError as exc:
        raise KBridgeError(f"cannot serve metrics on {addr}:{port}: {exc}") from None
    thread = threading.Thread(target=httpd.serve_forever, name="kbridge-metrics", daemon=True)
    thread.start()
    return MetricsServer(int(httpd.server_address[1]), httpd, thread)


def serve_listener_metrics(monitor: Monitor, port: int, addr: str = DEFAULT_ADDR) -> MetricsServer:
    """The listener's metrics: one process, its own registry."""
    listener = PrometheusListener().attach(monitor)
    server = serve(listener.registry, port, addr)
    log.info("serving Prometheus metrics on http://%s:%d/metrics", addr, server.port)
    return server


# -- workers -----------------------------------------------------------------------------------------

_worker_servers: dict[int, MetricsServer] = {}  # id(monitor) -> its server, so a worker serves once


def prepare_multiprocess() -> str | None:
    """Give this worker's processes a fresh PROMETHEUS_MULTIPROC_DIR; the directory, or None if it is too late.

    prometheus_client chooses multiprocess mode when it is first imported, so this must
    run before anything imports it. A directory you set yourself is used as it is (clear
    it between runs, as prometheus_client's documentation says).
    """
    if os.environ.get(MULTIPROC_ENV):
        return os.environ[MULTIPROC_ENV]
    if "prometheus_client" in sys.modules:
        return None
    path = tempfile.mkdtemp(prefix="kbridge-metrics-")
    os.environ[MULTIPROC_ENV] = path
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not in a forked pool child that happens to run atexit hooks
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


def multiprocess_active() -> bool:
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


def serve_worker_metrics(monitor: Monitor, port: int, addr: str = DEFAULT_ADDR) -> MetricsServer:
    """Serve a Celery worker's metrics from its main process; call it before the pool starts.

    Pool children are forked after this: they inherit the subscribed listener, and
    prometheus_client notices the new pid and writes to files of its own.
    """
    if id(monitor) in _worker_servers:
        return _worker_servers[id(monitor)]
    prepare_multiprocess()  # first: importing prometheus_client fixes its mode
    _require()
    from prometheus_client import CollectorRegistry, multiprocess

    listener = PrometheusListener().attach(monitor)
    if multiprocess_active():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        log.warning(
            "prometheus_client was imported before kbridge could set %s: serving this process's metrics only, "
            "so with the prefork pool the pool children's counts are missing; set %s to an empty directory "
            "before starting the worker, or use --pool solo/threads", MULTIPROC_ENV, MULTIPROC_ENV,
        )
        registry = listener.registry
    server = serve(registry, port, addr)
    _worker_servers[id(monitor)] = server
    log.info("serving Prometheus metrics of this worker and its pool on http://%s:%d/metrics", addr, server.port)
    return server
