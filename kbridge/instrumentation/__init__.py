"""Instrumentation: a fixed list of named events, and listeners that turn them into logs and metrics.

- monitor: EVENTS and Monitor (app.monitor).
- logging.LoggingListener, proctitle.ProctitleListener: no dependencies.
- prometheus.PrometheusListener and the metrics servers: need prometheus_client, imported only there.
- health: the listener's /live and /ready endpoints. lag: see kbridge.lag.
See docs/instrumentation.md.
"""

from .logging import LoggingListener
from .monitor import EVENTS, Monitor
from .proctitle import ProctitleListener

__all__ = ["EVENTS", "LoggingListener", "Monitor", "ProctitleListener"]
