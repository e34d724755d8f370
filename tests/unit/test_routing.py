from __future__ import annotations

import pytest
from celery import Celery

from kbridge import BaseConsumer, KBridge
from kbridge.errors import ConfigError, UnknownRouteError
from kbridge.params import json_deserializer

KAFKA = {"bootstrap_servers": "x:1"}


class Users(BaseConsumer):
    def perform(self) -> None:
        pass


class NoPerform(BaseConsumer):
    pass


def inline_app() -> KBridge:
    return KBridge(client_id="shop", kafka=KAFKA)


def celery_app() -> KBridge:
    return KBridge(client_id="shop", kafka=KAFKA, celery=Celery("t", broker="memory://"))


def test_without_celery_the_default_backend_is_inline() -> None:
    app = inline_app()
    assert app.celery is None
    assert app.topic("users", consumer=Users).backend == "inline"


def test_with_celery_the_default_backend_is_celery() -> None:
    app = celery_app()
    assert app.topic("users", consumer=Users).backend == "celery"
    assert app.topic("audit", consumer=Users, backend="inline").backend == "inline"


def test_group_id_route_id_and_shadow() -> None:
    app = inline_app()
    with app.consumer_group("events") as group:
        users = group.topic("users", consumer=Users)
    assert group.id == "shop_events"
    assert users.group_id == "shop_events"
    assert users.route_id == "shop_events/users"
    assert users.shadow == "events/users"
    assert app.routes.find("shop_events/users") is users


def test_topic_defaults() -> None:
    t = inline_app().topic("users", consumer=Users)
    assert t.deserializer is json_deserializer
    assert (t.batch_consuming, t.queue, t.timeout, t.max_retries) == (False, None, 60.0, 3)
    assert t.dead_letter_topic == "users.dlq"
    assert t.start_from_beginning is True


def test_topic_shorthand_creates_a_group_named_after_the_topic() -> None:
    app = inline_app()
    audit = app.topic("audit", consumer=Users, timeout=5, max_retries=0)
    assert list(app.routes.groups) == ["audit"]
    assert app.routes.groups["audit"].id == "shop_audit"
    assert audit.route_id == "shop_audit/audit"
    assert (audit.timeout, audit.max_retries) == (5.0, 0)


def test_same_topic_in_two_groups_gives_two_routes() -> None:
    app = inline_app()
    app.consumer_group("a").topic("users", consumer=Users)
    app.consumer_group("b").topic("users", consumer=Users)
    assert sorted(r.route_id for r in app.routes) == ["shop_a/users", "shop_b/users"]


def test_duplicate_topic_in_a_group_is_a_config_error() -> None:
    group = inline_app().consumer_group("events")
    group.topic("users", consumer=Users)
    with pytest.raises(ConfigError, match="'users' is routed twice"):
        group.topic("users", consumer=Users)


def test_duplicate_group_is_a_config_error() -> None:
    app = inline_app()
    app.topic("users", consumer=Users)
    with pytest.raises(ConfigError, match="'users' is declared twice"):
        app.consumer_group("users")


def test_empty_group_block_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="routes no topic"):
        with inline_app().consumer_group("empty"):
            pass


@pytest.mark.parametrize("name", ["has space", "slash/y", "", "ünï", "x" * 250])
def test_invalid_group_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        inline_app().consumer_group(name)
    assert "consumer group name" in str(info.value)


@pytest.mark.parametrize("name", ["has space", "a/b", "x" * 250])
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        inline_app().consumer_group("g").topic(name, consumer=Users)
    assert "topic name" in str(info.value)


def test_every_bad_topic_option_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        inline_app().consumer_group("g").topic(
            "users", consumer=Users, colour="red", backend="sidekiq", timeout=-1, max_retries="x", deserializer=42
        )
    problems = info.value.problems
    assert len(problems) == 5, problems
    for needle in ("unknown option(s) colour", "backend 'sidekiq' is unknown", "timeout must be",
                   "max_retries must be", "deserializer must be"):
        assert sum(needle in p for p in problems) == 1, (needle, problems)
    assert all("topic 'users' in consumer group 'g'" in p for p in problems)
    assert "5 problem(s)" in str(info.value)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"consumer": None}, "consumer= is required"),
        ({"consumer": object}, "must be a BaseConsumer subclass"),
        ({"consumer": NoPerform}, "NoPerform does not implement perform()"),
        ({"consumer": Users, "batch_consuming": "yes"}, "batch_consuming must be True or False"),
        ({"consumer": Users, "queue": ""}, "queue must be a non-empty string"),
        ({"consumer": Users, "max_retries": True}, "max_retries"),
        ({"consumer": Users, "retry_backoff": 0}, "retry_backoff must be"),
        ({"consumer": Users, "dead_letter_topic": "bad dlq"}, "dead_letter_topic"),
    ],
)
def test_single_bad_option(options: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        inline_app().consumer_group("g").topic("users", **options)
    assert len(info.value.problems) == 1 and needle in info.value.problems[0]


def test_celery_backend_without_celery_app_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="backend 'celery' needs KBridge"):
        inline_app().topic("users", consumer=Users, backend="celery")


