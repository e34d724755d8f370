"""kbridge.testing.TestClient: routes run in memory, with the listener's and the worker's policy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery import Celery

from kbridge import (
    BaseConsumer,
    KBridge,
    KBridgeError,
    after_fetch,
    after_poll,
    before_enqueue,
    before_poll,
    before_stop,
)
from kbridge.dlq import ATTEMPTS, ERROR_CLASS, ORIGIN_OFFSET
from kbridge.errors import DeserializationError, PerformTimeout
from kbridge.testing import TestClient
from kbridge.testing.client import Result, encode


class Users(BaseConsumer):
    @before_enqueue
    def positive(self) -> bool:
        return self.params.payload["counter"] > 0

    def perform(self) -> None:
        self.seen = self.params.payload["counter"]
        if self.params.payload.get("fail"):
            raise RuntimeError("asked to fail")

    def after_failure(self, exc: BaseException) -> None:
        self.failures = getattr(self, "failures", 0) + 1


def shop(celery: bool = False, **options: Any) -> KBridge:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, celery=Celery("t") if celery else None)
    app.topic("users", consumer=Users, **options)
    return app


@pytest.mark.parametrize("celery", [False, True], ids=["inline", "celery"])
def test_performed_filtered_and_the_consumer_instance(celery: bool) -> None:
    client = TestClient(shop(celery))
    result = client.publish("users", {"counter": 3})
    assert [p.offset for p in result.performed] == [0] and result.filtered == [] and result.dead_lettered == []
    assert result.consumer.seen == 3  # type: ignore[attr-defined]
    assert result.committed == 1

    skipped = client.publish("users", {"counter": 0})
    assert [p.offset for p in skipped.filtered] == [1] and skipped.performed == [] and skipped.runs == []
    assert skipped.committed == 2  # filtered messages are committed too
    with pytest.raises(KBridgeError, match="no perform"):
        _ = skipped.consumer


def test_failures_call_after_failure_retry_without_sleeping_then_dead_letter_in_memory() -> None:
    client = TestClient(shop(max_retries=2, retry_backoff=600))
    started = time.monotonic()
    result = client.publish("users", {"counter": 1, "fail": True}, key="k", headers={"trace": b"t1"})
    assert time.monotonic() - started < 5
    assert result.performed == [] and len(result.errors) == 3 and result.runs[0].attempts == 3
    assert result.consumer.failures == 1  # type: ignore[attr-defined]  # a fresh instance per attempt
    [letter] = result.dead_lettered
    assert letter.topic == "users.dlq" and letter.attempts == 3 and isinstance(letter.error, RuntimeError)
    headers = dict(letter.headers)
    assert headers[ATTEMPTS] == b"3" and headers[ORIGIN_OFFSET] == b"0" and headers["trace"] == b"t1"
    assert letter.params.key == b"k"
    assert client.dead_letters == [letter]
    assert result.committed == 1  # dead-lettered counts as handled


@pytest.mark.parametrize("celery", [False, True], ids=["inline", "celery"])
def test_poison_payload_is_dead_lettered_at_once(celery: bool) -> None:
    client = TestClient(shop(celery))
    in_filter = client.publish("users", b"not json")
    assert in_filter.dead_lettered[0].attempts == 1 and in_filter.runs == []
    assert isinstance(in_filter.dead_lettered[0].error, DeserializationError)


def test_poison_in_perform_is_not_retried() -> None:
    class Plain(BaseConsumer):
        def perform(self) -> None:
            _ = self.params.payload

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("plain", consumer=Plain, max_retries=5)
    result = TestClient(app).publish("plain", b"\xff")
    assert result.runs[0].attempts == 1 and result.dead_lettered[0].attempts == 1
    assert dict(result.dead_lettered[0].headers)[ERROR_CLASS] == b"kbridge.errors.DeserializationError"


def test_the_route_deserializer_reads_what_was_published() -> None:
    class Raw(BaseConsumer):
        def perform(self) -> None:
            self.got = self.params.payload

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, celery=Celery("t"))
    app.topic("raw", consumer=Raw, deserializer=lambda b: b[::-1])
    client = TestClient(app)
    assert client.publish("raw", b"\x00\xffabc").consumer.got == b"cba\xff\x00"  # type: ignore[attr-defined]
    assert client.publish("raw", "żółw").consumer.got == "żółw".encode()[::-1]  # type: ignore[attr-defined]


def test_timeout_is_enforced_and_seen_by_after_failure() -> None:
    class Slow(BaseConsumer):
        def perform(self) -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # Python code: interrupted at the deadline
                pass

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("slow", consumer=Slow, timeout=0.2, max_retries=1)
    result = TestClient(app).publish("slow", {})
    assert [type(e) for e in result.errors] == [PerformTimeout, PerformTimeout]
    assert len(result.dead_lettered) == 1


def test_batches_are_split_by_max_batch_size_in_offset_order() -> None:
    class Batch(BaseConsumer):
        @before_enqueue
        def keep(self) -> bool:
            return bool(self.params.payload % 5)

        def perform(self) -> None:
            self.got = self.params_batch.payloads

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("batch", consumer=Batch, batch_consuming=True, max_batch_size=3)
    client = TestClient(app)
    result = client.publish_many("batch", range(1, 11))
    assert [c.got for c in result.consumers] == [[1, 2, 3], [4, 6, 7], [8, 9]]  # type: ignore[attr-defined]
    assert [p.payload for p in result.filtered] == [5, 10]
    assert client.publish_many("batch", [11]).messages[0].offset == 10  # offsets continue per partition


def test_manual_offsets_commit_only_marks() -> None:
    class Marks(BaseConsumer):
        def perform(self) -> None:
            for p in self.params_batch:
                if p.payload["mark"]:
                    self.mark_as_consumed(p)

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("m", consumer=Marks, automatically_mark_as_consumed=False, batch_consuming=True)
    client = TestClient(app)
    first = client.publish_many("m", [{"mark": True}, {"mark": True}, {"mark": False}])
    assert [p.offset for p in first.marked] == [0, 1] and first.committed == 2
    assert client.publish("m", {"mark": False}).committed == 2
    assert client.publish("m", {"mark": True}).committed == 5  # marking 4 covers the unmarked 2 and 3
    assert client.committed("m") == 5 and client.committed("m", partition=1) is None


def test_callbacks_fire_and_their_errors_are_collected_not_raised() -> None:
    fired: list[str] = []

    class Calls(BaseConsumer):
        @before_poll
        def a(self) -> None:
            fired.append("before_poll")

        @after_fetch
        def b(self) -> None:
            fired.append(f"after_fetch {len(self.params_batch)}")
            raise ValueError("broken callback")

        @after_poll
        def c(self) -> None:
            fired.append("after_poll")

        @before_stop
        def d(self) -> None:
            fired.append("before_stop")

        def perform(self) -> None:
            fired.append("perform")

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("c", consumer=Calls)
    client = TestClient(app)
    result = client.publish_many("c", [{}, {}])
    assert fired == ["before_poll", "after_fetch 2", "perform", "perform", "after_poll"]
    assert [str(e) for e in result.callback_errors] == ["broken callback"]
    assert len(result.performed) == 2
    assert client.stop() == [] and fired[-1] == "before_stop"


def test_perform_hooks_apply() -> None:
    entered: list[str] = []

    @contextmanager
    def hook(consumer: BaseConsumer) -> Iterator[None]:
        entered.append(type(consumer).__name__)
        yield

    app = shop()
    app.perform_hooks.append(hook)
    TestClient(app).publish("users", {"counter": 1})
    assert entered == ["Users"]


def test_route_lookup_errors_say_what_is_routed() -> None:
    app = shop()
    with app.consumer_group("other") as group:
        group.topic("users", consumer=Users)
    client = TestClient(app)
    with pytest.raises(KBridgeError, match="several consumer groups"):
        client.publish("users", {"counter": 1})
    assert client.publish("users", {"counter": 1}, group="other").route.group_id == "shop_other"
    with pytest.raises(KBridgeError, match="not routed.*users/users"):
        client.publish("nope", {})


def test_the_pytest_fixture_makes_clients(kbridge_client: Callable[[KBridge], TestClient]) -> None:
    result: Result = kbridge_client(shop()).publish("users", {"counter": 2})
    assert result.consumer.seen == 2  # type: ignore[attr-defined]


def test_encode() -> None:
    assert encode(b"x") == b"x" and encode("é") == "é".encode() and encode(None) is None
    assert encode({"a": [1]}) == b'{"a": [1]}' and encode(bytearray(b"y")) == b"y"
