"""The listener's chain under random failures: enqueue failures with partial confirms, dead letters Kafka
refuses, filters that reject or raise, refused records and, optionally, revocations after which the
partition is read again from its committed offset. Whatever happens, nothing below the marked or committed
offset was left unhandled, everything is committed in the end, and offsets are first enqueued in order."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest
from kafka import TopicPartition

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.errors import EnqueueError
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.steps import Fetched
from kbridge.params import Params
from kbridge.runtime import Runtime

TP = TopicPartition("users", 0)
TOTAL = 30


class FakeKafkaConsumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.committed.update({tp: o.offset for tp, o in offsets.items()})


class World:
    """What really happened: handled offsets, the order of enqueues; and how often things fail."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.p_fail = 0.3
        self.handled: set[int] = set()
        self.enqueue_order: list[int] = []


class Sink:
    def __init__(self, world: World) -> None:
        self.world = world

    def send(self, topic: str, params: Params, error: Any, attempts: int, group_id: str) -> None:
        if self.world.rng.random() < self.world.p_fail:
            raise ConnectionError("dlq down")
        self.world.handled.add(params.offset)

    def send_unroutable(self, *args: Any) -> str:
        raise AssertionError("nothing here is refused")


class Backend:
    def __init__(self, world: World) -> None:
        self.world = world

    def enqueue(self, route: Any, messages: Any) -> None:
        for i, m in enumerate(messages):
            if self.world.rng.random() < self.world.p_fail:
                raise EnqueueError("broker down", confirmed=i)
            self.world.enqueue_order.append(m.offset)
            self.world.handled.add(m.offset)

    def housekeeping(self) -> None:
        return None

    def close(self) -> None:
        return None


# Flow control on top: a throttle and a delay that hold for a moment, a breaker that trips and cools down at once.
FLOW = {"throttle": (3, 0.002), "delay_by": 0.002, "dead_letter_max_ratio": 0.3, "dead_letter_min_messages": 4,
        "dead_letter_cooldown": 0.002}


def processor(world: World, rng: random.Random, batch_consuming: bool, flow: bool = False) -> GroupProcessor:
    class Consumer(BaseConsumer):
        @before_enqueue
        def decide(self) -> bool:
            kind = self.params.payload["f"]
            if kind == "raise":
                raise ValueError("boom")
            if kind == "reject":
                world.handled.add(self.params.offset)
                return False
            return True

        def perform(self) -> None:
            pass

    opts = {"batch_consuming": True, "max_batch_size": rng.choice([None, 1, 2, 3])} if batch_consuming else {}
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("users", consumer=Consumer, backend="inline", **opts, **(FLOW if flow else {}))
    runtime = Runtime.of(app, Sink(world))  # type: ignore[arg-type]
    runtime.install_backend("inline", Backend(world))
    proc = GroupProcessor(runtime, app.routes.groups["users"], threading.Event())
    proc.consumer = FakeKafkaConsumer()  # type: ignore[assignment]
    proc._backoff = lambda attempts: 0.0  # type: ignore[method-assign]
    return proc


def fetched(rng: random.Random, start: int) -> Fetched:
    messages, refused = [], {}
    for offset in range(start, min(start + rng.randint(1, 6), TOTAL)):
        kind = rng.choice(["accept", "accept", "reject", "raise", "refused"])
        raw = json.dumps({"f": "accept" if kind == "refused" else kind}).encode()
        messages.append(Params(topic="users", partition=0, offset=offset, raw_payload=raw,
                               timestamp_ms=time.time() * 1000))
        if kind == "refused":
            refused[offset] = ValueError("undecodable")
    return Fetched(TP, messages=messages, refused=refused)


@pytest.mark.parametrize(("seed", "flow"), [(s, False) for s in range(300)] + [(s, True) for s in range(100)])
@pytest.mark.parametrize("batch_consuming", [False, True])
@pytest.mark.parametrize("revocations", [False, True])
def test_nothing_below_a_mark_or_commit_is_unhandled(seed: int, batch_consuming: bool, revocations: bool,
                                                     flow: bool) -> None:
    rng = random.Random(seed)
    world = World(rng)
    proc = processor(world, rng, batch_consuming, flow)
    consumer: FakeKafkaConsumer = proc.consumer  # type: ignore[assignment]

    def check() -> None:
        upto = max(proc.offsets._next.get(TP, 0), consumer.committed.get(TP, 0))
        missing = [o for o in range(upto) if o not in world.handled]
        assert not missing, f"marked up to {upto} but {missing} not handled"

    offset, rounds = 0, 0
    while offset < TOTAL or TP in proc._held:
        rounds += 1
        assert rounds < 1000
        if rounds > 60:
            world.p_fail = 0.0
        if revocations and rng.random() < 0.1:
            proc.on_revoked([TP])  # commits what is safe; the next owner reads on from there
            consumer.paused.discard(TP)
            offset = consumer.committed.get(TP, 0)
        elif TP in proc._held:
            if proc._held[TP].planned:  # a flow-control wait: due in a moment
                time.sleep(max(0.0, proc._held[TP].retry_at - time.monotonic()))
            proc._retry_held()
        else:
            batch = fetched(rng, offset)
            offset += len(batch.messages or ())
            proc._take(batch)
        check()
    proc.commit()
    assert consumer.committed[TP] == TOTAL
    assert set(range(TOTAL)) <= world.handled
    firsts = list(dict.fromkeys(world.enqueue_order))
    assert firsts == sorted(firsts)
