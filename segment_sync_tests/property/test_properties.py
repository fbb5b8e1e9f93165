"""Property-based tests: any row the warehouse can return becomes a valid Segment event or a rejected row.

Frames are generated the way a warehouse returns them (every dtype, extremes, nulls everywhere), go
through `finish_batch`, `current_contents`, `compute_diff` and `build_outcomes`, and every outcome
is checked against Segment's rules and against the values it came from. Further properties cover the
keyed diff, messageIds and batch packing.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import random
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import polars as pl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from segment_sync import field_mapping
from segment_sync.diff.keyed_diff import UNCHANGED, compute_diff, current_contents, current_rows, delivered_rows
from segment_sync.events.row_builder import DiffRow, Outcome, build_outcomes, message_id_for
from segment_sync.segment_api.batching import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    Payloads,
    batch_body,
    pack,
    request_body,
)
from segment_sync.snapshot.row_hash import stored_hash_name, with_row_hashes
from segment_sync.spec import SyncSpec
from segment_sync.values.encoding import dumps
from segment_sync.values.row_columns import AFTER, BEFORE, BEFORE_GEN, CONTENT, DELIVERED_SCHEMA, GEN, HASH, KEY, KIND
from segment_sync.warehouse.model_reader import finish_batch
from segment_sync_tests.support.warehouse_rows import (
    KEY_COLUMN,
    SETTINGS,
    SYNC_UUID,
    Case,
    Column,
    Schema,
    cases,
    int64s,
    iso_strings,
    key_text,
    rows_by_key,
    schemas,
    short_texts,
    special_texts,
    unicode_chars,
)

MESSAGE_TYPES = {"track": "track", "audience": "track", "identify": "identify", "group": "group"}
AUDIENCE_NAMES = {"added": "Segment Entered", "removed": "Segment Exited"}
SEGMENT_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
UUID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def expected_name(sync: SyncSpec, kind: str) -> str | None:
    if sync.type == "track":
        assert sync.events is not None
        return sync.events.for_kind(kind)  # type: ignore[arg-type]
    if sync.type == "audience":
        return AUDIENCE_NAMES.get(kind)
    return None if kind == "removed" else sync.type


# --- running a sync over frames -----------------------------------------------------------------------------


def delivered_from(frame: pl.DataFrame | None, sent_columns: list[str], gen: int = 1) -> pl.LazyFrame:
    """What a sync has delivered: nothing, or the contents of `frame` (as the state records them)."""
    if frame is None:
        return pl.LazyFrame(schema=DELIVERED_SCHEMA)
    return delivered_rows(frame, [KEY_COLUMN], sent_columns, gen).lazy()


REMOVED_AT = "2026-12-01T10:00:00.123456+00:00"  # when the snapshot that saw removals was taken


def run_sync(sync: SyncSpec, new: pl.DataFrame, old: pl.DataFrame | None) -> list[Outcome]:
    """Snapshot (normalized), diff against what `old` delivered, and build outcomes as a non-initial run does."""
    delivered = delivered_from(None if old is None else finish_batch(old, None), sync.sent_columns)
    diff = diff_of(finish_batch(new, None), sync.sent_columns, delivered)
    rows = [DiffRow(*r) for r in diff.select(KEY, KIND, BEFORE_GEN, BEFORE, AFTER).iter_rows()]
    return list(build_outcomes(sync, rows, SYNC_UUID, initial=False, removed_at=REMOVED_AT))


# --- what a value looks like on the wire -------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise AssertionError(f"payload holds {name}, which is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
    return dict(pairs)


def strict_json(payload: bytes) -> Any:
    """Parse as strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, numbers kept exact."""
    text = payload.decode("utf-8")
    return json.loads(text, parse_constant=_no_constants, parse_float=Decimal, object_pairs_hook=_no_duplicate_keys)


def instant(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def parse_iso(text: str) -> dt.datetime:
    return instant(dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1)))


def to_millis(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def is_null_on_wire(column: Column, value: Any) -> bool:
    return value is None or (column.kind == "float" and not math.isfinite(value))


def assert_sent_as(column: Column, value: Any, wire: Any) -> None:
    """`wire` (parsed from the payload) is what `value` of `column` must look like in Segment."""
    kind = column.kind
    if is_null_on_wire(column, value):
        assert wire is None, (kind, value, wire)
    elif kind == "int":
        assert type(wire) is int and wire == value
    elif kind == "float":
        assert isinstance(wire, Decimal | int), wire
        assert float(wire) == value and math.copysign(1, float(wire)) == math.copysign(1, value)
    elif kind == "decimal":  # every digit kept: the number in the payload is exactly the Decimal
        assert isinstance(wire, Decimal | int) and Decimal(wire) == value, (value, wire)
    elif kind in ("str", "iso"):
        assert wire == value
    elif kind == "bool":
        assert wire is value
    elif kind == "date":
        assert wire == value.isoformat()
    elif kind == "datetime":
        assert isinstance(wire, str) and wire.endswith("Z") and dt.datetime.fromisoformat(wire) == instant(value)
    elif kind == "time":
        assert dt.time.fromisoformat(wire) == value
    elif kind == "duration":
        assert isinstance(wire, Decimal | int) and float(wire) == value.total_seconds()
    elif kind == "binary":
        assert wire == base64.b64encode(value).decode("ascii")
    elif kind in ("list", "struct"):
        assert wire == value and json.dumps(wire) == json.dumps(value)  # same values, ints stay ints
    else:  # pragma: no cover
        raise AssertionError(kind)


def id_state(column: Column | None, value: Any) -> str:
    """'ok' if the value must give a Segment id, 'empty' if it gives none, 'bad' if it can't be an id."""
    if column is None or is_null_on_wire(column, value) or column.kind == "bool":
        return "empty"
    if column.kind in ("list", "struct"):
        return "bad"
    if column.kind in ("str", "iso"):
        return "ok" if value.strip() else "empty"
    if column.kind == "binary":
        return "ok" if value else "empty"
    return "ok"


