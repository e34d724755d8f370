"""`kbridge listen --reload`: saving the consumer's file changes what perform() does, and nothing is lost.

A project in an empty directory routes one topic to an inline consumer that records, in
Redis, which version of its code performed each message. Messages keep coming while the
file is edited; the listener is restarted gracefully, and every message is performed.
"""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from kbridge.testing.kafka import create_topics, produce, wait_until
from kbridge.testing.processes import Process
from kbridge.testing.services import KafkaService, RedisService

pytestmark = pytest.mark.integration

APP = """\
    import os
    from kbridge import KBridge
    from .consumer import RecordingConsumer

    app = KBridge(client_id="reload-{run}", kafka={{"bootstrap_servers": os.environ["RELOAD_KAFKA"]}})
    app.topic("{topic}", consumer=RecordingConsumer, backend="inline")
"""
CONSUMER = """\
    import os
    import redis
    from kbridge import BaseConsumer

    VERSION = "{version}"
    STORE = redis.Redis.from_url(os.environ["RELOAD_REDIS"])


    class RecordingConsumer(BaseConsumer):
        def perform(self) -> None:
            STORE.hset("{run}:performed", f"{{self.params.partition}}:{{self.params.offset}}", VERSION)
"""


def write(path: Path, template: str, **values: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(textwrap.dedent(template).format(**values))
    tmp.replace(path)  # one complete file, as an editor's save writes it


def test_listen_reload_runs_the_edited_consumer_within_5s_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kbridge_kafka: KafkaService, kbridge_redis: RedisService
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"reload-{run}"
    package = tmp_path / f"reload_{run}"
    package.mkdir()
    write(package / "__init__.py", APP, run=run, topic=topic)
    write(package / "consumer.py", CONSUMER, run=run, version="v1")
    create_topics(kbridge_kafka.bootstrap, [topic, f"{topic}.dlq"], 1)
    store = redis.Redis.from_url(kbridge_redis.url)
    monkeypatch.chdir(tmp_path)  # the project directory is what --reload watches
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KBRIDGE_APP")}
    env.update(RELOAD_KAFKA=kbridge_kafka.bootstrap, RELOAD_REDIS=kbridge_redis.url)
    argv = [sys.executable, "-m", "kbridge", "listen", "--reload", "--app", f"{package.name}:app"]
    listener = Process("reload-listener", argv, env).start()

    produced: list[int] = []
    stop = threading.Event()

    def keep_producing() -> None:
        n = 0
        while not stop.is_set():
            produced.extend(produce(kbridge_kafka.bootstrap, topic, [f'{{"n": {n}}}'.encode()])[0])
            n += 1
            stop.wait(0.05)

    def performed() -> dict[int, str]:
        return {int(k.decode().split(":")[1]): v.decode() for k, v in store.hgetall(f"{run}:performed").items()}

    producer = threading.Thread(target=keep_producing, daemon=True)
    try:
        wait_until(lambda: "partitions assigned: " + topic in listener.log(), 60, what="the first assignment",
                   alive=[listener])
        producer.start()
        wait_until(lambda: len(performed()) >= 20, 60, what="v1 performs", alive=[listener])

        write(package / "consumer.py", CONSUMER, run=run, version="v2")
        edited = time.monotonic()
        wait_until(lambda: "v2" in performed().values(), 60, what="a perform by the edited code", alive=[listener])
        took = time.monotonic() - edited
        time.sleep(1.0)  # a few more messages by the new code
        stop.set()
        producer.join(30)
        wait_until(lambda: set(produced) <= performed().keys(), 60, what="every produced message performed",
                   alive=[listener])
        done = performed()
        lost = sorted(set(produced) - done.keys())
        versions = [done[o] for o in sorted(produced)]
        print(f"\n[reload] produced={len(produced)} performed={len(done)} lost={len(lost)} "
              f"edit-to-new-code={took:.2f}s v1={versions.count('v1')} v2={versions.count('v2')}")
        assert not lost
        # Offsets are performed in order: once the new code ran, the old never runs again.
        assert versions == sorted(versions), versions
        assert took <= 5.0, f"the edited consumer ran {took:.2f}s after the save\n{listener.log()[-3000:]}"
        assert "consumer.py changed: restarting kbridge listen" in listener.log()
        assert "the previous kbridge listen stopped with code 0" in listener.log()
    finally:
        stop.set()
        code = listener.stop()
    assert code == 0, listener.log()[-3000:]
    assert listener.log().count("partitions assigned: " + topic) == 2, listener.log()[-3000:]

