"""Fetched records as two lists per partition (values, offsets), without aiokafka's per-message objects.

`AIOKafkaConsumer.getmany` turns every record into a `ConsumerRecord` (a Python dataclass built by a
Python generator: measured at about 2 µs per event, as much as decoding and validating the event),
and the stream processor reads only each record's value and offset. `fetch_values` returns the same
records as `getmany` (same partitions, same order, same positions afterwards) as `Fetched(values,
offsets)`, reading aiokafka's record batches (its Cython `MemoryRecords`/`DefaultRecordBatch`)
directly. It replicates `Fetcher.fetched_records` and `FetchResult.getall` of aiokafka 0.12-0.14 for
the consumer the processor configures (no deserializers, read_uncommitted), CRC checks and control
batches included. Two differences: it takes whole record batches, so `max_records` may be exceeded by
the rest of one producer batch; and a consumer that does not look as expected (another aiokafka, a
deserializer, read_committed) is served by the public `getmany` instead (`supports_fast_fetch`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer import fetcher as _fetcher_module
from aiokafka.errors import CorruptRecordException

_READ_UNCOMMITTED = 0  # aiokafka's isolation level constant


@dataclass(slots=True)
class Fetched:
    """One partition's records of a fetch: their values (None for a record without one) and offsets."""

    values: list[bytes | None]
    offsets: list[int]

    def __len__(self) -> int:
        return len(self.offsets)


def supports_fast_fetch(consumer: AIOKafkaConsumer) -> bool:
    """Whether `fetch_values` can read this (started) consumer's record batches itself."""
    fetcher = getattr(consumer, "_fetcher", None)
    return (
        fetcher is not None
        and all(hasattr(fetcher, name) for name in ("_records", "_subscriptions", "_notify", "_create_fetch_waiter",
                                                    "_wait_consume_future", "_closed"))
        and getattr(fetcher, "_key_deserializer", None) is None
        and getattr(fetcher, "_value_deserializer", None) is None
        and getattr(fetcher, "_isolation_level", None) == _READ_UNCOMMITTED
        and hasattr(_fetcher_module, "FetchResult")
        and all(hasattr(_fetcher_module.FetchResult, name) for name in ("check_assignment", "_update_position"))
        and hasattr(consumer, "_coordinator") and hasattr(consumer, "_subscription")
    )


async def fetch_values(consumer: AIOKafkaConsumer, *, timeout_ms: int, max_records: int,
                       fast: bool = True) -> dict[TopicPartition, Fetched]:
    """`consumer.getmany(timeout_ms=..., max_records=...)`, as values and offsets per partition."""
    if not fast:
        fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return {tp: Fetched([m.value for m in messages], [m.offset for m in messages])
                for tp, messages in fetched.items()}
    if consumer._closed:  # noqa: SLF001 - as getmany checks
        from aiokafka.errors import ConsumerStoppedError

        raise ConsumerStoppedError()
    consumer._coordinator.check_errors()  # noqa: SLF001
    with consumer._subscription.fetch_context():  # noqa: SLF001
        return await _fetched_values(consumer._fetcher, timeout_ms / 1000, max_records)  # noqa: SLF001


async def _fetched_values(fetcher: Any, wait_seconds: float, max_records: int) -> dict[TopicPartition, Fetched]:
    """`Fetcher.fetched_records` (all assigned partitions) with `_drain` for `FetchResult.getall`."""
    while True:
        subscriptions = fetcher._subscriptions  # noqa: SLF001
        if subscriptions.reassignment_in_progress:
            await subscriptions.wait_for_assignment()
        drained: dict[TopicPartition, Fetched] = {}
        records = fetcher._records  # noqa: SLF001
        for tp in list(records.keys()):
            result = records[tp]
            if type(result) is _fetcher_module.FetchResult:
                part = _drain(result, max_records)
                if result._partition_records is None:  # noqa: SLF001 - all consumed: request new ones
                    del records[tp]
                    fetcher._notify(fetcher._wait_consume_future)  # noqa: SLF001
                if not part.offsets:
                    continue
                drained[tp] = part
                max_records -= len(part.offsets)
                if max_records <= 0:
                    break
            elif drained:
                return drained  # the error is raised on the next call
            else:
                del records[tp]
                fetcher._notify(fetcher._wait_consume_future)  # noqa: SLF001
                result.check_raise()
        if drained or not wait_seconds:
            return drained
        waiter = fetcher._create_fetch_waiter()  # noqa: SLF001
        done, pending = await asyncio.wait([waiter], timeout=wait_seconds)
        if not done or fetcher._closed:  # noqa: SLF001
            if pending:
                pending.pop().cancel()
            return {}


def _drain(result: Any, max_records: int) -> Fetched:
    """`FetchResult.getall(max_records)` as values and offsets, whole record batches at a time."""
    values: list[bytes | None] = []
    offsets: list[int] = []
    tp = result._topic_partition  # noqa: SLF001
    if not result.check_assignment(tp) or not result.has_more():
        return Fetched(values, offsets)
    partition = result._partition_records  # noqa: SLF001
    batches = partition._records  # noqa: SLF001 - MemoryRecords
    check_crcs = partition._check_crcs  # noqa: SLF001
    value_of, offset_of = values.append, offsets.append
    position = partition.next_fetch_offset
    while len(offsets) < max_records and batches.has_next():
        batch = batches.next_batch()
        if batch is None:
            break
        if check_crcs and not batch.validate_crc():
            raise CorruptRecordException(f"Invalid CRC - {tp}")
        if getattr(batch, "is_control_batch", False):
            position = batch.next_offset
            continue
        for record in batch:
            offset = record.offset
            if offset < position:  # a compressed message set's earlier records: already consumed
                continue
            value_of(record.value)
            offset_of(offset)
            position = offset + 1
        position = batch.next_offset  # as aiokafka: v2 keeps a batch's last offset even when compacted away
    partition.next_fetch_offset = position
    result._update_position()  # noqa: SLF001
    if not batches.has_next():
        result._partition_records = None  # noqa: SLF001
    return Fetched(values, offsets)


__all__ = ["Fetched", "fetch_values", "supports_fast_fetch"]
