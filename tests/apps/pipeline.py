"""The app the integration tests run, as a user would write it.

Configured from the environment so the listener and worker subprocesses of one
test module share a broker, a Redis and a unique run id (topic and queue names).
Every perform() records "<partition>:<offset>" -> run count in a Redis hash, so
tests can count performed, lost and duplicated messages.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import redis
from celery import Celery

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.testing.kafka import FAST_GROUP

RUN = os.environ.get("PIPELINE_RUN", "local")
KAFKA = os.environ.get("PIPELINE_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("PIPELINE_REDIS", "redis://127.0.0.1:6379/0")  # where performs are recorded
BROKER_URL = os.environ.get("PIPELINE_BROKER") or REDIS_URL  # the Celery broker; the outage test stops it
QUEUE = f"kbridge-{RUN}"

# The worker settings every test app shares (see the README's "Operating Celery workers").
CELERY_CONF = dict(
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    # Unacked tasks of a worker that lost its broker connection come back after
    # visibility_timeout; kombu looks for them every interval x throttle seconds, under a
    # mutex that a worker dying mid-sweep holds until it expires.
    broker_transport_options={
        "visibility_timeout": 20, "unacked_restore_interval": 2, "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 15,
    },
    # Celery's own advice for acks_late tasks: requeue running tasks when the broker connection drops.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    worker_hijack_root_logger=False,
)

celery_app = Celery("pipeline", broker=BROKER_URL)
celery_app.conf.update(CELERY_CONF, task_default_queue=QUEUE)

app = KBridge(
    client_id=f"pipe-{RUN}",
    kafka={"bootstrap_servers": KAFKA, **FAST_GROUP},
    celery=celery_app,
    shutdown_timeout=float(os.environ.get("PIPELINE_SHUTDOWN_TIMEOUT", "30")),
    redelivery_after=5.0,
    dead_letter_timeout=float(os.environ.get("PIPELINE_DEAD_LETTER_TIMEOUT", "30")),
)

_redis: redis.Redis | None = None


def store() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(REDIS_URL)
    return _redis


def seen_key(topic: str) -> str:
    return f"{RUN}:seen:{topic}"


def record(consumer: BaseConsumer, extra: dict[str, Any] | None = None) -> None:
    pipe = store().pipeline()
    for p in consumer.params_batch:
        pipe.hincrby(seen_key(p.topic), f"{p.partition}:{p.offset}", 1)
        if extra is not None:
            pipe.hset(f"{RUN}:extra:{p.topic}", f"{p.partition}:{p.offset}", extra[f"{p.partition}:{p.offset}"])
    pipe.execute()


class RecordingConsumer(BaseConsumer):
    @before_enqueue
    def not_skipped(self) -> bool:
        return not self.params.payload.get("skip")

    def perform(self) -> None:
        record(self)


class CountingFilterConsumer(BaseConsumer):
    """Its filter counts its calls per message, in the recording Redis (which stays up when the broker stops)."""

    @before_enqueue
    def not_skipped(self) -> bool:
        p = self.params
        store().hincrby(f"{RUN}:filter-calls:{p.topic}", f"{p.partition}:{p.offset}", 1)
        return not p.payload.get("skip")

    def perform(self) -> None:
        record(self)


def raw_bytes(raw: bytes) -> bytes:
    return raw


class BinaryConsumer(BaseConsumer):
    """Stores the hex of what perform() received, to compare byte for byte."""

    def perform(self) -> None:
        record(self, {f"{p.partition}:{p.offset}": p.payload.hex() for p in self.params_batch})


class PlainConsumer(BaseConsumer):
    """No filter: the payload is first parsed in the worker."""

    def perform(self) -> None:
        _ = self.params.payload
        record(self)


def _calls(consumer: BaseConsumer, what: str) -> int:
    p = consumer.params
    return int(store().hincrby(f"{RUN}:{what}:{p.topic}", f"{p.partition}:{p.offset}", 1))


def _note_failure(consumer: BaseConsumer, exc: BaseException) -> None:
    p = consumer.params
    store().rpush(f"{RUN}:after_failure:{p.topic}:{p.partition}:{p.offset}", type(exc).__name__)


class FailingConsumer(BaseConsumer):
    def perform(self) -> None:
        _calls(self, "attempts")
        raise RuntimeError(f"always failing at offset {self.params.offset}")

    def after_failure(self, exc: BaseException) -> None:
        _note_failure(self, exc)


class HangingOnceConsumer(BaseConsumer):
    """The first attempt hangs past the timeout; the retry completes."""

    def perform(self) -> None:
        if _calls(self, "attempts") == 1:
            time.sleep(60)
        record(self)

    def after_failure(self, exc: BaseException) -> None:
        _note_failure(self, exc)


class SlowConsumer(BaseConsumer):
    """Publishes its pid, then works for a while: the window in which a test kills it."""

    def perform(self) -> None:
        p = self.params
        store().rpush(f"{RUN}:started:{p.topic}:{p.partition}:{p.offset}", os.getpid())
        time.sleep(4)
        record(self)


class FailsUntilKafkaIsDownConsumer(BaseConsumer):
    """Fails every attempt; the last one first waits until the test has stopped Kafka, so its dead letter
    meets the outage."""

    def perform(self) -> None:
        p = self.params
        if _calls(self, "attempts") == self.topic.max_retries + 1:
            store().rpush(f"{RUN}:last-attempt:{p.topic}", p.offset)
            deadline = time.monotonic() + 60
            while not store().exists(f"{RUN}:kafka-down") and time.monotonic() < deadline:
                time.sleep(0.1)
        raise RuntimeError(f"failing at offset {p.offset}")


class HeadersConsumer(BaseConsumer):
    """Records every header it got, in order, then fails, so the dead letter shows them too."""

    def perform(self) -> None:
        p = self.params
        store().rpush(f"{RUN}:headers:{p.topic}:{p.offset}", *[f"{k}={(v or b'').decode()}" for k, v in p.header_list])
        raise RuntimeError("dead-letter me")


class PackedConsumer(BaseConsumer):
    """Packed: records the task each message ran in; {"hold": true} waits on its first run (the test kills it),
    {"fail": true} always fails."""

    def perform(self) -> None:
        from celery import current_task

        p = self.params
        attempt = _calls(self, "attempts")
        store().rpush(f"{RUN}:tasks:{p.topic}", current_task.request.id)
        if p.payload.get("hold") and attempt == 1:
            store().rpush(f"{RUN}:started:{p.topic}:{p.partition}:{p.offset}", os.getpid())
            time.sleep(30)
        if p.payload.get("fail"):
            raise RuntimeError(f"failing inside a pack at offset {p.offset}")
        record(self)

    def after_failure(self, exc: BaseException) -> None:
        _note_failure(self, exc)


app.topic(f"{RUN}.events", consumer=RecordingConsumer)
app.topic(f"{RUN}.inline", consumer=RecordingConsumer, backend="inline")
app.topic(f"{RUN}.binary", consumer=BinaryConsumer, deserializer=raw_bytes)
app.topic(f"{RUN}.stop", consumer=RecordingConsumer)
app.topic(f"{RUN}.stream", consumer=RecordingConsumer)
app.topic(f"{RUN}.poison", consumer=RecordingConsumer)
app.topic(f"{RUN}.poison-worker", consumer=PlainConsumer)
app.topic(f"{RUN}.failing", consumer=FailingConsumer, max_retries=2, retry_backoff=0.2, retry_backoff_max=0.5)
app.topic(f"{RUN}.hanging", consumer=HangingOnceConsumer, timeout=1, retry_backoff=0.2)
app.topic(f"{RUN}.slow", consumer=SlowConsumer)
app.topic(f"{RUN}.sleepy", consumer=SlowConsumer, backend="inline")
app.topic(f"{RUN}.outage", consumer=RecordingConsumer)
app.topic(f"{RUN}.pair", consumer=RecordingConsumer)
app.topic(f"{RUN}.retries5", consumer=FailingConsumer, max_retries=5, retry_backoff=0.05, retry_backoff_max=0.1)
app.topic(f"{RUN}.dlq-outage", consumer=FailsUntilKafkaIsDownConsumer, max_retries=1, retry_backoff=0.1)
app.topic(f"{RUN}.huge", consumer=FailingConsumer, max_retries=0)
app.topic(f"{RUN}.headers", consumer=HeadersConsumer, max_retries=0)
app.topic(f"{RUN}.filter-once", consumer=CountingFilterConsumer)
# On a queue of its own, so a test can watch it with a worker that sends task events (-E).
app.topic(f"{RUN}.observed", consumer=FailingConsumer, max_retries=2, retry_backoff=0.2, retry_backoff_max=0.5,
          queue=f"{QUEUE}-observed")

# Ordering and duplicates (tests/integration/test_ordering.py): their own queue, served by a 4-process worker.
ORDERED_QUEUE = f"kbridge-{RUN}-ordered"


class SequenceConsumer(BaseConsumer):
    """Works 0-20 ms, then appends the message's sequence number to its key's list. A message carrying "fail": n
    fails its first n attempts; one carrying "slow" publishes its pid and works 3 s on its first run."""

    def perform(self) -> None:
        p, body = self.params, self.params.payload
        store().sadd(f"{RUN}:pids:{p.topic}", os.getpid())
        if body.get("fail") and _calls(self, "attempts") <= body["fail"]:
            raise RuntimeError(f"failing on purpose at offset {p.offset}")
        if body.get("slow") and store().rpush(f"{RUN}:started:{p.topic}", os.getpid()) == 1:
            time.sleep(3)  # the first run of this message: a test kills its process now
        time.sleep(random.uniform(0, 0.02))
        store().rpush(f"{RUN}:order:{p.topic}:{body['k']}", body["s"])
        record(self)


class CompletingConsumer(RecordingConsumer):
    """record() is the completion; a message carrying "slow" publishes its pid and works 3 s, for a test to kill
    it."""

    def perform(self) -> None:
        p = self.params
        if p.payload.get("slow"):
            store().rpush(f"{RUN}:started:{p.topic}", os.getpid())
            time.sleep(3)
        record(self)


for _name, _mode in (("key", "key"), ("key-faults", "key"), ("partition-faults", "partition")):
    app.topic(f"{RUN}.ordered-{_name}", consumer=SequenceConsumer, ordering=_mode, queue=ORDERED_QUEUE,
              retry_backoff=0.2, retry_backoff_max=0.5)
app.topic(f"{RUN}.unordered", consumer=SequenceConsumer, queue=ORDERED_QUEUE)
app.topic(f"{RUN}.once", consumer=CompletingConsumer, skip_duplicates=True, queue=ORDERED_QUEUE)


def _count_skips(event: str, payload: dict[str, Any]) -> None:
    store().hincrby(f"{RUN}:duplicate_skipped:{payload['topic']}", "messages", payload["messages"])


app.monitor.subscribe("duplicate_skipped", _count_skips)
app.topic(f"{RUN}.packed", consumer=PackedConsumer, pack=10, max_retries=2, retry_backoff=0.2,
          retry_backoff_max=0.5)
