"""`kbridge dlq replay` against a real broker: it writes only where the app routes, or where --to says.

Dead letters are crafted by hand, as anyone able to write to a dead-letter topic could:
their kbridge-origin-topic header names Kafka's internal topics, a topic the app does not
route, an illegal name. None of those is written to; each is skipped, logged and committed
past, so a second run neither writes them nor loops on them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from kafka.errors import TopicAlreadyExistsError

from kbridge.cli import main as kbridge_cli
from kbridge.dlq import ORIGIN_OFFSET, ORIGIN_TOPIC
from kbridge.testing import processes
from kbridge.testing.kafka import committed_offsets, create_topics, produce, read_topic, wait_until
from kbridge.testing.services import KafkaService
from tests.apps.replay_app import make_app

pytestmark = pytest.mark.integration

APP = "tests.apps.replay_app:app"


@dataclass
class Run:
    run: str
    kafka: KafkaService

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def env(self) -> dict[str, str]:
        return {"REPLAY_RUN": self.run, "REPLAY_KAFKA": self.bootstrap}

    @property
    def orders(self) -> str:
        return f"{self.run}.orders"  # the one topic tests/apps/replay_app.py routes

    @property
    def replay_group(self) -> str:
        return f"replay-{self.run}_dlq_replay"

    def topic(self, suffix: str) -> str:
        return f"{self.run}.{suffix}"

    def letter(
        self, dlq: str, value: bytes, origin: str | bytes | None, extra: tuple[tuple[str, bytes], ...] = ()
    ) -> None:
        """One crafted dead letter: a value and the origin header given (none for None)."""
        headers = [*extra, ("kbridge-origin-partition", b"0"), (ORIGIN_OFFSET, b"7")]
        if origin is not None:
            headers.append((ORIGIN_TOPIC, origin if isinstance(origin, bytes) else origin.encode()))
        produce(self.bootstrap, dlq, [value], headers=headers)

    def replay(self, *args: str, timeout: float = 120) -> tuple[int, str]:
        cmd = processes.Process(
            "replay", [sys.executable, "-m", "kbridge", "dlq", "replay", *args, "--app", APP],
            processes.child_env(self.env),
        ).start()
        try:
            code = cmd.wait(timeout)
        finally:
            cmd.kill_group()
        return code, cmd.log()

    def show(self, *args: str) -> tuple[int, str]:
        cmd = processes.Process(
            "show", [sys.executable, "-m", "kbridge", "dlq", "show", *args, "--app", APP],
            processes.child_env(self.env),
        ).start()
        try:
            code = cmd.wait(60)
        finally:
            cmd.kill_group()
        return code, cmd.log()

    def values(self, topic: str, expect: int = 1, timeout: float = 5) -> list[bytes]:
        return [r.value for r in read_topic(self.bootstrap, topic, expect, timeout)]


def assert_no_crash(out: str) -> None:
    """No uncaught exception: its traceback would run through kbridge/__main__.py.

    (kafka-python 3.0.12 itself sometimes logs a traceback at ERROR when a client closes its
    connections, "Error receiving network data closing socket"; that is its log, not a crash.)
    """
    assert "kbridge/__main__.py" not in out, out


@pytest.fixture(scope="module")
def run(kbridge_kafka: KafkaService) -> Iterator[Run]:
    yield Run(uuid.uuid4().hex[:8], kbridge_kafka)


def test_replay_writes_only_to_routed_topics_and_skips_the_rest_once(run: Run) -> None:
    dlq, other = run.topic("orders.dlq"), run.topic("other")
    create_topics(run.bootstrap, [run.orders, dlq, other])
    run.letter(dlq, b"evil-offsets", "__consumer_offsets")
    run.letter(dlq, b"evil-transactions", "__transaction_state")
    run.letter(dlq, b"evil-unrouted", other)  # exists in Kafka, but this app does not route it
    run.letter(dlq, b"evil-illegal", "no such/topic!")
    run.letter(dlq, b"evil-binary", b"\xff\xfe")
    run.letter(dlq, b"anonymous", None)
    run.letter(dlq, b"good", run.orders, extra=(("trace", b"t-1"),))

    code, out = run.replay(dlq)
    print(out)
    assert code == 3, out  # done, with letters skipped
    assert f"replayed 1 message(s) from {dlq} ({run.orders}: 1); skipped 6" in out
    assert "2 illegal topic name, 2 internal Kafka topic, 1 no origin header, 1 not routed by this app" in out
    assert_no_crash(out)
    for offset, why in [(0, "internal to Kafka"), (1, "internal to Kafka"), (2, "is not a topic this app routes"),
                        (3, "is invalid"), (4, "is not UTF-8"), (5, "has no kbridge-origin-topic header")]:
        assert any(f"skipped dead letter {dlq}-0@{offset}: " in line and why in line for line in out.splitlines()), \
            (offset, why)

    back = read_topic(run.bootstrap, run.orders, 1)
    assert [r.value for r in back] == [b"good"]
    assert back[0].headers == [("trace", b"t-1"), ("kbridge-replays", b"1")]  # the other kbridge- headers dropped
    assert run.values(other, timeout=3) == []
    for internal in ("__consumer_offsets", "__transaction_state"):
        assert not [v for v in run.values(internal, timeout=3) if v and v.startswith(b"evil")], internal
    assert {tp.topic: o for tp, o in committed_offsets(run.bootstrap, run.replay_group).items()} == {dlq: 7}

    code, out = run.replay(dlq)  # committed past the skipped letters: nothing is met again
    assert code == 0, out
    assert f"nothing to replay in {dlq}" in out
    assert run.values(run.orders, expect=2, timeout=3) == [b"good"]


def test_replay_to_sends_every_letter_to_that_topic(run: Run) -> None:
    dlq, parking = run.topic("to.dlq"), run.topic("parking")
    create_topics(run.bootstrap, [dlq, parking])
    run.letter(dlq, b"a", "__consumer_offsets")
    run.letter(dlq, b"b", None)
    run.letter(dlq, b"c", run.orders)

    code, out = run.replay(dlq, "--to", parking)
    assert code == 0, out
    assert f"replayed 3 message(s) from {dlq} ({parking}: 3); skipped 0" in out
    assert run.values(parking, expect=3) == [b"a", b"b", b"c"]
    assert run.values(run.orders, expect=2, timeout=3) == [b"good"]  # only the first test's letter


@pytest.mark.parametrize(
    ("to", "why"),
    [("__consumer_offsets", "is internal to Kafka"), ("no such/topic!", "is invalid"),
     ("{dlq}", "is the dead-letter topic being replayed")],
)
def test_replay_to_refuses_internal_illegal_and_its_own_topic(run: Run, to: str, why: str) -> None:
    dlq = run.topic("refused.dlq")
    code, out = run.replay(dlq, "--to", to.format(dlq=dlq), timeout=60)
    assert code == 1, out
    assert "Error: refusing to replay: --to topic" in out and why in out
    assert_no_crash(out)


def test_replay_to_a_missing_topic_stops_before_reading(run: Run) -> None:
    dlq = run.topic("missing.dlq")
    create_topics(run.bootstrap, [dlq])
    run.letter(dlq, b"x", run.orders)
    code, out = run.replay(dlq, "--to", run.topic("nowhere"))
    assert code == 1 and "does not exist in Kafka; create it first" in out, out
    assert dlq not in {tp.topic for tp in committed_offsets(run.bootstrap, run.replay_group)}


def test_replay_through_a_topic_mapper_compares_kafka_names(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    """Origin headers hold Kafka names: with PrefixMapper('<run>-p.'), <run>-p.<run>.orders is routed,
    and the logical name <run>.orders is not (it is another Kafka topic)."""
    prefix = f"{run.run}-p."
    app = make_app(run.run, run.bootstrap, prefix=prefix)
    mapped = f"{prefix}{run.orders}"
    dlq = f"{mapped}.dlq"
    create_topics(run.bootstrap, [mapped, dlq])
    run.letter(dlq, b"logical", run.orders)
    run.letter(dlq, b"mapped", mapped)
    with caplog.at_level(logging.WARNING, logger="kbridge.replay"):
        result = CliRunner().invoke(kbridge_cli, ["dlq", "replay", dlq], obj=app)
    assert result.exit_code == 3, result.output
    assert f"replayed 1 message(s) from {dlq} ({mapped}: 1); skipped 1 (1 not routed by this app" in result.output
    assert any(f"{dlq}-0@0" in r.getMessage() and f"routed: {mapped}" in r.getMessage() for r in caplog.records)
    assert run.values(mapped) == [b"mapped"]


def test_interrupted_replay_prints_its_counts_and_keeps_its_progress(run: Run) -> None:
    dlq = run.topic("interrupted.dlq")
    create_topics(run.bootstrap, [dlq])
    for i in range(3):
        run.letter(dlq, f"i-{i}".encode(), run.orders)
    run.letter(dlq, b"evil", "__consumer_offsets")
    cmd = processes.Process(
        "replay", [sys.executable, "-m", "kbridge", "dlq", "replay", dlq, "--follow", "--app", APP],
        processes.child_env(run.env),
    ).start()
    try:
        # Committed as it goes; with --follow it then waits for more, until interrupted.
        wait_until(lambda: {tp.topic: o for tp, o in committed_offsets(run.bootstrap, run.replay_group).items()}
                   .get(dlq) == 4, 60, what="the replay's commit", alive=[cmd])
        cmd.signal(signal.SIGINT)
        code = cmd.wait(30)
    finally:
        cmd.kill_group()
    out = cmd.log()
    assert code == 130, out
    assert f"interrupted: replayed 3 message(s) from {dlq} ({run.orders}: 3); skipped 1" in out
    assert_no_crash(out)


def test_replay_and_show_of_an_empty_topic_end_at_once(run: Run) -> None:
    dlq = run.topic("empty.dlq")
    create_topics(run.bootstrap, [dlq])
    started = time.monotonic()
    code, out = run.replay(dlq)
    took = time.monotonic() - started
    print(f"replay of an empty topic: {took:.1f}s")
    assert code == 0 and f"nothing to replay in {dlq}" in out, out
    assert took < 15, took  # no group join, no idle wait: one fetch finds the end (plus the interpreter's start)
    code, out = run.show(dlq)
    assert code == 0 and f"no dead letters in {dlq}" in out, out
    code, out = run.show(dlq, "--json")
    assert code == 0 and json.loads(out[out.index("["):]) == [], out

    code, out = run.show(run.topic("missing.nothing"))
    assert code == 1 and "does not exist in Kafka" in out, out


def test_replay_reads_to_the_fetch_high_watermark_of_a_multi_record_batch(run: Run) -> None:
    """Tansu answers ListOffsets(LATEST) with the last batch's base offset + 1 (1 for one batch of 40)."""
    dlq = run.topic("batch.dlq")
    create_topics(run.bootstrap, [dlq])
    with contextlib.suppress(TopicAlreadyExistsError):  # made by an earlier test of this module
        create_topics(run.bootstrap, [run.orders])
    produce(run.bootstrap, dlq, [f"b-{i}".encode() for i in range(40)],
            headers=[(ORIGIN_TOPIC, run.orders.encode())])
    produce(run.bootstrap, dlq, [b"ok \x1b[31m\n", b"\xff\xfe\x00"], headers=[(ORIGIN_TOPIC, b"elsewhere")])
    code, out = run.show(dlq, "--offset", "39")
    print(out)
    assert code == 0 and f"{dlq}: 3 letter(s)" in out, out
    assert "ok \\x1b[31m\\n (9 B)" in out and "hex ff fe 00 (3 B)" in out and "\x1b" not in out, out
    code, out = run.replay(dlq)
    assert code == 3 and f"replayed 40 message(s) from {dlq} ({run.orders}: 40); skipped 2" in out, out
    assert {tp.topic: o for tp, o in committed_offsets(run.bootstrap, run.replay_group).items()}[dlq] == 42


