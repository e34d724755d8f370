"""The Redis fast path's task message: rendered from a template once per route, it must equal the envelope encoded
in full, whatever the payload holds; and the ledger entry the worker computes must equal the listener's."""

from __future__ import annotations

import base64
import json

from celery import Celery

from kbridge.backends.celery import ledger
from kbridge.backends.celery.redis_pipeline import RedisPipelinePublisher
from kbridge.interchange import to_wire
from kbridge.params import Params


def test_rendered_message_is_the_full_envelope() -> None:
    publisher = RedisPipelinePublisher(Celery("t", broker="redis://127.0.0.1:1/0"), 60)
    tricky = '{"q": "a \\"quoted\\" {brace}", "u": "h\u00e9 \u2603", "nl": "\\n"}'.encode()
    for raw in (b"{}", tricky, b"\xff\xfe binary"):
        args = ["g_t/t", [to_wire(Params(topic="t", partition=2, offset=9, raw_payload=raw, key=b'k"{'))]]
        text = publisher.message("task-1", "kbridge.perform", "q", "g/t", args, 70.0, 60.0)
        message = json.loads(text)
        body = message["body"]
        assert message == publisher._envelope("task-1", "kbridge.perform", "q", "g/t", body,
                                              message["headers"]["argsrepr"], 70.0, 60.0)
        assert json.loads(base64.b64decode(body)) == [args, {}, {"callbacks": None, "errbacks": None,
                                                                 "chain": None, "chord": None}]
        assert message["headers"]["argsrepr"] == "['g_t/t', <1 message(s) t-2@9>]"
        assert [message["headers"][k] for k in ("id", "root_id")] == ["task-1"] * 2
        assert message["properties"]["delivery_tag"] == message["properties"]["correlation_id"] == "task-1"


def test_entries_name_offset_runs_and_the_worker_computes_the_same() -> None:
    messages = [to_wire(Params(topic="t", partition=1, offset=o, raw_payload=b"{}")) for o in (3, 4, 5, 8, 10, 11)]
    text = ledger.entry("id-1", "g_t/t", messages)
    code = ledger.place_code(ledger.place("g_t/t", "t", 1))
    assert text == f"id-1 {code} 3-5,8,10-11" and len(code) == 12
    assert ledger.entry_of_task("id-1", ["g_t/t", messages]) == text
    places = {code: "g_t/t t 1"}
    assert ledger.Entry.decode(text, places) == ledger.Entry("id-1", "g_t/t", "t", 1, (3, 4, 5, 8, 10, 11))
    assert ledger.Entry.decode(text, {}) is None, "an unknown place cannot be rebuilt"
    assert ledger.entry_of_task("id-1", ["g_t/t", []]) is None
    assert ledger.entry_of_task("id-1", "forged") is None
    assert ledger.entry_of_task("id-1", ["g_t/t", [{"no": "offset"}]]) is None
    assert ledger.Entry.decode("too few", places) is None


def test_a_message_with_headers_of_its_own_carries_them() -> None:
    publisher = RedisPipelinePublisher(Celery("t", broker="redis://127.0.0.1:1/0"), 60)
    args = ["g_t/t", [to_wire(Params(topic="t", partition=0, offset=1, raw_payload=b"{}"))]]
    plain = json.loads(publisher.message("task-1", "kbridge.perform", "q", "g/t", args, 70.0, 60.0))
    traced = json.loads(publisher.message("task-1", "kbridge.perform", "q", "g/t", args, 70.0, 60.0,
                                           {"traceparent": "00-abc-def-01"}))
    assert traced["headers"] == {**plain["headers"], "traceparent": "00-abc-def-01"}
    assert {k: v for k, v in traced.items() if k != "headers"} == {k: v for k, v in plain.items() if k != "headers"}


def test_argsrepr_kept_per_partition_reads_as_written_in_full() -> None:
    from kbridge.backends.celery.redis_pipeline import _argsrepr, _json_text

    publisher = RedisPipelinePublisher(Celery("t", broker="redis://127.0.0.1:1/0"), 60)
    for offset in (9, 10, 123456789):
        for topic in ("t", "t.with-dots_and-dashes"):
            args = ["g_t/t", [to_wire(Params(topic=topic, partition=2, offset=offset, raw_payload=b"{}"))]]
            assert publisher._argsrepr_text(args) == _json_text(_argsrepr(args))
    two = ["g_t/t", [to_wire(Params(topic="t", partition=2, offset=o, raw_payload=b"{}")) for o in (1, 2)]]
    assert publisher._argsrepr_text(two) == "['g_t/t', <2 message(s) t-2@1..2>]"