def test_find_unknown_route_names_it_and_the_known_ones() -> None:
    app = inline_app()
    app.topic("users", consumer=Users)
    with pytest.raises(UnknownRouteError) as info:
        app.routes.find("shop_evil/os.system")
    assert "'shop_evil/os.system'" in str(info.value)
    assert "shop_users/users" in str(info.value)


def test_select_all_by_default_and_named_groups_in_order() -> None:
    app = inline_app()
    for name in ("a", "b", "c"):
        app.topic(name, consumer=Users)
    assert [g.name for g in app.routes.select(None)] == ["a", "b", "c"]
    assert [g.name for g in app.routes.select(["c", "a"])] == ["c", "a"]


def test_select_lists_every_unknown_group() -> None:
    app = inline_app()
    app.topic("a", consumer=Users)
    with pytest.raises(ConfigError) as info:
        app.routes.select(["a", "nope", "zilch"])
    problems = info.value.problems
    assert len(problems) == 2
    assert "'nope'" in problems[0] and "'zilch'" in problems[1]
    assert all("this app has: a" in p for p in problems)


def test_app_settings_errors_surface_from_the_constructor() -> None:
    with pytest.raises(ConfigError) as info:
        KBridge(client_id="bad id", kafka={}, shutdown_timeout=-1)
    assert len(info.value.problems) == 3


def test_rejected_topic_shorthand_leaves_no_group_behind() -> None:
    app = inline_app()
    with pytest.raises(ConfigError):
        app.topic("users", consumer=NoPerform)
    assert "users" not in app.routes.groups
    app.topic("users", consumer=Users)


def test_route_of_kafka_topic_resolves_as_a_listener_does_through_the_topic_mapper() -> None:
    from kbridge import BaseConsumer, KBridge, PrefixMapper
    from kbridge.routing.lookup import route_of_kafka_topic

    class Sink(BaseConsumer):
        def perform(self) -> None:
            return None

    app = KBridge(client_id="look", kafka={"bootstrap_servers": "x:1"}, topic_mapper=PrefixMapper("acme."))
    with app.consumer_group("tenants") as group:
        group.topic("tenant.special", consumer=Sink, backend="inline")
        wide = group.pattern("ten", r"tenant\.[a-z]+", consumer=Sink, backend="inline")
    groups, mapper = list(app.routes.groups.values()), app.settings.topic_mapper
    special = route_of_kafka_topic(groups, mapper, "acme.tenant.special")
    assert special is not None and special.name == "tenant.special"  # an exact route wins over the pattern
    assert route_of_kafka_topic(groups, mapper, "acme.tenant.bob") == wide
    for forged in ("tenant.bob", "acme.tenant.Bob", "acme.tenant.bob.dlq", "acme."):
        assert route_of_kafka_topic(groups, mapper, forged) is None, forged


def test_a_groups_memory_of_matched_topic_names_stays_bounded() -> None:
    from kbridge import BaseConsumer, KBridge
    from kbridge.routing import consumer_group

    class Sink(BaseConsumer):
        def perform(self) -> None:
            return None

    app = KBridge(client_id="bound", kafka={"bootstrap_servers": "x:1"})
    with app.consumer_group("many") as group:
        route = group.pattern("any", r"t\.\d+", consumer=Sink, backend="inline")
    for i in range(consumer_group.MATCHED_CACHE + 5):
        assert group.route_for(f"t.{i}") is route
    assert len(group._matched) <= consumer_group.MATCHED_CACHE


def test_a_name_a_custom_mapper_refuses_is_not_routed() -> None:
    from kbridge import BaseConsumer, KBridge
    from kbridge.routing.lookup import route_of_kafka_topic

    class Sink(BaseConsumer):
        def perform(self) -> None:
            return None

    class Strict:
        def incoming(self, topic: str) -> str:
            if not topic.startswith("x."):
                raise ValueError(f"{topic} is not one of ours")
            return topic[2:]

        def outgoing(self, topic: str) -> str:
            return f"x.{topic}"

    app = KBridge(client_id="strict", kafka={"bootstrap_servers": "x:1"}, topic_mapper=Strict())
    route = app.topic("orders", consumer=Sink, backend="inline")
    groups = list(app.routes.groups.values())
    assert route_of_kafka_topic(groups, app.settings.topic_mapper, "x.orders") == route
    assert route_of_kafka_topic(groups, app.settings.topic_mapper, "forged") is None