def test_replay_of_a_poison_message_with_a_running_listener_ends_and_then_skips_it(kbridge_kafka: KafkaService) -> None:
    """The poison loop: replay sends the letter back, the listener dead-letters it again. Each replay ends at
    the end it saw when it started, and once the letter has been replayed --max-replays times it is skipped."""
    run = Run(uuid.uuid4().hex[:8], kbridge_kafka)  # its own orders topic, which the listener reads whole
    orders, dlq = run.orders, f"{run.orders}.dlq"
    create_topics(run.bootstrap, [orders, dlq])
    listener = processes.listener(APP, run.env).start()
    try:
        produce(run.bootstrap, orders, [b"poison", b"fine"])
        wait_until(lambda: len(run.values(dlq, expect=1, timeout=1)) == 1, 90, what="the first dead letter",
                   alive=[listener])

        for expect in (2, 3, None):
            started = time.monotonic()
            code, out = run.replay(dlq, "--max-replays", "2")
            print(f"\n[poison-loop] replay exited {code} after {time.monotonic() - started:.1f}s: "
                  f"{out.strip().splitlines()[-1]}")
            if expect is None:
                break
            assert code == 0 and f"replayed 1 message(s) from {dlq} ({orders}: 1); skipped 0" in out, out
            wait_until(lambda n=expect: len(run.values(dlq, expect=n, timeout=1)) == n, 60,
                       what=f"dead letter {expect}", alive=[listener])
        assert code == 3, out
        assert f"replayed 0 message(s) from {dlq}; skipped 1 (1 replayed too often;" in out, out
        assert f"skipped dead letter {dlq}-0@2: it was replayed 2 time(s) already" in out, out
        assert_no_crash(out)

        code, out = run.show(dlq)
        print(out)
        assert code == 0, out
        rows = [line.split() for line in out.splitlines() if line.strip().startswith("0 ")]
        assert [(r[1], r[2], r[3], r[-5]) for r in rows] == [  # r[-5]: replays
            ("0", f"{orders}-0@0", "ValueError:", "0"), ("1", f"{orders}-0@2", "ValueError:", "1"),
            ("2", f"{orders}-0@3", "ValueError:", "2")], out
        assert "poison (6 B)" in out

        code, out = run.show(dlq, "--json", "--offset", "2")
        letters = json.loads(out[out.index("["):])
        assert [(x["offset"], x["replays"], x["origin"], x["error_class"]) for x in letters] == [
            (2, 2, f"{orders}-0@3", "ValueError")]
        assert letters[0]["error_message"] == "poison: this payload never works"
        assert (letters[0]["payload"], letters[0]["payload_bytes"], letters[0]["attempts"]) == ("poison", 6, 1)
    finally:
        listener.stop()
    assert run.values(orders, expect=4, timeout=3) == [b"poison", b"fine", b"poison", b"poison"]
