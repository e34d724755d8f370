"""What to do about a partition the Kafka client could not decode (delivery rule 7).

A record kafka-python refuses while its batch can still be read (a header name that
is not UTF-8 is the common case: Kafka allows any bytes there) costs only itself: it
is dead-lettered with what can be had of it, and the records after it are handed over
as usual. A batch that cannot be read or trusted (a CRC that does not match, an
unknown codec or a missing codec library, data that does not decompress) holds its
partition: it is retried now and then, as a codec installed meanwhile or a corruption
in transit may clear, and nothing after it is skipped. Either way the other
partitions keep flowing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafka.errors import CorruptRecordError

from ..interchange import params_from_record
from ..params import Deserializer, Params
from .decoding import DecodeFailure
from .salvage import Unreadable, read_batch


@dataclass(frozen=True)
class Salvaged:
    """The failed batch, read by kbridge: hand it over in order, dead-lettering the refused records."""

    messages: list[Params]  # from the failure's offset to the end of its batch
    refused: dict[int, CorruptRecordError]  # offset -> why the Kafka client cannot decode that record
    resume_at: int  # where the partition is read on from, after the batch


@dataclass(frozen=True)
class Wait:
    """The batch cannot be read or trusted: the partition waits at offset and is fetched again later."""

    offset: int
    reason: str


def plan(
    failure: DecodeFailure, consumer_config: Mapping[str, Any], deserializer: Deserializer, receive_time_ms: float
) -> Salvaged | Wait:
    """Salvage the batch kafka-python failed on when kbridge can read it whole; else hold its partition."""
    error = describe(failure.error)
    if consumer_config.get("key_deserializer") or consumer_config.get("value_deserializer"):
        return Wait(failure.offset, f"{error} (kafka settings set a key or value deserializer, so kbridge "
                                    "cannot read this partition's records itself)")
    if failure.raw is None:
        return Wait(failure.offset, error)
    tp = failure.tp
    try:
        batch = read_batch(failure.raw, tp.topic, tp.partition, failure.offset,
                           check_crc=consumer_config.get("check_crcs", True))
    except Unreadable as exc:
        return Wait(failure.offset, str(exc))
    if batch is None:
        return Wait(failure.offset, error)
    if batch.transactional and consumer_config.get("isolation_level") == "read_committed":
        return Wait(failure.offset, f"{error}; its batch is transactional and with read_committed only the "
                                    "Kafka client can tell whether the transaction committed")
    messages = [params_from_record(r, deserializer, receive_time_ms) for r in batch.records]
    refused = {r.offset: CorruptRecordError(r.problem) for r in batch.records if r.problem is not None}
    return Salvaged(messages, refused, batch.next_offset)


def describe(error: BaseException) -> str:
    """'Class: message', without the '[Error n] Class:' prefix kafka-python's errors repeat in str()."""
    message = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
    return f"{type(error).__name__}: {message}"
