"""Sending outside the normal diff: one test row, or a replay of events already delivered. State is not touched."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import msgspec
import polars as pl

from segment_sync.diff.keyed_diff import current_contents
from segment_sync.events.row_builder import DiffRow, Event, build_event
from segment_sync.events.rules import MAX_MESSAGE_ID_CHARS, event_name
from segment_sync.snapshot.key_checks import split_null_keys
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.storage.layout import SyncFolder
from segment_sync.storage.run_log import read_row_log
from segment_sync.values.row_columns import CONTENT, KEY


class ControlError(ValueError):
    """A test row or replay that cannot be done; the message says why."""


def test_row_event(sync: SyncSpec, model: ModelSpec, snapshot: pl.DataFrame, key: str, run_id: str) -> Event:
    """The event the row with this key would send if it were new, under a messageId used only by this test."""
    complete, _ = split_null_keys(snapshot, model.key_columns)
    current = current_contents(complete, model.key_columns, sync.sent_columns).filter(pl.col(KEY) == key)
    if current.is_empty():
        raise ControlError(f"model {model.name!r} has no row with primary key {key!r} in its latest snapshot")
    kind = next((k for k in ("added", "changed") if event_name(sync, k)), None)
    if kind is None:
        raise ControlError(f"sync {sync.name!r} sends nothing for added or changed rows, so there is nothing to test")
    row = DiffRow(key=key, kind=kind, before_gen=None, before=None, after=current[CONTENT][0])
    # never the message_id column's value: Segment would drop the row's real event as a duplicate of the test
    return build_event(sync.model_copy(update={"message_id": None}), row, sync_uuid=f"test-row-{run_id}")


def replay_payloads(
    sync_folder: Path, run_id: str, *, from_run: str | None, keys: Collection[str]
) -> tuple[list[bytes], list[str]]:
    """Events delivered before (by one run, and/or for some keys), with new messageIds; and the ids not found.

    Segment drops an event whose messageId it saw in the last day or so, so a replay sends each event
    again under `<messageId>-replay-<run>`, which downstream tools see as a new event.
    """
    delivered = read_row_log(sync_folder, from_run).filter(pl.col("status") == "delivered")
    if keys:
        delivered = delivered.filter(pl.col("key").is_in(list(keys)))
    wanted = set(delivered.select("message_id").collect().to_series().to_list())
    if not wanted:
        raise ControlError("the sync log has no delivered event for that run or those keys")
    found = _sent_events(sync_folder, wanted)
    suffix = f"-replay-{run_id[:8]}"
    payloads = []
    for message_id, event in sorted(found.items()):
        event["messageId"] = msgspec.Raw(msgspec.json.encode((message_id + suffix)[-MAX_MESSAGE_ID_CHARS:]))
        payloads.append(msgspec.json.encode(event))
    return payloads, sorted(wanted - found.keys())


class _Request(msgspec.Struct):
    batch: list[dict[str, msgspec.Raw]]


class _Call(msgspec.Struct):
    status: int | None
    request: _Request


def _sent_events(sync_folder: Path, message_ids: set[str]) -> dict[str, dict[str, msgspec.Raw]]:
    """The events with these messageIds from the API calls Segment accepted, each field's JSON as it was sent."""
    found: dict[str, dict[str, msgspec.Raw]] = {}
    for path in sorted(SyncFolder(sync_folder).calls.glob("*.jsonl")):
        with open(path, "rb") as f:
            for line in f:
                call = msgspec.json.decode(line, type=_Call)
                if call.status is None or not 200 <= call.status < 300:
                    continue
                for event in call.request.batch:
                    message_id = msgspec.json.decode(event["messageId"])
                    if message_id in message_ids:
                        found.setdefault(message_id, event)
    return found
