"""Header names that are not UTF-8, as Kafka allows and kafka-python's producer cannot otherwise write."""

from __future__ import annotations


class RawName(str):
    """A header name that kafka-python's record builder writes as these exact bytes, UTF-8 or not."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw
