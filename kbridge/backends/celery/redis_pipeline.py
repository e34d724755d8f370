"""The fast path to a Redis broker: a poll batch as a stream of scripts, each an LPUSH of CHUNK tasks.

Each entry is the Celery protocol-2 message that kombu's Redis transport itself
stores for `apply_async` (JSON body, base64-encoded, headers and properties as
Celery writes them), so an unmodified `celery worker` consumes it. Building it
here skips kombu's per-message publish round trip; a script's success is the
broker's confirmation of its tasks. The scripts go out on one connection before any reply
is read, so Redis runs one while the next is built. Each task also gets a ledger entry
(see ledger.py), written by the same script as its LPUSH.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

from . import ledger

if TYPE_CHECKING:
    from celery import Celery

# entry -> (task name, shadow, args, time limit, soft time limit) of the task rebuilt from Kafka, or None when
# it cannot be rebuilt now
Rebuild = Callable[[ledger.Entry], "tuple[str, str, list[Any], float, float] | None"]

CHUNK = 250  # tasks per RECORD script: small enough that Redis runs one while the listener builds the next
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
_PLAIN = re.compile(r"[^\"\\\x00-\x1f\x7f-\uffff]*")  # needs no escaping inside a JSON string


def _dumps_body_std(value: Any) -> bytes:
    return _dumps(value).encode("utf-8")


try:  # orjson, when installed, encodes the task body (the payloads) several times faster
    import orjson

    dumps_body: Callable[[Any], bytes] = orjson.dumps
except ImportError:  # pragma: no cover - the standard encoder gives the same JSON values
    dumps_body = _dumps_body_std


def encode(message: dict[str, Any]) -> str:
    """A message as kombu's Redis transport stores it."""
    return _dumps(message)


