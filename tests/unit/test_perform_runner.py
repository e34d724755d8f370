from __future__ import annotations

import logging

import pytest

from kbridge import BaseConsumer, KBridge
from kbridge.backends.inline import InlineScheduler
from kbridge.params import Params, ParamsBatch
from kbridge.perform import (
    ContextStage,
    DeadLettered,
    Job,
    Performed,
    PerformRunner,
    ReentrancyStage,
    backoff,
    build_runner,
    should_retry,
)


class Boom(Exception):
    pass


class Recording(BaseConsumer):
    fail_with: BaseException | None = None
    after_failure_raises = False

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.events: list[object] = []

    def perform(self) -> None:
        self.events.append("perform")
        if self.fail_with is not None:
            raise self.fail_with

    def after_failure(self, exc: BaseException) -> None:
        self.events.append(("after_failure", exc))
        if self.after_failure_raises:
            raise RuntimeError("hook broke")


def consumer(**attrs: object) -> Job:
    app = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"})
    cls = type("Rec", (Recording,), attrs)
    route = app.topic("t", consumer=cls)
    return Job(route, ParamsBatch([Params(topic="t", partition=0, offset=0, raw_payload=b"{}")]))


def run(job: Job, hooks: list = []) -> Recording:  # type: ignore[type-arg]  # noqa: B006
    """after_failure inside the hooks, as every runner orders them; no policy, so a failure propagates."""
    try:
        PerformRunner([ContextStage(hooks), ReentrancyStage()]).attempt(job)
    finally:
        run.last = job.consumer  # type: ignore[attr-defined]
    return job.consumer  # type: ignore[return-value]


def test_success_runs_perform_without_after_failure() -> None:
    c = run(consumer())
    assert c.events == ["perform"]


def test_failure_calls_after_failure_with_the_error_then_reraises() -> None:
    err = Boom("nope")
    with pytest.raises(Boom) as info:
        run(consumer(fail_with=err))
    assert info.value is err
    assert run.last.events == ["perform", ("after_failure", err)]  # type: ignore[attr-defined]


def test_base_exceptions_reach_after_failure_too() -> None:
    err = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run(consumer(fail_with=err))
    c = run.last  # type: ignore[attr-defined]
    assert c.events == ["perform", ("after_failure", err)]


def test_raising_after_failure_does_not_hide_the_original_error(caplog: pytest.LogCaptureFixture) -> None:
    err = Boom("original")
    with caplog.at_level(logging.ERROR, logger="kbridge.perform"), pytest.raises(Boom) as info:
        run(consumer(fail_with=err, after_failure_raises=True))
    assert info.value is err
    assert "after_failure raised" in caplog.text and "hook broke" in caplog.text


# -- the retry policy shared by every backend -------------------------------------------


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, BaseException, int, str]] = []

    def send(self, topic: str, params: Params, error: BaseException, attempts: int, group_id: str) -> None:
        self.sent.append((topic, params.offset, error, attempts, group_id))


def inline_route(cls: type[BaseConsumer], **options: object):
    app = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"})
    return app.topic("t", consumer=cls, retry_backoff=0.001, retry_backoff_max=0.002, **options)


def one_message() -> ParamsBatch:
    return ParamsBatch([Params(topic="t", partition=0, offset=5, raw_payload=b"{}")])


def run_inline(route, batch: ParamsBatch, dead: FakeDeadLetters) -> int:  # type: ignore[no-untyped-def]
    """The inline backend's runner and scheduler (sleeping between attempts); the number of attempts made."""
    outcome = build_runner(dead, enforce_timeout=True).run(Job(route, batch), InlineScheduler())
    assert isinstance(outcome, (Performed, DeadLettered))
    return outcome.attempts


def test_backoff_is_exponential_with_equal_jitter_and_capped() -> None:
    route = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"}).topic(
        "t", consumer=Recording, retry_backoff=2, retry_backoff_max=10
    )
    for retries_done, ceiling in [(0, 2), (1, 4), (2, 8), (3, 10), (9, 10)]:
        for _ in range(20):
            assert ceiling / 2 <= backoff(route.retry_backoff, route.retry_backoff_max, retries_done) <= ceiling


def test_should_retry_until_max_retries_but_never_unreadable_payloads() -> None:
    from kbridge.errors import DeserializationError

    route = inline_route(Recording, max_retries=2)
    assert should_retry(route.max_retries, Boom(), 0) and should_retry(route.max_retries, Boom(), 1)
    assert not should_retry(route.max_retries, Boom(), 2)
    assert not should_retry(route.max_retries, DeserializationError("bad"), 0)


def test_run_inline_retries_then_succeeds() -> None:
    class Flaky(BaseConsumer):
        failures = 2
        seen: list[object] = []

        def perform(self) -> None:
            if Flaky.failures:
                Flaky.failures -= 1
                raise Boom("flaky")

        def after_failure(self, exc: BaseException) -> None:
            Flaky.seen.append(exc)

    dead = FakeDeadLetters()
    assert run_inline(inline_route(Flaky, max_retries=3), one_message(), dead) == 3
    assert len(Flaky.seen) == 2 and dead.sent == []


def test_run_inline_dead_letters_after_the_last_retry() -> None:
    class Broken(BaseConsumer):
        def perform(self) -> None:
            raise Boom("always")

    dead = FakeDeadLetters()
    assert run_inline(inline_route(Broken, max_retries=1), one_message(), dead) == 2
    [(topic, offset, error, attempts, group_id)] = dead.sent
    assert (topic, offset, str(error), attempts, group_id) == ("t.dlq", 5, "always", 2, "c_t")


@pytest.mark.timeout(10)
def test_run_inline_enforces_the_timeout_and_calls_after_failure() -> None:
    import time

    from kbridge.errors import PerformTimeout

    class Slow(BaseConsumer):
        seen: list[BaseException] = []

        def perform(self) -> None:
            end = time.monotonic() + 3
            while time.monotonic() < end:  # pure Python: interruptible
                pass

        def after_failure(self, exc: BaseException) -> None:
            Slow.seen.append(exc)

    dead = FakeDeadLetters()
    started = time.monotonic()
    run_inline(inline_route(Slow, max_retries=0, timeout=0.05), one_message(), dead)
    assert time.monotonic() - started < 2
    assert [type(e) for e in Slow.seen] == [PerformTimeout]
    assert [type(e) for _, _, e, _, _ in dead.sent] == [PerformTimeout]


def test_perform_hooks_wrap_perform_outermost_first_and_see_failures() -> None:
    from contextlib import contextmanager

    events: list[str] = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        @contextmanager
        def cm(consumer):  # type: ignore[no-untyped-def]
            events.append(f"enter {name}")
            try:
                yield
            finally:
                events.append(f"exit {name}")
        return cm

    class Boom(BaseConsumer):
        def perform(self) -> None:
            events.append("perform")
            raise ValueError("boom")

        def after_failure(self, exc: BaseException) -> None:
            events.append(f"after_failure {exc}")

    app = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"})
    job = Job(app.topic("t", consumer=Boom), one_message())
    with pytest.raises(ValueError):
        run(job, [hook("outer"), hook("inner")])
    assert events == ["enter outer", "enter inner", "perform", "after_failure boom", "exit inner", "exit outer"]
