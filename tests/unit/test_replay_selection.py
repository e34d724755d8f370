"""Replaying chosen dead letters without a broker: the selection, its refusals, the same rules as a full
replay, and that the replay group is never touched. tests/integration/test_web.py replays one of two
letters from the page against a real broker."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import TopicPartition

import kbridge.replay_selection as selection_module
from kbridge.cli import main as kbridge_cli
from kbridge.dlq import ATTEMPTS, ORIGIN_TOPIC, REPLAYS
from kbridge.errors import KBridgeError
from kbridge.replay import ReplayResult, Sender, Targets
from kbridge.replay_selection import MAX_SELECTION, NOT_FOUND, parse_offsets, replay_selected, select

from .test_replay import FakeProducer, shop

DLQ = "orders.dlq"


def record(partition: int, offset: int, origin: bytes = b"orders", replays: bytes | None = None) -> Any:
    headers = [("trace", b"t"), (ORIGIN_TOPIC, origin), (ATTEMPTS, b"4")]
    if replays is not None:
        headers.append((REPLAYS, replays))
    return SimpleNamespace(topic=DLQ, partition=partition, offset=offset, value=f"{partition}@{offset}".encode(),
                           key=None, headers=headers)


class FakeConsumer:
    """A dead-letter topic in memory, read the way KafkaConsumer reads it; it has no commit() to call."""

    def __init__(self, records: dict[int, list[Any]], earliest: int = 0, **config: Any) -> None:
        self.config = config
        self.records = records
        self.earliest = earliest
        self.positions: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[int, int]] = []
        self.closed = False

    def topics(self) -> set[str]:
        return {DLQ, "orders", "other"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.records)

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.earliest for tp in tps}

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = {tp: self.positions.get(tp, self.earliest) for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp.partition, offset))
        self.positions[tp] = offset

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        out = {}
        for tp, at in self.positions.items():
            batch = [r for r in self.records[tp.partition] if r.offset >= at][:max_records]
            if batch:
                out[tp] = batch
                self.positions[tp] = batch[-1].offset + 1
            else:
                self.positions[tp] = max(at, self.end(tp.partition))  # past markers up to the end
        return out

    def end(self, partition: int) -> int:
        records = self.records[partition]
        return records[-1].offset + 1 if records else self.earliest

    def close(self, autocommit: bool = True) -> None:
        assert autocommit is False
        self.closed = True


@pytest.fixture
def dlq(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Patches Kafka out of replay_selected: returns (consumer, producer) once replay_selected has made them."""
    made: dict[str, Any] = {}
    topic = SimpleNamespace(records={0: [record(0, o) for o in range(4)], 1: [record(1, 0), record(1, 2)]},
                            earliest=0)

    def consumer(**config: Any) -> FakeConsumer:
        made["consumer"] = FakeConsumer(topic.records, topic.earliest, **config)
        return made["consumer"]

    def open_sender(settings: Any, consumer: Any, existing: Any, targets: Targets, dlq_topic: str,
                    policy: Any) -> Sender:
        made["producer"] = FakeProducer()
        made["producer"].close = lambda timeout: None
        return Sender(made["producer"], consumer, set(existing), targets, dlq_topic, 30.0, policy)  # type: ignore[arg-type]

    def ends(config: Any, tps: Any) -> dict[TopicPartition, int]:
        return {tp: made["consumer"].end(tp.partition) for tp in tps}

    monkeypatch.setattr(selection_module, "KafkaConsumer", consumer)
    monkeypatch.setattr(selection_module, "open_sender", open_sender)
    monkeypatch.setattr(selection_module, "high_watermarks", ends)
    monkeypatch.setattr(selection_module, "partitions_of",
                        lambda c, t, hint: [TopicPartition(t, p) for p in sorted(c.partitions_for_topic(t))])
    return SimpleNamespace(topic=topic, made=made)


ROUTED = Targets(frozenset({"orders"}))


