"""`kbridge dlq replay` without a broker: where a letter may go, the counts, exit codes and messages.

tests/integration/test_replay.py runs the same against a real broker.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

import kbridge.replay as replay_module
from kbridge import BaseConsumer, KBridge, PrefixMapper
from kbridge.cli import main as kbridge_cli
from kbridge.dlq import ORIGIN_TOPIC, REPLAYS
from kbridge.errors import KBridgeError
from kbridge.replay import Policy, ReplayResult, Sender, Targets, routed_targets, target_problem


class Orders(BaseConsumer):
    def perform(self) -> None:
        pass


def shop(**settings: Any) -> KBridge:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, **settings)
    app.topic("orders", consumer=Orders)
    with app.consumer_group("billing") as group:
        group.topic("invoices", consumer=Orders)
    return app


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, list[tuple[str, bytes]]]] = []

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None) -> Any:
        self.sent.append((topic, value, headers))
        return SimpleNamespace(get=lambda timeout: None)


def letter(offset: int, origin: bytes | None, value: bytes = b"v") -> Any:
    headers = [("trace", b"t")] + ([(ORIGIN_TOPIC, origin)] if origin is not None else [])
    return SimpleNamespace(topic="orders.dlq", partition=0, offset=offset, value=value, key=None, headers=headers)


def sender(targets: Targets, existing: set[str], max_replays: int = 3, force: bool = False
           ) -> tuple[Sender, FakeProducer]:
    producer = FakeProducer()
    consumer = SimpleNamespace(topics=lambda: existing)
    policy = Policy(max_replays, force)
    return Sender(producer, consumer, set(existing), targets, "orders.dlq", 30.0, policy), producer  # type: ignore[arg-type]


def test_routed_targets_are_the_kafka_names_of_the_routes() -> None:
    assert routed_targets(shop()).routed == {"orders", "invoices"}
    assert routed_targets(shop(topic_mapper=PrefixMapper("acme."))).routed == {"acme.orders", "acme.invoices"}


def test_only_routed_origins_are_replayed(caplog: pytest.LogCaptureFixture) -> None:
    send, producer = sender(Targets(frozenset({"orders"})), {"orders", "other", "orders.dlq"})
    result = ReplayResult()
    letters = [
        letter(0, b"__consumer_offsets"), letter(1, b"__transaction_state"), letter(2, b"other"),
        letter(3, b"bad name!"), letter(4, b"\xff"), letter(5, None), letter(6, b"orders.dlq"),
        letter(7, b"orders", b"good"),
    ]
    with caplog.at_level(logging.WARNING, logger="kbridge.replay"):
        for record in letters:
            send.handle(record, result)
    assert producer.sent == [("orders", b"good", [("trace", b"t"), (REPLAYS, b"1")])]
    assert (result.replayed, result.skipped) == (1, 7)
    assert dict(result.skipped_by) == {"internal Kafka topic": 2, "not routed by this app": 1,
                                       "illegal topic name": 2, "no origin header": 1,
                                       "the dead-letter topic itself": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 7
    assert lines[0] == ("skipped dead letter orders.dlq-0@0: origin topic '__consumer_offsets' is internal to Kafka; "
                        "replay never writes there")
    assert lines[2].startswith("skipped dead letter orders.dlq-0@2: origin topic 'other' is not a topic this app "
                               "routes (routed: orders)")
    assert "orders.dlq-0@3: " in lines[3] and "is invalid" in lines[3]
    assert "orders.dlq-0@5: it has no kbridge-origin-topic header" in lines[5]


def counted(offset: int, count: bytes) -> Any:
    record = letter(offset, b"orders")
    record.headers.append((REPLAYS, count))
    return record


def test_the_replay_count_goes_up_and_a_poison_letter_is_skipped_after_max_replays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    send, producer = sender(Targets(frozenset({"orders"})), {"orders"}, max_replays=2)
    result = ReplayResult()
    with caplog.at_level(logging.WARNING, logger="kbridge.replay"):
        for i, count in enumerate([b"1", b"2", b"7", b"-1", b"x\x1b"]):
            send.handle(counted(i, count), result)
    assert [dict(h)[REPLAYS] for _, _, h in producer.sent] == [b"2"]
    assert dict(result.skipped_by) == {"replayed too often": 2, "malformed replay count": 2}
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("skipped dead letter orders.dlq-0@1: it was replayed 2 time(s) already and failed again "
                        "each time (--max-replays 2); fix the cause, then replay it with --force")
    assert "orders.dlq-0@3: its kbridge-replays header b'-1' is not a count" in lines[2]


def test_force_replays_a_poison_letter_and_still_counts() -> None:
    send, producer = sender(Targets(frozenset({"orders"})), {"orders"}, max_replays=2, force=True)
    result = ReplayResult()
    send.handle(counted(0, b"5"), result)
    send.handle(counted(1, b"junk"), result)
    assert [dict(h)[REPLAYS] for _, _, h in producer.sent] == [b"6", b"1"]
    assert result.skipped == 0


def test_to_sends_every_letter_there() -> None:
    send, producer = sender(Targets(frozenset(), to="parking"), {"parking"})
    result = ReplayResult()
    for i, origin in enumerate([b"__consumer_offsets", None, b"bad name!", b"orders"]):
        send.handle(letter(i, origin), result)
    assert [t for t, _, _ in producer.sent] == ["parking"] * 4
    assert (result.replayed, result.skipped, dict(result.replayed_to)) == (4, 0, {"parking": 4})


def test_a_routed_topic_missing_from_kafka_stops_the_replay_at_that_letter() -> None:
    send, producer = sender(Targets(frozenset({"orders"})), {"orders.dlq"})
    with pytest.raises(KBridgeError, match=r"orders.dlq-0@9: topic 'orders' does not exist in Kafka"):
        send.handle(letter(9, b"orders"), ReplayResult())
    assert producer.sent == []


@pytest.mark.parametrize(
    ("topic", "why"),
    [("__consumer_offsets", "is internal to Kafka"), ("__transaction_state", "is internal to Kafka"),
     ("a b", "is invalid"), ("", "is invalid"), ("x" * 250, "Kafka allows at most 249"),
     ("orders.dlq", "is the dead-letter topic being replayed")],
)
def test_to_refuses_internal_illegal_and_the_replayed_topic(topic: str, why: str) -> None:
    problem = target_problem(topic, "orders.dlq")
    assert problem is not None and why in problem
    result = CliRunner().invoke(kbridge_cli, ["dlq", "replay", "orders.dlq", "--to", topic], obj=shop())
    assert result.exit_code == 1
    assert result.output.startswith("Error: refusing to replay: --to topic") and why in result.output


def test_summary() -> None:
    assert ReplayResult(total=0).summary("o.dlq").startswith("nothing to replay in o.dlq")
    result = ReplayResult()
    assert result.summary("o.dlq") == "replayed 0 message(s) from o.dlq; skipped 0"
    result.replayed, result.skipped = 3, 2
    result.replayed_to.update({"orders": 2, "invoices": 1})
    result.skipped_by.update({"not routed by this app": 1, "internal Kafka topic": 1})
    assert result.summary("o.dlq") == (
        "replayed 3 message(s) from o.dlq (invoices: 1, orders: 2); skipped 2 (1 internal Kafka topic, "
        "1 not routed by this app; each is logged with its offset, and stays in o.dlq)"
    )


def fake_replay(outcome: BaseException | None, replayed: int = 2, skipped: int = 0) -> Any:
    def run(settings: Any, dlq_topic: str, targets: Targets, limit: Any, follow: bool, max_replays: int,
            force: bool, result: ReplayResult, progress: Any) -> ReplayResult:
        result.replayed, result.skipped = replayed, skipped
        result.replayed_to["orders"] = replayed
        result.skipped_by["not routed by this app"] = skipped
        if outcome is not None:
            raise outcome
        return result

    return run


@pytest.mark.parametrize(
    ("outcome", "skipped", "code", "first_line"),
    [
        (None, 0, 0, "replayed 2 message(s) from orders.dlq (orders: 2); skipped 0"),
        (None, 1, 3, "replayed 2 message(s) from orders.dlq (orders: 2); skipped 1 (1 not routed by this app"),
        (KeyboardInterrupt(), 1, 130, "interrupted: replayed 2 message(s) from orders.dlq (orders: 2); skipped 1"),
        (KBridgeError("Kafka did not acknowledge"), 0, 1, "stopped: replayed 2 message(s) from orders.dlq"),
    ],
)
def test_exit_codes_and_counts(
    monkeypatch: pytest.MonkeyPatch, outcome: BaseException | None, skipped: int, code: int, first_line: str
) -> None:
    monkeypatch.setattr(replay_module, "replay", fake_replay(outcome, skipped=skipped))
    result = CliRunner().invoke(kbridge_cli, ["dlq", "replay", "orders.dlq"], obj=shop())
    assert result.exit_code == code, result.output
    assert result.output.splitlines()[0].startswith(first_line)
    if code == 1:
        assert "Error: Kafka did not acknowledge" in result.output


def test_progress_is_drawn_on_a_terminal_only_and_cleared_before_the_summary() -> None:
    import io

    from kbridge.replay_progress import Progress

    out = io.StringIO()
    progress = Progress("o.dlq", out)
    progress(ReplayResult(replayed=3, skipped=1, total=10))
    progress(ReplayResult(replayed=4, skipped=1, total=10))
    progress.clear()
    assert out.getvalue().split("\r")[1:3] == ["o.dlq: 4/10 letters, 3 replayed, 1 skipped",
                                               "o.dlq: 5/10 letters, 4 replayed, 1 skipped"]
    assert out.getvalue().endswith("\r")
    silent = Progress.on_terminal("o.dlq")  # pytest's stdout is not a terminal
    assert silent.out is None
    silent(ReplayResult(replayed=1))
    silent.clear()


def test_a_pattern_routes_topics_are_replay_targets_through_the_topic_mapper() -> None:
    from kbridge import BaseConsumer, KBridge, PrefixMapper
    from kbridge.replay import routed_targets

    class Sink(BaseConsumer):
        def perform(self) -> None:
            return None

    app = KBridge(client_id="combo", kafka={"bootstrap_servers": "x:1"}, topic_mapper=PrefixMapper("acme."))
    app.topic("orders", consumer=Sink, backend="inline")
    with app.consumer_group("tenants") as group:
        group.pattern("ten", r"tenant\.[a-z]+", consumer=Sink, backend="inline")
    targets = routed_targets(app)
    assert targets.accepts("acme.orders") and targets.accepts("acme.tenant.bob")
    assert not targets.accepts("acme.ten") and not targets.accepts("tenant.bob") and not targets.accepts("acme.ten.dlq")
    assert "acme.orders" in targets.describe() and "tenant" in targets.describe()