class PublishError(Exception):
    """A publish that failed after Redis confirmed its first `confirmed` messages (whole tasks)."""

    def __init__(self, confirmed: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.confirmed = confirmed


def _connection(pool: redis.ConnectionPool) -> Any:
    """One connection of the pool to stream on (redis-py before 5.3 wants a command name)."""
    try:
        return pool.get_connection()
    except TypeError:
        return pool.get_connection("EVAL")


def supports(celery_app: Celery, queue: str) -> bool:
    """Only plain Redis URLs and queues reached by a direct route; anything else takes the kombu path."""
    conf = celery_app.conf
    url = conf.broker_write_url or conf.broker_url or ""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://")) or ";" in url:
        return False
    if conf.broker_use_ssl or conf.task_routes or (conf.broker_transport_options or {}).get("global_keyprefix"):
        return False
    known = celery_app.amqp.queues.get(queue)
    return known is None or (known.exchange is not None and known.exchange.type == "direct")


class RedisPipelinePublisher:
    def __init__(self, celery_app: Celery, redelivery_after: float, rebuild: Rebuild | None = None) -> None:
        conf = celery_app.conf
        self.client = redis.Redis.from_url(conf.broker_write_url or conf.broker_url)
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.reply_to = str(uuid.uuid4())
        self._id_prefix = f"{uuid.uuid4().hex[:14]}-"  # 56 random bits, then a counter: short, as it is stored 5 times
        self._counter = itertools.count()
        self._record = self.client.register_script(ledger.RECORD)
        self._templates: dict[tuple[str, str, str, float, float], Template] = {}
        self._argsrepr_heads: dict[tuple[str, str, int], str] = {}
        self.rebuild = rebuild
        options = conf.broker_transport_options or {}
        self.reapers: dict[str, ledger.Reaper] = {}
        self._reaper_args = (redelivery_after, options.get("unacked_key", ledger.UNACKED_KEY))

    def publish(
        self, task_name: str, queue: str, shadow: str, argsets: Sequence[list[Any]],
        time_limit: float, soft_time_limit: float, headers: Sequence[dict[str, str]] | None = None,
        also: Callable[[Any], None] | None = None,
    ) -> None:
        """LPUSH one task message per argset, each with its ledger entry, in atomic scripts of CHUNK tasks.

        The scripts stream on one connection: Redis runs one while the next is built, and the replies are read
        at the end. Raises PublishError, saying how many leading messages Redis confirmed, if any script fails.
        also(pipe) adds commands to the same MULTI/EXEC as one script for the whole call (an ordered route's
        registration).
        """
        if queue not in self.reapers:
            self.reapers[queue] = ledger.Reaper(self.client, queue, self._reaper_args[0],
                                                lambda e, t: self._requeue(queue, e, t), self._reaper_args[1])
        keys = ledger.keys(queue)
        if also is not None:
            try:
                pipe = self.client.pipeline(transaction=True)
                also(pipe)
                self._record(keys=keys, args=self._chunk(task_name, queue, shadow, argsets, time_limit,
                                                         soft_time_limit, headers), client=pipe)
                pipe.execute()
            except Exception as exc:
                raise PublishError(0, exc) from exc
            return
        pool = self.client.connection_pool
        connection = _connection(pool)
        sent: list[int] = []  # messages per script sent
        confirmed = 0
        try:
            connection.check_health()  # here, never between scripts: its PING would read a script's reply
            try:
                for start in range(0, len(argsets), CHUNK):
                    part = argsets[start:start + CHUNK]
                    argv = self._chunk(task_name, queue, shadow, part, time_limit, soft_time_limit,
                                       headers[start:start + CHUNK] if headers else None)
                    connection.send_command("EVAL", ledger.RECORD, len(keys), *keys, *argv, check_health=False)
                    sent.append(sum(len(args[1]) for args in part))
            finally:
                # the scripts sent run whatever stopped the sending: read what they did
                for count in sent:
                    connection.read_response()
                    confirmed += count
        except Exception as exc:
            connection.disconnect()  # replies may be left unread on it
            raise PublishError(confirmed, exc) from exc
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def _chunk(
        self, task_name: str, queue: str, shadow: str, argsets: Sequence[list[Any]], time_limit: float,
        soft_time_limit: float, headers: Sequence[dict[str, str]] | None,
    ) -> list[str]:
        """The RECORD script's arguments for these tasks: their messages, ledger entries and places."""
        messages: list[str] = []
        entries: list[str] = []
        places: dict[str, str] = {}
        for i, args in enumerate(argsets):
            task_id = self.next_id()
            messages.append(self.message(task_id, task_name, queue, shadow, args, time_limit, soft_time_limit,
                                          headers[i] if headers else None))
            entries.append(ledger.entry(task_id, args[0], args[1]))
            first = args[1][0]
            where = ledger.place(args[0], first["topic"], first["partition"])
            places[ledger.place_code(where)] = where
        return self._argv("", places, messages, entries)

    @staticmethod
    def _argv(drop: str, places: dict[str, str], messages: list[str], entries: list[str]) -> list[str]:
        return [drop, str(len(places)), *(x for pair in places.items() for x in pair), *messages, *entries]

    def _requeue(self, queue: str, entry: ledger.Entry, old: str) -> bool:
        """Rebuild a lost task from Kafka and queue it again under its own id, with its entry re-ranked."""
        if self.rebuild is None:
            return False
        rebuilt = self.rebuild(entry)
        if rebuilt is None:
            return False
        task_name, shadow, args, time_limit, soft_time_limit = rebuilt
        message = self.message(entry.task_id, task_name, queue, shadow, args, time_limit, soft_time_limit)
        first = args[1][0]
        where = ledger.place(args[0], first["topic"], first["partition"])
        self._record(keys=ledger.keys(queue), args=self._argv(
            old, {ledger.place_code(where): where}, [message], [ledger.entry(entry.task_id, args[0], args[1])]))
        return True

    def next_id(self) -> str:
        """Unique task ids without a uuid4 (an os.urandom call) per message: a random prefix and a counter."""
        return f"{self._id_prefix}{next(self._counter):09x}"

    def reap(self) -> int:
        """Re-queue tasks the broker lost between delivery and unacked bookkeeping."""
        return sum(reaper.reap() for reaper in self.reapers.values())

    def message(
        self, task_id: str, task_name: str, queue: str, shadow: str, args: list[Any], time_limit: float,
        soft_time_limit: float, extra: dict[str, Any] | None = None,
    ) -> str:
        """The task message as JSON text: the constant envelope of its queue, route and limits, rendered once,
        with the task's id, encoded body and argsrepr put in its slots. Nothing is encoded twice.
        extra: task headers of this message alone (trace context, retries); such a message is encoded whole."""
        key = (task_name, queue, shadow, time_limit, soft_time_limit)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) > 1000:
                self._templates.clear()
            template = self._templates[key] = Template(
                _dumps(self._envelope(_slot("id"), task_name, queue, shadow, _slot("body"), _slot("argsrepr"),
                                      time_limit, soft_time_limit)))
        body = base64.b64encode(dumps_body([args, {}, _EMBED])).decode("ascii")
        if extra:
            envelope = self._envelope(task_id, task_name, queue, shadow, body, _argsrepr(args), time_limit,
                                      soft_time_limit)
            envelope["headers"].update(extra)
            return _dumps(envelope)
        return template.render({"id": task_id, "body": body, "argsrepr": self._argsrepr_text(args)})

    def _argsrepr_text(self, args: list[Any]) -> str:
        """_argsrepr(args) as JSON string text; for one message, its offset after a head kept per partition."""
        route_id, messages = args
        if len(messages) != 1:
            return _json_text(_argsrepr(args))
        message = messages[0]
        key = (route_id, message["topic"], message["partition"])
        head = self._argsrepr_heads.get(key)
        if head is None:
            if len(self._argsrepr_heads) > 10_000:
                self._argsrepr_heads.clear()
            head = self._argsrepr_heads[key] = _json_text(
                f"[{route_id!r}, <1 message(s) {message['topic']}-{message['partition']}@")
        return f"{head}{message['offset']}>]"

    def _envelope(
        self, task_id: str, task_name: str, queue: str, shadow: str, body: str, argsrepr: str, time_limit: float,
        soft_time_limit: float,
    ) -> dict[str, Any]:
        """What kombu's Redis transport stores for apply_async: the one place the envelope's shape is defined."""
        return {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": task_name,
                "id": task_id,
                "shadow": shadow,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [time_limit, soft_time_limit],
                "root_id": task_id,
                "parent_id": None,
                "argsrepr": argsrepr,
                "kwargsrepr": "{}",
                "origin": self.origin,
                "ignore_result": False,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
                ledger.HEADER: queue,
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": self.reply_to,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": task_id,  # unique per message; kombu gives retries tags of their own
            },
        }