@pytest.mark.parametrize(("text", "bad"), [
    ("0", "'0'"), ("a:1", "'a:1'"), ("0:-1", "'0:-1'"), ("0:1,", "''"), ("0:1:2", "'0:1:2'"), ("0: 1x", "'0: 1x'"),
])
def test_malformed_offsets_are_refused_naming_the_item(text: str, bad: str) -> None:
    with pytest.raises(KBridgeError, match=f"--offsets item {bad} is not PARTITION:OFFSET"):
        parse_offsets(text)


def test_a_selection_is_sorted_without_repeats_and_bounded() -> None:
    assert select(parse_offsets("1:5, 0:9,1:2,1:5")) == {0: [9], 1: [2, 5]}
    with pytest.raises(KBridgeError, match="no letters chosen"):
        select([])
    with pytest.raises(KBridgeError, match=f"at most {MAX_SELECTION} at once"):
        select((0, o) for o in range(MAX_SELECTION + 1))
    with pytest.raises(KBridgeError, match=">= 0"):
        select([(0, -1)])


@pytest.mark.parametrize(("chosen", "why"), [
    ({0: [1, 4]}, "offset 4 of orders.dlq-0 is past its end: its letters are 0..3"),
    ({1: [3]}, "offset 3 of orders.dlq-1 is past its end: its letters are 0..2"),
    ({1: [0], 5: [0]}, "'orders.dlq' has no partition 5 (it has 2)"),
])
def test_offsets_outside_the_topic_refuse_the_whole_selection(dlq: Any, chosen: dict[int, list[int]], why: str
                                                              ) -> None:
    with pytest.raises(KBridgeError) as refused:
        replay_selected(shop().settings, DLQ, ROUTED, chosen)
    assert str(refused.value) == f"nothing replayed: {why}"
    assert "producer" not in dlq.made and dlq.made["consumer"].closed  # nothing sent, nothing left open


def test_offsets_deleted_by_retention_are_refused(dlq: Any) -> None:
    dlq.topic.earliest = 2
    dlq.topic.records[0] = dlq.topic.records[0][2:]
    with pytest.raises(KBridgeError, match=r"offset 1 of orders.dlq-0 is gone .deleted by retention.; its earliest is"):
        replay_selected(shop().settings, DLQ, ROUTED, {0: [1, 3]})


