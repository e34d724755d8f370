"""Two consumer groups routing the same topic share one inline backend, never its pending dead letters:
a letter pending for one group must not stand in for the other group's own perform()."""
from __future__ import annotations

import threading

from kbridge import BaseConsumer, KBridge
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.steps import Fetched
from kbridge.params import Params
from kbridge.runtime import Runtime

from .test_processor import TP, FakeKafkaConsumer


class Sink:
    def __init__(self): self.down, self.sent = False, []
    def send(self, topic, params, error, attempts, group_id):
        if self.down:
            raise ConnectionError("dead-letter produce not acknowledged")
        self.sent.append((topic, params.offset, str(error)))


performed_b: list[int] = []


class A(BaseConsumer):
    def perform(self): raise RuntimeError("A cannot handle it")


class B(BaseConsumer):
    def perform(self): performed_b.extend(p.offset for p in self.params_batch)


def test_second_group_skips_perform_because_of_first_groups_memo() -> None:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    with app.consumer_group("billing") as g:
        g.topic("users", consumer=A, backend="inline", max_retries=0)
    with app.consumer_group("mailing") as g:
        g.topic("users", consumer=B, backend="inline", max_retries=0)
    sink = Sink()
    runtime = Runtime.of(app, sink)  # one runtime per listener process, as listener.process builds it
    procs = {}
    for name in ("billing", "mailing"):
        p = GroupProcessor(runtime, app.routes.groups[name], threading.Event())
        p.consumer = FakeKafkaConsumer()
        p._backoff = lambda attempts: 0.0
        procs[name] = p

    msg = lambda: [Params(topic="users", partition=0, offset=5, raw_payload=b"{}")]
    sink.down = True
    procs["billing"]._take(Fetched(TP, messages=msg()))  # A fails; its letter is not taken; memo stored
    assert TP in procs["billing"]._held
    sink.down = False
    procs["mailing"]._take(Fetched(TP, messages=msg()))  # B's own, independent delivery of users-0@5
    print("B performed:", performed_b, "letters:", sink.sent)
    assert performed_b == [5], "B's perform() never ran: it took billing's pending dead letter instead"