def expected_id(column: Column, value: Any) -> str | None:
    if column.kind in ("str", "iso"):
        return value.strip()
    if column.kind == "int":
        return str(value)
    return None  # only checked to be a non-empty string


def check_outcome(sync: SyncSpec, schema: Schema, outcome: Outcome, source: dict[str, Any]) -> None:
    row = outcome.row
    cols = {c.name: c for c in schema.columns}
    cols[KEY_COLUMN] = Column(KEY_COLUMN, schema.key_kind, None, st.nothing())
    name = expected_name(sync, row.kind)
    states = {
        setting: id_state(cols[c], source[c]) if c else "empty"
        for setting, c in (("user", sync.user_id), ("anonymous", sync.anonymous_id), ("group", sync.group_id))
    }

    assert (outcome.event is not None) + (outcome.rejected is not None) + outcome.skipped == 1
    assert outcome.skipped == (name is None), (sync.type, row.kind)
    if outcome.skipped:
        return
    if outcome.rejected is not None:
        assert isinstance(outcome.rejected, str) and outcome.rejected.strip()
        ids_usable = "bad" not in states.values() and "ok" in (states["user"], states["anonymous"])
        if sync.type == "group":
            ids_usable = ids_usable and states["group"] == "ok"
        ts = sync.timestamp
        ts_usable = ts is None or is_null_on_wire(cols[ts], source[ts]) or cols[ts].kind in ("datetime", "date", "iso")
        ts_usable = ts_usable or row.kind == "removed"  # timed by the snapshot
        mid_usable = sync.message_id is None or row.kind != "added" or row.before_gen is not None
        content = row.before if row.kind == "removed" else row.after
        small = len((content or "").encode()) * 8 + 3_000 < MAX_EVENT_BYTES
        assert not (ids_usable and ts_usable and mid_usable and small), f"good row rejected: {outcome.rejected}"
        return

    event = outcome.event
    assert event is not None and event.row == row
    payload = event.payload
    assert isinstance(payload, bytes) and len(payload) <= MAX_EVENT_BYTES
    message = strict_json(payload)
    assert isinstance(message, dict)
    assert "bad" not in states.values()
    assert message["type"] == MESSAGE_TYPES[sync.type] == event.type
    assert event.name == name

    message_id = message["messageId"]
    assert isinstance(message_id, str) and message_id.strip() and len(message_id) <= 100
    assert message_id == event.message_id
    if sync.message_id is None or row.kind != "added" or row.before_gen is not None:
        assert message_id == message_id_for(SYNC_UUID, row) and UUID_SHAPE.fullmatch(message_id)

    assert "userId" in message or "anonymousId" in message
    for setting, wire_name, column in (
        ("user", "userId", sync.user_id),
        ("anonymous", "anonymousId", sync.anonymous_id),
        ("group", "groupId", sync.group_id),
    ):
        assert (wire_name in message) == (states[setting] == "ok"), (wire_name, column, states)
        if wire_name in message:
            assert column is not None
            value = message[wire_name]
            assert isinstance(value, str) and value.strip() == value and value
            expected = expected_id(cols[column], source[column])
            assert expected is None or value == expected

    if message["type"] == "track":
        assert isinstance(message["event"], str) and message["event"].strip() and message["event"] == name
    else:
        assert "event" not in message

    bag = message["traits" if sync.type in ("identify", "group") else "properties"]
    columns = {m.path[0]: m.source.name for m in sync.field_mappings if isinstance(m.source, field_mapping.Column)}
    assert isinstance(bag, dict) and list(bag) == list(columns)
    for field_name, column in columns.items():
        assert_sent_as(cols[column], source[column], bag[field_name])

    ts = sync.timestamp
    if ts is not None and row.kind == "removed":
        assert message["timestamp"] == "2026-12-01T10:00:00.123Z"
    elif ts is None or is_null_on_wire(cols[ts], source[ts]):
        assert "timestamp" not in message
    else:
        stamp = message["timestamp"]
        assert isinstance(stamp, str) and SEGMENT_TIMESTAMP.fullmatch(stamp)
        sent = dt.datetime.fromisoformat(stamp)
        value, kind = source[ts], cols[ts].kind
        if kind == "datetime":
            assert sent == to_millis(instant(value))
        elif kind == "date":
            assert sent == dt.datetime.combine(value, dt.time(), dt.UTC)
        elif kind in ("iso", "str"):
            assert sent == to_millis(parse_iso(value))


