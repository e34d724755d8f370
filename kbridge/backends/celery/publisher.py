"""Publishes the kbridge.perform task through the user's own Celery app.

One task per message, or one per partition batch with batch_consuming. A whole
poll batch is handed over in one call: to a Redis broker through one pipeline
(redis_pipeline), elsewhere through Celery's apply_async on one held producer,
inside kombu's producer batch, with publisher confirms on AMQP brokers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import EnqueueError
from ...instrumentation.tracing import outgoing
from ...interchange import to_wire
from ...params import Params, carried
from ...routing.pack import task_time_limits, task_units
from ...routing.route import Route
from . import ordering, redis_pipeline
from .task import HARD_LIMIT_GRACE, TASK_NAME

if TYPE_CHECKING:
    from celery import Celery
    from kafka import TopicPartition
    from kombu.connection import Connection

    from .refetch import KafkaRefetch


class CeleryBackend:
    def __init__(self, celery_app: Celery, redelivery_after: float, refetch: KafkaRefetch | None = None) -> None:
        self.celery_app = celery_app
        self.redelivery_after = redelivery_after
        self.refetch = refetch  # rebuilds a task the Redis broker lost, from Kafka
        self._fast: dict[str, redis_pipeline.RedisPipelinePublisher | None] = {}
        self._connection: Connection | None = None
        self._registrar: ordering.Registrar | None = None

    def enqueue(self, route: Route, messages: Sequence[Params]) -> None:
        units = task_units(route, messages)
        argsets = [[route.route_id, [to_wire(p) for p in unit]] for unit in units]
        queue = route.queue or self.celery_app.conf.task_default_queue
        fast = self._fast_publisher(queue)
        # Trace context (tracing on): task message headers, never the arguments.
        headers = [outgoing(carried(unit[0])) for unit in units] if carried(messages[0]) is not None else None
        try:
            if fast is not None:
                also = self._ordering(fast).adder(route, messages) if route.ordering else None
                fast.publish(TASK_NAME, queue, route.shadow, argsets, *task_time_limits(route, HARD_LIMIT_GRACE),
                             headers, also)
                return
            confirmed = 0
            for i, args in enumerate(argsets):
                self._apply_async(route, args, headers[i] if headers else {})
                confirmed += len(args[1])
        except redis_pipeline.PublishError as exc:
            raise self._failed(route, messages, exc.confirmed, exc.__cause__ or exc) from exc
        except Exception as exc:
            raise self._failed(route, messages, 0 if fast is not None else confirmed, exc) from exc

    @staticmethod
    def _failed(route: Route, messages: Sequence[Params], confirmed: int, cause: BaseException) -> EnqueueError:
        return EnqueueError(
            f"could not enqueue {route.shadow} offset {messages[confirmed].offset} to the Celery broker: "
            f"{type(cause).__name__}: {cause}",
            confirmed=confirmed,
        )

    def _fast_publisher(self, queue: str) -> redis_pipeline.RedisPipelinePublisher | None:
        if queue not in self._fast:
            ok = redis_pipeline.supports(self.celery_app, queue)
            self._fast[queue] = (
                redis_pipeline.RedisPipelinePublisher(self.celery_app, self.redelivery_after, self.refetch)
                if ok else None
            )
        return self._fast[queue]

    def tick(self, route: Route, tp: TopicPartition) -> None:
        """tick_interval: a kbridge.tick task, run by a worker (kbridge.backends.celery.tick)."""
        from .tick import send_tick

        send_tick(self.celery_app, route, tp)

    def _ordering(self, fast: redis_pipeline.RedisPipelinePublisher) -> ordering.Registrar:
        if self._registrar is None:
            self._registrar = ordering.Registrar(fast.client)
        return self._registrar

    def close(self) -> None:
        if self.refetch is not None:
            self.refetch.close()
        connection: Any = self._connection
        self._connection = None
        if connection is not None:
            connection.close()

    def housekeeping(self) -> None:
        """Called now and then from the polling thread: re-queue tasks the broker lost."""
        for publisher in {id(p): p for p in self._fast.values() if p is not None}.values():
            publisher.reap()

    def _apply_async(self, route: Route, args: list[Any], headers: dict[str, str]) -> None:
        """The standard path: Celery builds and routes the message; confirmed when publish returns."""
        if self._connection is None:
            conn = self.celery_app.connection_for_write()
            if conn.transport.driver_type == "amqp":
                conn.transport_options["confirm_publish"] = True  # publish returns only once the broker has it
            self._connection = conn
        limits = task_time_limits(route, HARD_LIMIT_GRACE)
        try:
            self.celery_app.tasks[TASK_NAME].apply_async(
                args=args,
                queue=route.queue,
                shadow=route.shadow,
                serializer="json",
                time_limit=limits[0],
                soft_time_limit=limits[1],
                # retry=False: an outage must surface here, so the listener pauses the partition
                # instead of kombu retrying behind its back.
                retry=False,
                connection=self._connection,
                headers=headers or None,
            )
        except Exception:
            self._connection.close()
            self._connection = None
            raise
