"""`kbridge dlq show` without a broker: what a letter's fields look like once made safe to print."""

from __future__ import annotations

from types import SimpleNamespace

from kbridge.dlq import REPLAYS, dead_letter_headers
from kbridge.dlq_show import letter_of, preview, visible
from kbridge.params import Params


def test_control_characters_are_made_visible_and_long_text_is_cut() -> None:
    assert visible("a\nb\x1b[31mred\x07", 100) == "a\\nb\\x1b[31mred\\x07"
    assert visible("x" * 100, 10) == "x" * 9 + "…"


def test_preview_is_text_hex_or_null() -> None:
    assert preview(b'{"id": 1}') == ('{"id": 1}', "text")
    assert preview(b"\xff\xfe\x00\x01") == ("ff fe 00 01", "hex")
    assert preview(bytes(range(200, 256))) == (bytes(range(200, 224)).hex(" ") + "…", "hex")
    assert preview(None) == ("(null)", "null")


def test_a_letter_reads_its_headers_and_a_replayed_count_survives_another_dead_letter() -> None:
    original = Params(topic="orders", partition=2, offset=41, raw_payload=b"\x00bad",
                      headers=[("trace", b"t"), (REPLAYS, b"2"), ("kbridge-error-class", b"old")])
    headers = dead_letter_headers(original, ValueError("no\nway"), 4, "shop_orders")
    assert (REPLAYS, b"2") in headers and ("trace", b"t") in headers
    assert [v for k, v in headers if k == "kbridge-error-class"] == [b"builtins.ValueError"]  # the old one dropped
    record = SimpleNamespace(partition=0, offset=7, value=b"\x00bad", headers=headers)
    letter = letter_of(record)
    assert letter.origin == "orders-2@41"
    assert (letter.error_class, letter.error_message) == ("ValueError", "no\\nway")
    assert (letter.attempts, letter.replays, letter.payload, letter.payload_encoding) == (4, 2, "\\x00bad", "text")
    assert letter.payload_bytes == 4 and not letter.truncated


def test_a_letter_without_kbridge_headers_still_shows() -> None:
    letter = letter_of(SimpleNamespace(partition=1, offset=0, value=None, headers=[("kbridge-attempts", b"x")]))
    assert (letter.origin, letter.error_class, letter.attempts, letter.payload_bytes) == ("-", "", None, None)