@SETTINGS
@given(case=cases())
def test_every_warehouse_row_becomes_a_valid_event_or_a_rejected_row(case: Case) -> None:
    new_rows = rows_by_key(case.new)
    old_rows = rows_by_key(case.old) if case.old is not None else {}
    for sync in case.syncs:
        outcomes = run_sync(sync, case.new, case.old)
        expected_keys = set(new_rows) if case.old is None else None
        if expected_keys is not None:  # against an empty state every row is added, once
            assert sorted(o.row.key for o in outcomes) == sorted(expected_keys)
            assert {o.row.kind for o in outcomes} <= {"added"}
        for outcome in outcomes:
            source = old_rows if outcome.row.kind == "removed" else new_rows
            check_outcome(sync, case.schema, outcome, source[outcome.row.key])
        if sync.message_id is None:
            ids = [o.event.message_id for o in outcomes if o.event is not None]
            assert len(ids) == len(set(ids))


def _identify_with(columns: dict[str, pl.Series], **spec: Any) -> tuple[SyncSpec, pl.DataFrame]:
    frame = pl.DataFrame({KEY_COLUMN: [1], "uid": ["u1"], **columns})
    sync = SyncSpec(name="s", model="m", type="identify", user_id="uid", **spec)
    return sync, frame


def _event_or_rejection(sync: SyncSpec, frame: pl.DataFrame) -> None:
    for outcome in run_sync(sync, frame, None):
        assert outcome.event is not None or (outcome.rejected or "").strip()
        if outcome.event is not None:
            strict_json(outcome.event.payload)


@settings(max_examples=30, deadline=None)
@example(text="0001-01-01T00:00:00+01:00")
@example(text="9999-12-31T23:30:00-01:00")
@given(
    text=st.one_of(
        iso_strings(dt.datetime(1, 1, 1), dt.datetime(1, 1, 1, 23, 59)),
        iso_strings(dt.datetime(9999, 12, 31), dt.datetime(9999, 12, 31, 23, 59)),
    )
)
def test_timestamp_strings_at_the_ends_of_the_calendar_are_events_or_rejections(text: str) -> None:
    sync, frame = _identify_with({"ts": [text]}, timestamp="ts")
    _event_or_rejection(sync, frame)


@settings(max_examples=50, deadline=None)
@example(value=dt.time(0, 0, 0, 12_345))
@example(value=dt.time(23, 59, 59, 10_000))
@given(value=st.times())
def test_times_are_sent_with_their_exact_value(value: dt.time) -> None:
    sync, frame = _identify_with({"v": pl.Series("v", [value], dtype=pl.Time)}, fields=["v"])
    [outcome] = run_sync(sync, frame, None)
    assert outcome.event is not None
    assert dt.time.fromisoformat(strict_json(outcome.event.payload)["traits"]["v"]) == value


def _date_column(days: int) -> pl.Series:
    return pl.Series("v", [days], dtype=pl.Int32).cast(pl.Date)