def test_only_the_chosen_letters_are_sent_and_no_group_is_used(dlq: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kbridge.replay"):
        result = replay_selected(shop().settings, DLQ, ROUTED, {0: [1, 3], 1: [0, 1]})
    sent = dlq.made["producer"].sent
    assert [value for _, value, _ in sent] == [b"0@1", b"0@3", b"1@0"]
    assert sent[0] == ("orders", b"0@1", [("trace", b"t"), (REPLAYS, b"1")])  # kbridge- headers dropped, counted
    assert dlq.made["consumer"].config["group_id"] is None  # reads outside the replay group, commits nothing
    assert (result.replayed, result.skipped, dict(result.skipped_by), result.total) == (3, 1, {NOT_FOUND: 1}, 4)
    assert "orders.dlq-1@1: there is no letter at that offset" in caplog.text


def test_an_unrouted_origin_and_a_poison_letter_are_skipped_like_a_full_replay(dlq: Any) -> None:
    dlq.topic.records[0] = [record(0, 0, origin=b"other"), record(0, 1, replays=b"3"), record(0, 2, replays=b"1")]
    result = replay_selected(shop().settings, DLQ, ROUTED, {0: [0, 1, 2]})
    assert [(topic, dict(h)[REPLAYS]) for topic, _, h in dlq.made["producer"].sent] == [("orders", b"2")]
    assert dict(result.skipped_by) == {"not routed by this app": 1, "replayed too often": 1}
    forced = replay_selected(shop().settings, DLQ, ROUTED, {0: [1]}, force=True)
    assert forced.replayed == 1 and dict(dlq.made["producer"].sent[0][2])[REPLAYS] == b"4"


def test_a_long_gap_is_crossed_by_a_seek(dlq: Any) -> None:
    dlq.topic.records[0] = [record(0, o) for o in range(3000)]
    result = replay_selected(shop().settings, DLQ, ROUTED, {0: [0, 2999]})
    assert result.replayed == 2 and dlq.made["consumer"].seeks == [(0, 0), (0, 2999)]


def test_cli_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def fake(settings: Any, topic: str, targets: Targets, chosen: Any, max_replays: int, force: bool,
             result: ReplayResult) -> ReplayResult:
        calls.append((topic, targets, chosen, max_replays, force))
        result.replayed, result.skipped = 1, 1
        result.skipped_by["not routed by this app"] = 1
        return result

    monkeypatch.setattr(selection_module, "replay_selected", fake)
    run = CliRunner().invoke(kbridge_cli, ["dlq", "replay", DLQ, "--offsets", "1:7,0:3", "--force"], obj=shop())
    assert run.exit_code == 3, run.output  # some skipped, as a full replay says it
    assert calls == [(DLQ, Targets(frozenset({"orders", "invoices"})), {0: [3], 1: [7]}, 3, True)]
    bad = CliRunner().invoke(kbridge_cli, ["dlq", "replay", DLQ, "--offsets", "0:x"], obj=shop())
    assert bad.exit_code == 2 and "--offsets item '0:x' is not PARTITION:OFFSET" in bad.output
    both = CliRunner().invoke(kbridge_cli, ["dlq", "replay", DLQ, "--offsets", "0:1", "--limit", "2"], obj=shop())
    assert both.exit_code == 2 and "takes no --limit or --follow" in both.output
    assert len(calls) == 1


def test_api_replays_a_selection_under_the_same_rules_as_the_other_posts(monkeypatch: pytest.MonkeyPatch) -> None:
    starlette_testclient = pytest.importorskip("starlette.testclient", reason="the web extra is not installed")
    import kbridge.web.server as server
    from kbridge.web import create_app

    calls: list[Any] = []

    def fake(settings: Any, topic: str, targets: Targets, chosen: Any, force: bool) -> ReplayResult:
        calls.append((topic, targets, chosen, force))
        result = ReplayResult(replayed=1)
        result.replayed_to["orders"] = 1
        return result

    monkeypatch.setattr(server, "replay_selected", fake)
    with starlette_testclient.TestClient(create_app(shop(), read_reports=False), base_url="http://127.0.0.1") as c:
        path = f"/api/dead-letters/{DLQ}/replay-selected"
        body = {"letters": [{"partition": 1, "offset": 4}, {"partition": 0, "offset": 2}]}
        assert c.post(path, json=body).status_code == 403  # no CSRF token
        csrf = {"X-CSRF-Token": c.get("/api/csrf").json()["csrf"]}
        assert c.get(path).status_code == 405
        assert c.post("/api/dead-letters/orders/replay-selected", json=body, headers=csrf).status_code == 404
        for bad, why in [({}, "the body must be"), ({"letters": [{"partition": 0, "offset": -1}]}, "integers >= 0"),
                         ({"letters": [{"partition": True, "offset": 1}]}, "integers >= 0"),
                         ({"letters": [[0, 1]]}, "integers >= 0"), ({"letters": []}, "no letters chosen"),
                         ({"letters": [{"partition": 0, "offset": 1}] * 501}, "at most 500"),
                         ({**body, "force": "yes"}, "force must be true or false")]:
            refused = c.post(path, json=bad, headers=csrf)
            assert refused.status_code == 400 and why in refused.json()["error"], (bad, refused.text)
        assert calls == []
        ok = c.post(path, json={**body, "force": True}, headers=csrf)
        assert ok.status_code == 200, ok.text
        assert ok.json()["summary"] == "replayed 1 message(s) from orders.dlq (orders: 1); skipped 0"
    assert calls == [(DLQ, Targets(frozenset({"orders", "invoices"})), {0: [2], 1: [4]}, True)]