def _slot(name: str) -> str:
    return f"\x00{name}\x00"


class Template:
    """JSON text with named slots (strings rendered by _slot) to fill with JSON-safe text."""

    def __init__(self, text: str) -> None:
        parts: list[str] = re.split(r"\\u0000(\w+)\\u0000", text)
        positions: dict[str, list[int]] = {}
        for index in range(1, len(parts), 2):
            positions.setdefault(parts[index], []).append(index)
        self._parts = parts
        self._positions = [(name, tuple(at)) for name, at in positions.items()]

    def render(self, values: dict[str, str]) -> str:
        out = self._parts.copy()
        for name, positions in self._positions:
            value = values[name]
            for index in positions:
                out[index] = value
        return "".join(out)


def _json_text(text: str) -> str:
    """text as it stands inside a JSON string."""
    return text if _PLAIN.fullmatch(text) else _dumps(text)[1:-1]


def _argsrepr(args: list[Any]) -> str:
    """Short and cheap: the route and the message positions, not the payloads."""
    route_id, messages = args
    if not messages:
        return f"[{route_id!r}, []]"
    first, last = messages[0], messages[-1]
    span = f"{first['offset']}" if len(messages) == 1 else f"{first['offset']}..{last['offset']}"
    return f"[{route_id!r}, <{len(messages)} message(s) {first['topic']}-{first['partition']}@{span}>]"