@settings(max_examples=30, deadline=None)
@example(values=pl.Series("v", [dt.datetime(1, 1, 1)]).dt.replace_time_zone("Asia/Kolkata"))
@example(values=_date_column(2_932_897))  # 10000-01-01
@given(
    values=st.one_of(
        st.integers(2_932_897, 3_000_000).map(_date_column),
        st.integers(-800_000, -719_163).map(_date_column),  # before 0001-01-01
        st.datetimes(dt.datetime(1, 1, 1), dt.datetime(1, 1, 1, 5)).map(
            lambda t: pl.Series("v", [t]).dt.replace_time_zone("Asia/Kolkata")
        ),
    )
)
def test_dates_beyond_python_range_are_events_or_rejections(values: pl.Series) -> None:
    sync, frame = _identify_with({"v": values}, fields=["v"])
    _event_or_rejection(sync, frame)


# --- 2. the keyed diff ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffCase:
    schema: Schema
    old: pl.DataFrame  # normalized, as the snapshot holds them
    new: pl.DataFrame
    unsent_change: pl.DataFrame  # `old` with only unsent columns changed
    sent: list[str]
    tombstones: dict[str, int]  # keys delivered as removed (null content), with their generation
    gens: dict[str, int]
    seed: int


@st.composite
def diff_cases(draw: st.DrawFn) -> DiffCase:
    schema = draw(schemas(min_columns=2, max_columns=5))
    pool = draw(schema.keys(max_size=10))
    old_keys = draw(st.lists(st.sampled_from(pool), unique=True)) if pool else []
    new_keys = draw(st.lists(st.sampled_from(pool), unique=True)) if pool else []
    old_rows = {key_text(k): draw(schema.row()) for k in old_keys}
    new_rows = []
    for k in new_keys:  # a shared key often keeps its row, so "unchanged" is exercised too
        same = key_text(k) in old_rows and draw(st.booleans())
        new_rows.append(dict(old_rows[key_text(k)]) if same else draw(schema.row()))
    names = [c.name for c in schema.columns]
    sent = draw(st.lists(st.sampled_from([KEY_COLUMN, *names]), min_size=1, unique=True))
    unsent_rows = []
    for k in old_keys:
        row = dict(old_rows[key_text(k)])
        for column in schema.columns:
            if column.name not in sent and draw(st.booleans()):
                row[column.name] = draw(st.none() | column.values)
        unsent_rows.append(row)
    spare = [key_text(k) for k in pool if k not in old_keys]
    tombstones = {k: draw(st.integers(1, 50)) for k in spare if draw(st.booleans())}
    gens = {key_text(k): draw(st.integers(1, 50)) for k in old_keys}
    old = finish_batch(schema.frame(old_keys, list(old_rows.values())), None)
    new = finish_batch(schema.frame(new_keys, new_rows), None)
    unsent_change = finish_batch(schema.frame(old_keys, unsent_rows), None)
    return DiffCase(schema, old, new, unsent_change, sent, tombstones, gens, draw(st.integers(0, 2**32)))


def diff_of(snapshot: pl.DataFrame, sent: list[str], delivered: pl.LazyFrame, **options: Any) -> pl.DataFrame:
    """The diff as the sync computes it, sorted by key, without rows whose hash alone moved."""
    diff = compute_diff(snapshot, [KEY_COLUMN], sent, delivered, **options).collect()
    return diff.filter(pl.col(KIND) != UNCHANGED).sort(KEY)


def delivered_state(case: DiffCase) -> pl.DataFrame:
    contents = delivered_rows(case.old, [KEY_COLUMN], case.sent, 0)
    gens = pl.Series(GEN, [case.gens[k] for k in contents[KEY]], dtype=pl.Int64)
    tombs = pl.DataFrame(
        {
            KEY: list(case.tombstones),
            CONTENT: [None] * len(case.tombstones),
            GEN: list(case.tombstones.values()),
            HASH: [None] * len(case.tombstones),
        },
        schema=DELIVERED_SCHEMA,
    )
    return pl.concat([contents.with_columns(gens), tombs])


def wire_value(column: Column | None, value: Any) -> Any:
    """A value as Segment sees it: non-finite floats are null, durations are float seconds, -0.0 is not 0.0."""
    if column is None or value is None:
        return value
    if column.kind == "float":
        return repr(value) if math.isfinite(value) else None
    if column.kind == "duration":
        return repr(value.total_seconds())
    return value


