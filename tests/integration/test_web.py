"""kbridge web in headless Chromium against a real broker, Redis, two `kbridge listen` and a `celery worker`.

One set of services for the module; the tests run in order: overview (two listeners, one
after a kill -9), pause/resume with the lag chart, a poison letter replayed from the page,
and web_token. Screenshots go to /tmp/web-shots/.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from kbridge.testing import processes
from kbridge.testing.kafka import create_topics, produce, wait_until
from kbridge.testing.services import KafkaService, RedisService, free_port, wait_for_port

CHROMIUM = "/usr/bin/chromium"
APP = "tests.apps.web_app:app"
SHOTS = "/tmp/web-shots"
TOKEN = "a-web-token-of-32-characters-xyz"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (Debian package chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (dev extra)")


@dataclass
class Web:
    run: str
    kafka: KafkaService
    redis_url: str
    url: str
    listeners: list[processes.Process]
    worker: processes.Process
    server: processes.Process

    @property
    def topic(self) -> str:
        return f"{self.run}.orders"

    @property
    def group_id(self) -> str:
        return f"web-{self.run}_{self.topic}"

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def post(self, path: str, body: Any) -> Any:
        csrf = self.api("/api/csrf")["csrf"]
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def partitions(self) -> dict[int, dict[str, Any]]:
        groups = {g["group_id"]: g for g in self.api("/api/groups")}
        group = groups.get(self.group_id, {"partitions": []})
        return {p["partition"]: p for p in group["partitions"]}

    def count(self, name: str) -> int:
        return int(redis.Redis.from_url(self.redis_url).get(f"{self.run}:{name}") or 0)


def _env(run: str, kafka: KafkaService, redis_url: str) -> dict[str, str]:
    return {"WEB_RUN": run, "WEB_KAFKA": kafka.bootstrap, "WEB_REDIS": redis_url}


def _server(env: dict[str, str], port: int, name: str = "web") -> processes.Process:
    argv = [sys.executable, "-m", "kbridge", "web", "--app", APP, "--port", str(port)]
    proc = processes.Process(name, argv, processes.child_env(env)).start()
    wait_for_port(port, 30, proc.proc, name)
    return proc


@pytest.fixture(scope="module")
def web(kbridge_kafka: KafkaService, kbridge_redis: RedisService) -> Iterator[Web]:
    run = uuid.uuid4().hex[:8]
    env = _env(run, kbridge_kafka, kbridge_redis.url)
    create_topics(kbridge_kafka.bootstrap, [f"{run}.orders", f"{run}.orders.dlq"], partitions=3)
    started: list[processes.Process] = []
    try:
        worker = processes.celery_worker("tests.apps.web_app:celery_app", env, [f"kbridge-web-{run}"]).start()
        started.append(worker)
        listeners = [processes.listener(APP, env, name=f"listener-{i}").start() for i in range(2)]
        started.extend(listeners)
        port = free_port()
        server = _server(env, port)
        started.append(server)
        yield Web(run, kbridge_kafka, kbridge_redis.url, f"http://127.0.0.1:{port}", listeners, worker, server)
    finally:
        for proc in started:
            proc.stop(15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    os.makedirs(SHOTS, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


def _alive_rows(page: Any) -> int:
    return int(page.locator("#listeners tr.alive").count())


def test_overview_shows_two_listeners_then_one_after_kill_and_a_pause_survives_it(web: Web, page: Any) -> None:
    page.goto(web.url + "/")
    wait_until(lambda: _alive_rows(page) == 2, 90, what="two running listeners on the overview",
               alive=[*web.listeners, web.server])
    page.screenshot(path=f"{SHOTS}/overview-two-listeners.png", full_page=True)
    # pause partition 0, then kill -9 the listener that owns it: the pause must survive the rebalance
    wait_until(lambda: len(web.partitions()) == 3, 60, what="3 partitions reported")
    owner = web.partitions()[0]["listener"]
    victim = next(p for p in web.listeners if p.pid == int(owner.split(":")[1]))
    page.goto(web.url + "/groups")
    page.locator(f'tr[data-tp="{web.topic}-0"] button.pause').click()
    wait_until(lambda: web.partitions()[0]["state"] == "paused", 30, what="partition 0 paused from the page")
    page.goto(web.url + "/")
    web.listeners.remove(victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    wait_until(lambda: _alive_rows(page) == 1 and page.locator("#listeners tr.gone").count() == 1, 30,
               what="one running and one gone listener", alive=[web.server])
    page.screenshot(path=f"{SHOTS}/overview-one-gone.png", full_page=True)

    def moved_and_still_paused() -> bool:
        parts = web.partitions()
        return len(parts) == 3 and parts[0]["listener"] != owner and parts[0]["state"] == "paused"

    wait_until(moved_and_still_paused, 60, what="partition 0 owned by the survivor, still paused")


def test_pause_from_the_page_stops_a_partition_and_resume_drains_it(web: Web, page: Any) -> None:
    page.goto(web.url + "/groups")
    assert web.partitions()[0]["state"] == "paused"  # paused from the page in the test before, across the kill
    produce(web.kafka.bootstrap, web.topic, [b"{}"] * 300, keys=[str(i).encode() for i in range(300)])

    def others_drained() -> bool:
        parts = web.partitions()
        return (parts[0]["lag"] or 0) > 0 and all(parts[p]["lag"] == 0 for p in (1, 2))  # 0 paused, others drain

    try:
        wait_until(others_drained, 60, what="partitions 1 and 2 drained while 0 has lag")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {web.partitions()}") from None
    paused_lag = web.partitions()[0]["lag"]
    page.screenshot(path=f"{SHOTS}/groups-paused.png", full_page=True)
    page.locator(f'tr[data-tp="{web.topic}-0"] button.resume').click()
    wait_until(lambda: web.partitions()[0]["lag"] == 0 and web.partitions()[0]["state"] == "flowing", 60,
               what="partition 0 drained after resume")
    wait_until(lambda: web.count("performed") >= 300, 60, what="300 performs")
    chart = web.api(f"/api/groups/{web.group_id}/chart")
    series = dict(chart["lag"])[f"{web.topic}-0"]
    lags = [lag for _, lag in series]
    print(f"[web] paused partition lag {paused_lag}; chart max {max(lags)} last {lags[-1]}; "
          f"throughput points {len(chart['throughput'])}")
    assert max(lags) >= paused_lag > 0 and lags[-1] == 0  # the chart moved as the backlog drained
    page.wait_for_timeout(2500)  # one refresh draws the latest chart
    assert page.locator(f'svg.chart polyline[data-series="{web.topic}-0"]').count() == 1
    page.screenshot(path=f"{SHOTS}/groups-resumed-chart.png", full_page=True)


def test_poison_message_is_dead_lettered_replayed_from_the_page_and_performed(web: Web, page: Any) -> None:
    payload = b"poison <script>window.pwned = 1</script>"
    chosen = b"poison chosen"
    produce(web.kafka.bootstrap, web.topic, [payload, chosen])
    page.goto(web.url + "/dead-letters")

    def shown() -> bool:
        page.reload()
        page.wait_for_load_state("networkidle")
        return bool(page.locator("span.payload", has_text="<script>").count()
                    and page.locator("span.payload", has_text="poison chosen").count())

    def performed(letter: bytes) -> int:
        return web.count(f"performed-poison:{letter.decode()}")

    wait_until(shown, 60, interval=1.0, what="both poison letters on the dead-letters page")
    assert page.evaluate("window.pwned") is None  # shown as text, never run
    page.screenshot(path=f"{SHOTS}/dead-letters.png", full_page=True)
    assert web.count("performed-poison") == 0
    # replay a selection of one letter out of the two: only that one is sent
    page.locator("tr", has=page.locator("span.payload", has_text="poison chosen")).locator("input.pick").check()
    page.locator("button.replay-selected").first.click()
    page.wait_for_selector("#status:not(:empty)", timeout=60_000)  # the answer, or the error
    said = page.locator("#status").inner_text()
    assert said.startswith("replayed 1 message(s)") and said.endswith("skipped 0"), said
    wait_until(lambda: performed(chosen) == 1, 60, what="the chosen letter performed")
    assert performed(payload) == 0 and web.count("performed-poison") == 1
    # the replay group did not move: Replay all sends both, the chosen one a second time (docs/web.md)
    page.locator("button.replay-all").first.click()
    wait_until(lambda: performed(payload) == 1 and performed(chosen) == 2, 60,
               what="the other letter performed, and the chosen one again")
    page.goto(web.url + "/errors")
    page.wait_for_selector("#errors td:has-text('poison: refused the first time')", timeout=30_000)
    page.screenshot(path=f"{SHOTS}/errors.png", full_page=True)
    page.goto(web.url + "/routes")
    page.wait_for_selector(f"td:has-text('{web.topic}')", timeout=10_000)
    page.screenshot(path=f"{SHOTS}/routes.png", full_page=True)


def test_web_token_refuses_pages_and_api_without_it(web: Web, page: Any) -> None:
    port = free_port()
    env = {**_env(web.run, web.kafka, web.redis_url), "KBRIDGE_WEB_TOKEN": TOKEN}
    server = _server(env, port, "web-token")
    url = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/api/overview", timeout=10)
        assert refused.value.code == 401
        page.goto(url + "/groups")
        assert page.url.endswith("/login")
        assert "listener" not in page.content()
        page.fill("input[name=token]", "wrong-token-wrong-token")
        page.click("button[type=submit]")
        assert "not right" in page.content()
        page.screenshot(path=f"{SHOTS}/login-refused.png", full_page=True)
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("#listeners", timeout=15_000)
        # the cookie alone does not make a POST: it needs the page's CSRF token
        status = page.evaluate("""async () => (await fetch('/api/pause', {method: 'POST',
            body: JSON.stringify({group_id: 'x', topic: 'y', partition: 0})})).status""")
        assert status == 403
        request = urllib.request.Request(url + "/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["client_id"] == f"web-{web.run}"
        assert TOKEN not in server.log()
    finally:
        server.stop(10)
