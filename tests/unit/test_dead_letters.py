"""DeadLetters against a fake producer: every header kept, and no letter dropped for a refusal no retry can fix."""

from __future__ import annotations

import pytest
from kafka.errors import InvalidTopicError, KafkaTimeoutError, MessageSizeTooLargeError

from kbridge.config import Settings
from kbridge.dlq import (
    INTENDED_TOPIC,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    PREVIEW_BYTES,
    TRUNCATED,
    DeadLetters,
)
from kbridge.params import Params

from .test_producer import FakeKafkaProducer

KAFKA = {"bootstrap_servers": "x:1"}


class SizeLimitedProducer(FakeKafkaProducer):
    """Refuses any record over limit bytes, as Kafka's message.max.bytes does; refuses topics in bad_topics."""

    def __init__(self, limit: int, bad_topics: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.limit, self.bad_topics = limit, bad_topics
        self.refused: list[str] = []

    def send(self, topic, value=None, key=None, headers=None, partition=None):  # type: ignore[no-untyped-def]
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers or [])
        error = InvalidTopicError() if topic in self.bad_topics else MessageSizeTooLargeError() if size > self.limit \
            else None
        if error is not None:
            self.refused.append(topic)
            self.fail[topic] = error
            try:
                return super().send(topic, value, key, headers, partition)
            finally:
                self.sent.pop()
                del self.fail[topic]
        return super().send(topic, value, key, headers, partition)


def dead_letters(producer: FakeKafkaProducer) -> DeadLetters:
    dead = DeadLetters(Settings.build({"client_id": "shop", "kafka": KAFKA}))
    dead._get_producer = lambda: producer  # type: ignore[method-assign]
    return dead


def test_repeated_header_names_reach_the_letter_in_order() -> None:
    fake = FakeKafkaProducer()
    params = Params(topic="t", partition=0, offset=1, raw_payload=b"x",
                    headers=[("dup", b"1"), ("dup", b"2"), ("kbridge-origin-topic", b"old"), ("z", None)])
    assert params.headers == {"dup": b"2", "kbridge-origin-topic": b"old", "z": None}
    dead_letters(fake).send("t.dlq", params, RuntimeError("boom"), 1, "shop_t")
    headers = fake.sent[0]["headers"]
    assert headers[:3] == [("dup", b"1"), ("dup", b"2"), ("z", None)]  # earlier kbridge headers replaced
    assert dict(headers)[ORIGIN_TOPIC] == b"t"


def test_a_letter_too_large_for_kafka_is_sent_cut_down_and_points_at_the_original() -> None:
    fake = SizeLimitedProducer(limit=1_048_576)
    params = Params(topic="orders", partition=2, offset=77, raw_payload=b"v" * 1_048_000, key=b"k",
                    headers=[("big", b"h" * 600)])
    dead_letters(fake).send("orders.dlq", params, RuntimeError("boom"), 4, "shop_orders")
    assert fake.refused == ["orders.dlq"]
    [letter] = fake.sent
    headers = dict(letter["headers"])
    assert letter["topic"] == "orders.dlq" and letter["value"] == b"v" * PREVIEW_BYTES and letter["key"] == b"k"
    assert (headers[ORIGIN_TOPIC], headers[ORIGIN_PARTITION], headers[ORIGIN_OFFSET]) == (b"orders", b"2", b"77")
    assert b"value 1048000 bytes" in headers[TRUNCATED] and "big" not in headers


def test_a_refused_dead_letter_topic_falls_back_to_the_unroutable_topic() -> None:
    fake = SizeLimitedProducer(limit=10**9, bad_topics=frozenset({"orders.dlq"}))
    params = Params(topic="orders", partition=0, offset=5, raw_payload=b"{}")
    dead_letters(fake).send("orders.dlq", params, RuntimeError("boom"), 1, "shop_orders")
    assert fake.refused == ["orders.dlq", "orders.dlq"]  # whole, then cut down
    [letter] = fake.sent
    assert letter["topic"] == "shop.unroutable"
    assert dict(letter["headers"])[INTENDED_TOPIC] == b"orders.dlq"


def test_a_refusal_retrying_can_fix_is_raised_for_the_caller_to_retry() -> None:
    fake = FakeKafkaProducer()
    fake.fail["orders.dlq"] = KafkaTimeoutError("no broker")
    params = Params(topic="orders", partition=0, offset=5, raw_payload=b"{}")
    with pytest.raises(KafkaTimeoutError):
        dead_letters(fake).send("orders.dlq", params, RuntimeError("boom"), 1, "shop_orders")


def test_the_dead_letter_producer_takes_records_larger_than_kafkas_default(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.build({"client_id": "shop", "kafka": {**KAFKA, "max_request_size": 1000}})
    created: list[dict[str, object]] = []

    class Recording(FakeKafkaProducer):
        def __init__(self, **config: object) -> None:
            created.append(config)
            super().__init__(**config)

    import kbridge.dlq as dlq

    monkeypatch.setattr(dlq, "KafkaProducer", Recording)
    DeadLetters(settings)._get_producer()
    assert created[0]["max_request_size"] == dlq.DEAD_LETTER_MAX_REQUEST_SIZE
    assert created[0]["max_block_ms"] == 30_000