def sent_values(schema: Schema, row: dict[str, Any], sent: list[str]) -> tuple[Any, ...]:
    cols = {c.name: c for c in schema.columns}
    return tuple(wire_value(cols.get(name), row[name]) for name in sent)


@SETTINGS
@given(case=diff_cases())
def test_diff_kinds_follow_the_keys_and_the_sent_columns(case: DiffCase) -> None:
    old, new = rows_by_key(case.old), rows_by_key(case.new)
    delivered = delivered_state(case)
    current = current_contents(case.new, [KEY_COLUMN], case.sent)
    diff = diff_of(case.new, case.sent, delivered.lazy())
    in_slices = diff_of(case.new, case.sent, delivered.lazy(), in_memory_rows=2)
    assert in_slices.equals(diff)
    untrusted = diff_of(case.new, case.sent, delivered.lazy(), trust_hashes=False)
    assert untrusted.equals(diff)  # hashes only ever narrow down what the contents decide
    assert diff_of(case.new, case.sent, delivered.lazy(), trust_hashes=False, in_memory_rows=2).equals(diff)
    # the row hashes the snapshot writer stores are the diff's own, and reading them changes nothing
    hashed = with_row_hashes(case.new.lazy(), [KEY_COLUMN], [case.sent, case.new.columns]).collect()
    stored = hashed[stored_hash_name(case.new.schema, [KEY_COLUMN], case.sent)]
    assert stored.to_list() == current_rows(case.new, [KEY_COLUMN], case.sent).collect()[HASH].to_list()
    assert diff_of(hashed, case.sent, delivered.lazy()).equals(diff)
    assert diff_of(hashed, case.sent, delivered.lazy(), in_memory_rows=2).equals(diff)

    expected: dict[str, str] = {}
    for key in new.keys() - old.keys():
        expected[key] = "added"
    for key in old.keys() - new.keys():
        expected[key] = "removed"
    for key in old.keys() & new.keys():
        if sent_values(case.schema, old[key], case.sent) != sent_values(case.schema, new[key], case.sent):
            expected[key] = "changed"
    assert dict(zip(diff[KEY], diff[KIND], strict=True)) == expected
    assert diff[KEY].to_list() == sorted(expected)  # one row per key, in key order

    before = dict(zip(delivered[KEY], delivered[CONTENT], strict=True))
    after = dict(zip(current[KEY], current[CONTENT], strict=True))
    gens = {**case.gens, **case.tombstones}
    for key, kind, before_gen, before_content, after_content in diff.select(
        KEY, KIND, BEFORE_GEN, BEFORE, AFTER
    ).iter_rows():
        assert after_content == (None if kind == "removed" else after[key])
        assert before_content == before.get(key)
        assert before_gen == gens.get(key)
        if kind == "changed":
            assert before_content != after_content


@SETTINGS
@given(case=diff_cases())
def test_diff_ignores_unsent_columns_is_empty_against_itself_and_is_deterministic(case: DiffCase) -> None:
    delivered = delivered_state(case).filter(pl.col(CONTENT).is_not_null())
    unsent = diff_of(case.unsent_change, case.sent, delivered.lazy())
    assert unsent.is_empty(), unsent  # a change only in columns the sync doesn't send is no change

    recorded = delivered_rows(case.new, [KEY_COLUMN], case.sent, 7)
    assert diff_of(case.new, case.sent, recorded.lazy()).is_empty()

    full = delivered_state(case)
    first = diff_of(case.new, case.sent, full.lazy())
    assert first.equals(diff_of(case.new, case.sent, full.lazy()))
    rng = random.Random(case.seed)
    shuffled_new = case.new.sample(fraction=1.0, shuffle=True, seed=rng.randrange(2**32))
    shuffled_state = full.sample(fraction=1.0, shuffle=True, seed=rng.randrange(2**32))
    assert first.equals(diff_of(shuffled_new, case.sent, shuffled_state.lazy()))


# --- 3. messageIds ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | int64s | st.floats(allow_nan=False) | short_texts | special_texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_texts, inner, max_size=3),
    max_leaves=8,
)
# Real contents are canonical JSON objects (never "", and control characters are always escaped).
contents = st.none() | st.dictionaries(short_texts, json_values, max_size=4).map(lambda d: dumps(d).decode())
diff_rows = st.builds(
    DiffRow,
    key=st.one_of(short_texts, special_texts, st.sampled_from(["a\x1fadded", "\x1f", "a\x1f\x1f", "None"])),
    kind=st.sampled_from(["added", "changed", "removed"]),
    before_gen=st.none() | st.integers(0, 2**62),
    before=contents,
    after=contents,
)


