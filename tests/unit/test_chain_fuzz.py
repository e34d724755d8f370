"""Random enqueue failures, partial confirms, dead letters Kafka refuses, filters that reject or raise, and
refused records: whatever happens, every offset below the marked one was handled, in order."""

from __future__ import annotations

import json
import random
import threading

import pytest
from kafka import TopicPartition

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.errors import EnqueueError
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.steps import Fetched
from kbridge.params import Params
from kbridge.runtime import Runtime

TP = TopicPartition("users", 0)


class FakeKafkaConsumer:
    def __init__(self):
        self.paused = set()
    def pause(self, *tps):
        self.paused.update(tps)
    def resume(self, *tps):
        self.paused.difference_update(tps)
    def commit(self, offsets):
        pass


class World:
    def __init__(self, rng):
        self.rng = rng
        self.p_fail = 0.3
        self.handled: set[int] = set()
        self.enqueue_order: list[int] = []
        self.dlq: list[int] = []


class Sink:
    def __init__(self, w):
        self.w = w
    def send(self, topic, params, error, attempts, group_id):
        if self.w.rng.random() < self.w.p_fail:
            raise ConnectionError("dlq down")
        self.w.dlq.append(params.offset)
        self.w.handled.add(params.offset)
    def send_unroutable(self, *a):
        raise AssertionError


class Backend:
    def __init__(self, w):
        self.w = w
    def enqueue(self, route, messages):
        for i, m in enumerate(messages):
            if self.w.rng.random() < self.w.p_fail:
                raise EnqueueError("broker down", confirmed=i)
            self.w.enqueue_order.append(m.offset)
            self.w.handled.add(m.offset)
    def housekeeping(self):
        pass
    def close(self):
        pass


@pytest.mark.parametrize("seed", range(300))
@pytest.mark.parametrize("batch_consuming", [False, True])
def test_fuzz(seed, batch_consuming):
    rng = random.Random(seed)
    w = World(rng)
    world = w

    class C(BaseConsumer):
        @before_enqueue
        def f(self):
            kind = self.params.payload["f"]
            if kind == "raise":
                raise ValueError("boom")
            if kind == "reject":
                world.handled.add(self.params.offset)
                return False
            return True
        def perform(self):
            pass

    opts = {"batch_consuming": True, "max_batch_size": rng.choice([None, 1, 2, 3])} if batch_consuming else {}
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("users", consumer=C, backend="inline", **opts)
    rt = Runtime.of(app, Sink(w))
    rt.install_backend("inline", Backend(w))
    proc = GroupProcessor(rt, app.routes.groups["users"], threading.Event())
    proc.consumer = FakeKafkaConsumer()
    proc._backoff = lambda a: 0.0

    def check():
        nxt = proc.offsets._next.get(TP, 0)
        missing = [o for o in range(nxt) if o not in w.handled]
        assert not missing, f"marked up to {nxt} but {missing} not handled"

    offset = 0
    total = 30
    rounds = 0
    while offset < total or TP in proc._held:
        rounds += 1
        if rounds > 60:
            w.p_fail = 0.0
        if TP in proc._held:
            proc._retry_held()
            check()
            continue
        n = rng.randint(1, 6)
        msgs = []
        refused = {}
        for o in range(offset, min(offset + n, total)):
            kind = rng.choice(["accept", "accept", "reject", "raise", "refused"])
            raw = json.dumps({"f": "accept" if kind == "refused" else kind}).encode()
            msgs.append(Params(topic="users", partition=0, offset=o, raw_payload=raw))
            if kind == "refused":
                refused[o] = ValueError("undecodable")
        offset += len(msgs)
        proc._take(Fetched(TP, messages=msgs, refused=refused))
        check()
        assert rounds < 1000
    assert proc.offsets._next[TP] == total
    assert set(range(total)) <= w.handled
    # first enqueue of each offset in increasing order
    seen = []
    for o in w.enqueue_order:
        if o not in seen:
            seen.append(o)
    assert seen == sorted(seen)