@settings(max_examples=250, deadline=None)
@given(rows=st.lists(diff_rows, max_size=30), other_uuid=st.uuids().map(str))
def test_message_ids_are_deterministic_and_distinct_per_change(rows: list[DiffRow], other_uuid: str) -> None:
    ids = {}
    for row in rows:
        message_id = message_id_for(SYNC_UUID, row)
        assert message_id == message_id_for(SYNC_UUID, DiffRow(*vars(row).values()))
        assert UUID_SHAPE.fullmatch(message_id) and len(message_id) <= 100
        ids.setdefault(message_id, set()).add(row)
        if other_uuid != SYNC_UUID:
            assert message_id_for(other_uuid, row) != message_id
    assert all(len(same) == 1 for same in ids.values()), [same for same in ids.values() if len(same) > 1]


# --- 4. batching ------------------------------------------------------------------------------------------------

write_keys = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(["wk_TEST_0123456789abcdefghijklmnop", 'quo"te\\', "ü😀\x00", "x" * 200]),
    st.text(unicode_chars, max_size=40),
)


def payload_of(size: int) -> bytes:
    """A valid JSON payload of exactly `size` bytes."""
    return b"1" * size if size < 8 else b'{"p":"' + b"x" * (size - 8) + b'"}'


def sizes_in_runs(low: int, high: int, max_runs: int, max_repeat: int) -> st.SearchStrategy[list[int]]:
    runs = st.lists(st.tuples(st.integers(low, high), st.integers(1, max_repeat)), max_size=max_runs)
    return runs.map(lambda rs: [size for size, n in rs for _ in range(n)])


payload_sizes = st.one_of(
    st.lists(st.integers(1, MAX_EVENT_BYTES), max_size=60),
    sizes_in_runs(1, MAX_EVENT_BYTES, 6, 40),
    sizes_in_runs(1, 200, 4, 3_000),  # enough small events to hit the 2,500-event limit
    st.lists(st.sampled_from([1, MAX_EVENT_BYTES]), max_size=60),
)


def check_packing(payloads: list[bytes], write_key: str | None, max_bytes: int, max_events: int) -> None:
    ranges = list(pack(payloads, write_key, max_bytes=max_bytes, max_events=max_events))
    covered = [i for r in ranges for i in r]
    assert covered == list(range(len(payloads)))  # every index once, in order
    assert all(len(r) > 0 and r.step == 1 for r in ranges)
    for n, r in enumerate(ranges):
        body = request_body(payloads[r.start : r.stop], write_key)
        assert len(r) <= max_events
        assert len(body) <= max_bytes or len(r) == 1  # only a payload too big on its own may exceed
        parsed = json.loads(body)
        assert len(parsed["batch"]) == len(r)
        assert ("writeKey" in parsed) == bool(write_key) and parsed.get("writeKey", write_key) == write_key
        if n + 1 < len(ranges):  # greedy: the next payload would not have fit
            grown = request_body(payloads[r.start : r.stop + 1], write_key)
            assert len(grown) > max_bytes or len(r) >= max_events
    joined = Payloads.from_series(pl.Series(payloads, dtype=pl.Binary))  # as deliver_diff packs and sends them
    assert list(pack(joined, write_key, max_bytes=max_bytes, max_events=max_events)) == ranges
    stamp = "2026-01-01T00:00:00.000Z"
    for r in ranges:
        assert batch_body(joined.events(r), write_key, sent_at=stamp) == request_body(
            payloads[r.start : r.stop], write_key, sent_at=stamp
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sizes=payload_sizes, write_key=write_keys)
def test_batches_fit_segment_limits_cover_every_event_and_are_greedy(sizes: list[int], write_key: str | None) -> None:
    payloads = [payload_of(s) for s in sizes]
    check_packing(payloads, write_key, MAX_BATCH_BYTES, MAX_BATCH_EVENTS)
    for r in pack(payloads, write_key):
        body = request_body(payloads[r.start : r.stop], write_key)
        assert len(body) <= MAX_BATCH_BYTES and len(r) <= MAX_BATCH_EVENTS


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 300), max_size=40),
    write_key=write_keys,
    max_bytes=st.integers(100, 3_000),
    max_events=st.integers(1, 10),
)
def test_packing_holds_for_any_limits(sizes: list[int], write_key: str | None, max_bytes: int, max_events: int) -> None:
    check_packing([payload_of(s) for s in sizes], write_key, max_bytes, max_events)
