"""The warehouse engine against the Polars engine: the same changes give the same events and the same state."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from segment_sync.delivery.diff_delivery import deliver_diff
from segment_sync.diff.keyed_diff import UNCHANGED, compute_diff, resync_diff
from segment_sync.segment_api.client import RetryPolicy
from segment_sync.segment_api.transport import Response
from segment_sync.snapshot.key_checks import ROW, rows_to_drop, split_null_keys
from segment_sync.snapshot.row_hash import hash_basis
from segment_sync.spec import ModelSpec, SyncSpec
from segment_sync.storage.run_log import RunLog
from segment_sync.storage.state import StateError, SyncState
from segment_sync.values.row_columns import AFTER, BEFORE_GEN, CONTENT, GEN, HASH, KEY, KIND
from segment_sync.warehouse.model_reader import read_model
from segment_sync.warehouse_engine import sql_diff
from segment_sync.warehouse_engine.parted_insert import parts_for
from segment_sync.warehouse_engine.row_hash_sql import AS_TEXT, postgres_row_hash
from segment_sync.warehouse_engine.sessions import joins_by_index, open_engine
from segment_sync.warehouse_engine.state_tables import StateTables, StateTablesError
from segment_sync.warehouse_engine.warehouse_state import WarehouseState, fold_by_key
from segment_sync_tests.support.warehouses import POSTGRES_ADMIN_URL, Warehouse

MODEL = ModelSpec(name="users", table="users", primary_key="id")
TRACK = SyncSpec(
    name="lifecycle",
    model="users",
    type="track",
    user_id="user_id",
    fields=["email", "plan", "seats", "meta"],
    events={"added": "User Added", "changed": "User Changed", "removed": "User Removed"},
    send_initial=True,
)
IDENTIFY = SyncSpec(name="traits", model="users", type="identify", user_id="user_id", fields=["email", "plan"])
AUDIENCE = SyncSpec(name="members", model="users", type="audience", user_id="user_id", fields=["plan"])
MAPPED = SyncSpec(
    name="mapped",
    model="users",
    type="track",
    user_id="user_id",
    fields={
        "contact.email": "email",
        "plan": "plan",
        "seats.count": "seats",
        "source": {"static": "warehouse"},
        "label": {"template": "{plan}/{seats}"},
    },
    context={"traits.meta": "meta", "locale": {"static": "en"}},
    integrations={"All": False, "Mixpanel": True},
    omit_nulls=True,
    events={"added": "User Added", "changed": "User Changed", "removed": "User Removed"},
    send_initial=True,
    changed_fields="changed_fields",
    previous_values="previous",
)
MAPPED_IDENTIFY = SyncSpec(
    name="mapped_traits",
    model="users",
    type="identify",
    user_id="user_id",
    fields={"plan.name": "plan", "plan.seats": "seats"},
    changed_fields="changed",
)
TAKEN_AT = "2026-12-06T00:00:00+00:00"
CHANGES = [
    [
        "create table users (id integer, user_id varchar(20), email varchar(50), plan varchar(10), seats integer,"
        " meta varchar(50))",
        "insert into users values (1, 'u1', 'a@x.io', 'free', 1, null), (2, 'u2', 'b@x.io', 'pro', 3, 'x'),"
        " (3, 'u3', 'c@x.io', 'free', null, null), (4, null, 'd@x.io', 'team', 9, null),"
        " (null, 'u5', 'e@x.io', 'free', 1, null)",
    ],
    ["update users set plan = 'pro' where id = 1", "delete from users where id = 2"],
    ["insert into users values (6, 'u6', 'f@x.io', 'free', 2, 'é\"q')", "update users set seats = 3 where id = 3"],
    ["insert into users values (2, 'u2', 'b@x.io', 'pro', 3, 'x')", "update users set email = email where id = 1"],
    ["update users set user_id = 'u4' where id = 4", "delete from users where id in (1, 3)"],
]


class Capture:
    """Keeps every event sent, and answers 200."""

    write_key = "wk"

    def __init__(self) -> None:
        self.events: dict[str, dict] = {}

    def post(self, body: bytes, attempt: int) -> Response:
        for event in orjson.loads(body)["batch"]:
            self.events[event["messageId"]] = event
        return Response(200, "")


@contextlib.contextmanager
def _engine_tables(warehouse: Warehouse) -> Iterator[tuple[Warehouse, StateTables, sa.Engine]]:
    tables = StateTables(f"ss_{uuid.uuid4().hex[:10]}")
    engine = open_engine(warehouse.url)
    try:
        yield warehouse, tables, engine
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop schema if exists {tables.schema} cascade"))
        engine.dispose()


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_warehouse(request: pytest.FixtureRequest) -> Iterator[tuple[Warehouse, StateTables, sa.Engine]]:
    """A warehouse, the engine's tables in a schema of their own, and an engine."""
    with _engine_tables(request.getfixturevalue(f"{request.param}_warehouse")) as made:
        yield made


@pytest.fixture
def postgres_engine(postgres_warehouse: Warehouse) -> Iterator[tuple[Warehouse, StateTables, sa.Engine]]:
    """As `engine_warehouse`, on PostgreSQL only."""
    with _engine_tables(postgres_warehouse) as made:
        yield made


def polars_run(
    url: str, store: SyncState, sync: SyncSpec, tmp_path: Path, *, resync: bool = False, model: ModelSpec = MODEL
) -> Capture:
    """One run of the Polars engine's diff and delivery, as its steps do them (a full resync if asked)."""
    transport = Capture()
    with store.lock():
        store.recover()
        snapshot = read_model(url, model, read_path="sqlalchemy")  # DuckDB: the engine of the other holds the file
        if model.on_duplicate_key != "fail":
            dropped = rows_to_drop(snapshot, model)
            snapshot = snapshot.with_row_index(ROW).filter(~pl.col(ROW).is_in(dropped.implode())).drop(ROW)
        complete, _ = split_null_keys(snapshot.lazy(), model.key_columns)
        basis = hash_basis(snapshot.schema, sync.compared_columns)
        if resync:
            diff = resync_diff(
                complete, model.key_columns, sync.sent_columns, store.meta.generation, sync.compared_columns
            ).collect()
        else:
            diff = compute_diff(
                complete,
                model.key_columns,
                sync.sent_columns,
                store.delivered(),
                trust_hashes=store.meta.hash_basis == basis,
                compared_columns=sync.compared_columns,
            ).collect()
        _note_unchanged(store, diff)
        store.note_hash_basis(basis)
        _deliver(store, sync, diff.filter(pl.col(KIND) != UNCHANGED), transport, tmp_path / "polars")
    return transport


def warehouse_run(
    url: str,
    engine: sa.Engine,
    tables: StateTables,
    store: WarehouseState,
    sync: SyncSpec,
    tmp_path: Path,
    *,
    resync: bool = False,
    model: ModelSpec = MODEL,
) -> Capture:
    """One run of the warehouse engine's diff and delivery (a full resync if asked)."""
    transport = Capture()
    with store.lock():
        store.recover()
        sql_diff.take_snapshot(url, engine, tables, model)
        basis = sql_diff.hash_basis(engine, tables, sync, model, sql_diff.snapshot_schema(url, engine, tables, model))
        trusted = store.meta.hash_basis == basis
        # on PostgreSQL joined in parts whatever the model's size, so the differential tests check that way too
        sql_diff.find_changes(engine, tables, sync, model, trust_hashes=trusted, full_resync=resync, parted_rows=0)
        path = tmp_path / "changes.parquet"
        generation = store.meta.generation if resync else None
        sql_diff.write_changes(url, engine, tables, sync, model, path, slice_rows=2, resync_generation=generation)
        changes = pl.read_parquet(path)
        _note_unchanged(store, changes)
        store.note_hash_basis(basis)
        _deliver(store, sync, changes.filter(pl.col(KIND) != UNCHANGED), transport, tmp_path / "warehouse")
    return transport


def _seed_users(warehouse: Warehouse, count: int) -> None:
    """The table `users` with `count` rows, ids 0 to count - 1."""
    rows = ", ".join(f"({i}, 'u{i}', 'e{i}@x.io', 'free', {i % 7}, null)" for i in range(count))
    warehouse.execute(CHANGES[0][0], f"insert into users values {rows}")


def _note_unchanged(store: SyncState | WarehouseState, diff: pl.DataFrame) -> None:
    unchanged = diff.filter(pl.col(KIND) == UNCHANGED)
    store.record_file(unchanged.select(KEY, pl.col(AFTER).alias(CONTENT), HASH, pl.col(BEFORE_GEN).alias(GEN)))


def _deliver(
    store: SyncState | WarehouseState, sync: SyncSpec, diff: pl.DataFrame, transport: Capture, folder: Path
) -> None:
    initial = not store.meta.baseline_done
    store.begin_run()
    log = RunLog(folder, sync.name, f"run-{store.meta.generation}")
    deliver_diff(
        sync,
        diff,
        store,
        transport,
        log,
        initial=initial,
        removed_at=TAKEN_AT,
        chunk_rows=3,
        policy=RetryPolicy(max_attempts=1),
    )
    log.close()
    store.commit()


def delivered(store: SyncState | WarehouseState) -> list[tuple]:
    frames = [store.delivered().collect()] if isinstance(store, SyncState) else list(store.delivered_frames())
    rows = pl.concat(frames).select(KEY, CONTENT, GEN).sort(KEY)
    return rows.rows()


@pytest.mark.parametrize("sync", [TRACK, IDENTIFY, AUDIENCE, MAPPED, MAPPED_IDENTIFY], ids=lambda s: s.name)
def test_both_engines_send_the_same_events_and_keep_the_same_state(engine_warehouse, sync, tmp_path) -> None:
    _run_both_engines(*engine_warehouse, sync, CHANGES, tmp_path)


PG_TYPED = SyncSpec(
    name="typed",
    model="users",
    type="identify",
    user_id="user_id",
    fields=["doc", "docb", "tags", "amount", "seen_at", "mood", "ref"],
)
PG_TYPED_CHANGES = [
    [
        "create type mood as enum ('calm', 'busy')",
        "create table users (id bigint, user_id text, doc json, docb jsonb, tags integer[], amount numeric,"
        " seen_at timestamptz, mood mood, ref uuid)",
        "insert into users values (1, 'u1', '{\"a\": 1, \"b\": [2]}', '{\"a\": 1}', '{1,2}', 1.50,"
        " '2026-01-01 10:00:00+02', 'calm', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), (2, 'u2', null, null, null,"
        " 12345678901234567890.123456789, null, null, null)",
    ],
    ['update users set doc = \'{"b": [2], "a": 1}\' where id = 1', "update users set tags = '{2,1}' where id = 2"],
    ["update users set mood = 'busy', seen_at = seen_at + interval '1 microsecond' where id = 1"],
    ["update users set docb = '{\"a\": 1.0}' where id = 1", "update users set amount = amount + 1 where id = 2"],
]


@pytest.mark.postgres
def test_both_engines_agree_on_postgres_types_hashed_by_type_or_by_text(postgres_engine, tmp_path) -> None:
    """Types whose hash tells apart every two renderings are hashed by type (uuid, timestamptz); the others as text
    (json, arrays and enums have no hash, and jsonb and numeric hash 1 and 1.0 alike)."""
    postgres_warehouse, tables, engine = postgres_engine
    events = _run_both_engines(postgres_warehouse, tables, engine, PG_TYPED, PG_TYPED_CHANGES, tmp_path)
    assert sql_diff.text_hashed_columns(engine, tables, MODEL) == {"doc", "docb", "tags", "amount", "mood"}
    # the initial rows; json keys reordered (to_jsonb orders them: no change) and an array; an enum and a
    # microsecond; 1 to 1.0 in jsonb and a 20-digit numeric; the resync
    assert events == [2, 1, 1, 2, 2]


def _run_both_engines(
    warehouse: Warehouse,
    tables: StateTables,
    engine: sa.Engine,
    sync: SyncSpec,
    changes: list[list[str]],
    tmp_path: Path,
    model: ModelSpec = MODEL,
) -> list[int]:
    """Each step's changes run through both engines, then a full resync: the same events and state at every step;
    returns the number of events of each run."""
    local = SyncState(tmp_path / "state" / sync.name, sync.name)
    remote = WarehouseState(engine, tables, sync.name)
    remote.meta.sync_uuid = local.meta.sync_uuid  # as the state command carries it over
    remote._save_meta(remote.meta)
    counts = []
    for step, statements in enumerate(changes):
        warehouse.execute(*statements)
        expected = polars_run(warehouse.url, local, sync, tmp_path, model=model)
        got = warehouse_run(warehouse.url, engine, tables, remote, sync, tmp_path, model=model)
        assert got.events == expected.events, f"step {step}"
        assert delivered(remote) == delivered(local), f"step {step}"
        counts.append(len(got.events))
    expected = polars_run(warehouse.url, local, sync, tmp_path, resync=True, model=model)
    got = warehouse_run(warehouse.url, engine, tables, remote, sync, tmp_path, resync=True, model=model)
    assert got.events == expected.events and len(got.events) >= 2, "full resync"
    assert delivered(remote) == delivered(local), "full resync"
    return [*counts, len(got.events)]


COMPOSITE = ModelSpec(name="users", table="users", primary_key=["org", "id"])
COMPOSITE_CHANGES = [
    [
        "create table users (org varchar(20), id integer, user_id varchar(20), email varchar(50), plan varchar(10),"
        " seats integer, meta varchar(50))",
        "insert into users values ('acme', 1, 'u1', 'a@x.io', 'free', 1, null), ('beta', 1, 'u2', 'b@x.io', 'pro', 3,"
        " 'x'), ('q\"u''o\\te', 2, 'u3', 'c@x.io', 'free', null, null), ('é☃😀', 3, 'u4', 'd@x.io', 'team', 9, null),"
        " ('l' || chr(10) || chr(9) || chr(1), 4, 'u5', 'e@x.io', 'free', 1, null),"
        " (null, 5, 'u6', 'f@x.io', 'free', 1, null), ('acme', null, 'u7', 'g@x.io', 'free', 1, null)",
    ],
    ["update users set plan = 'team' where org = 'beta'", "delete from users where org = 'acme' and id = 1"],
    [
        "insert into users values ('acme', 1, 'u1', 'a@x.io', 'team', 1, null)",
        "update users set seats = 4 where id = 4",
    ],
    ["update users set org = 'acme' where id = 5", "delete from users where id in (2, 3)"],
]


@pytest.mark.parametrize("sync", [TRACK, IDENTIFY, AUDIENCE], ids=lambda s: s.name)
def test_both_engines_agree_on_composite_keys(engine_warehouse, sync, tmp_path) -> None:
    """Each key part as text in a JSON object, escaped alike by both engines; a null part keeps the row out."""
    counts = _run_both_engines(*engine_warehouse, sync, COMPOSITE_CHANGES, tmp_path, model=COMPOSITE)
    assert counts[0] == (0 if sync.type == "audience" else 5) and all(counts[1:])  # an audience starts quietly
    warehouse, tables, engine = engine_warehouse
    with engine.connect() as conn:
        keys = conn.execute(sa.select(tables.delivered.c.key).order_by(tables.delivered.c.key)).scalars().all()
    assert '{"org":"beta","id":"1"}' in keys and '{"org":"q\\"u\'o\\\\te","id":"2"}' in keys


DUPLICATES_CHANGES = [
    [
        "create table users (id integer, seq integer, user_id varchar(20), email varchar(50), plan varchar(10),"
        " seats integer, meta varchar(50))",
        "insert into users values (1, 1, 'u1', 'early', 'free', 1, null), (1, 2, 'u1', 'late', 'pro', 1, null),"
        " (1, null, 'u1', 'unordered', 'team', 1, null), (2, 5, 'u2', 'b@x.io', 'pro', 3, 'x'),"
        " (3, 1, 'u3', 'c@x.io', 'free', null, null), (null, 1, 'u4', 'd@x.io', 'free', 1, null),"
        " (null, 2, 'u5', 'e@x.io', 'free', 1, null)",
    ],
    ["insert into users values (2, 6, 'u2', 'newer', 'pro', 3, 'x'), (2, 4, 'u2', 'older', 'pro', 3, 'x')"],
    ["delete from users where seq is null", "update users set seq = 0 where email = 'late'"],
]


@pytest.mark.parametrize("policy", ["keep_first", "keep_last"])
def test_both_engines_keep_the_same_row_of_each_repeated_key(engine_warehouse, policy, tmp_path) -> None:
    """Ordered by order_by with nulls last, as the Polars engine orders them; rows with a null key are kept (and
    rejected)."""
    model = ModelSpec(name="users", table="users", primary_key="id", on_duplicate_key=policy, order_by="seq")
    _run_both_engines(*engine_warehouse, IDENTIFY, DUPLICATES_CHANGES, tmp_path, model=model)
    warehouse, tables, engine = engine_warehouse
    rows = delivered(WarehouseState(engine, tables, IDENTIFY.name))
    emails = [orjson.loads(content)["email"] for _, content, _ in rows]
    assert emails == (["late", "older", "c@x.io"] if policy == "keep_first" else ["early", "newer", "c@x.io"])
    counts = sql_diff.take_snapshot(warehouse.url, engine, tables, model)
    assert (counts.rows, counts.null_key_rows, counts.duplicate_keys) == (5, 2, 0)
    assert (counts.dropped_rows, counts.dropped_keys) == (3, ("1", "2"))


def test_a_duplicate_policy_whose_order_by_the_query_lacks_names_it_and_keeps_no_copy(engine_warehouse) -> None:
    warehouse, tables, engine = engine_warehouse
    warehouse.execute(*DUPLICATES_CHANGES[0])
    tables.create(engine)
    model = ModelSpec(name="users", table="users", primary_key="id", on_duplicate_key="keep_last", order_by="nope")
    with pytest.raises(sql_diff.WarehouseDiffError, match=r"the query returns no column \['nope'\].*order_by"):
        sql_diff.take_snapshot(warehouse.url, engine, tables, model)
    assert sql_diff.snapshot_note(engine, tables, model) is None


@pytest.mark.postgres
def test_text_order_is_by_bytes_as_polars_sorts_whatever_the_columns_collation(postgres_engine, tmp_path) -> None:
    """Under a locale collation 'a' sorts before 'B'; Polars sorts 'B' (0x42) first, and so does the warehouse."""
    model = ModelSpec(name="users", table="users", primary_key="id", on_duplicate_key="keep_first", order_by="tier")
    changes = [
        [
            'create table users (id integer, tier varchar(5) collate "und-x-icu", user_id varchar(5), email varchar(9),'
            " plan varchar(5))",
            "insert into users values (1, 'a', 'u1', 'lower', 'free'), (1, 'B', 'u1', 'upper', 'free'),"
            " (2, 'c', 'u2', 'other', 'free')",
        ]
    ]
    postgres_warehouse, tables, engine = postgres_engine
    _run_both_engines(postgres_warehouse, tables, engine, IDENTIFY, changes, tmp_path, model=model)
    [(_, content, _), _] = delivered(WarehouseState(engine, tables, IDENTIFY.name))
    assert orjson.loads(content)["email"] == "upper"


def test_a_composite_key_the_warehouse_escapes_apart_is_refused(engine_warehouse, tmp_path) -> None:
    """DuckDB writes the JSON escape of U+001F as \\u001F where Polars writes \\u001f: the row would never pair with
    its delivered row, so nothing is sent; PostgreSQL writes it as Polars does."""
    warehouse, tables, engine = engine_warehouse
    warehouse.execute(
        *COMPOSITE_CHANGES[0][:1], "insert into users values ('a' || chr(31), 1, 'u1', 'a@x.io', 'free', 1, null)"
    )
    store = WarehouseState(engine, tables, TRACK.name)
    if engine.dialect.name == "duckdb":
        with pytest.raises(sql_diff.WarehouseDiffError, match=r"writes the key .*nothing was sent"):
            warehouse_run(warehouse.url, engine, tables, store, TRACK, tmp_path, model=COMPOSITE)
        assert store.delivered_row_count() == 0
    else:
        sent = warehouse_run(warehouse.url, engine, tables, store, TRACK, tmp_path, model=COMPOSITE)
        assert len(sent.events) == 1
        assert [k for k, *_ in delivered(store)] == ['{"org":"a\\u001f","id":"1"}']


@pytest.mark.postgres
def test_a_char_key_padded_when_read_and_not_as_text_is_refused_until_cast(postgres_engine, tmp_path) -> None:
    """char(5) reads as 'ab   ' and casts to text as 'ab': a delivered row keyed one way would never pair with its
    row keyed the other, so every run would read it out again."""
    postgres_warehouse, tables, engine = postgres_engine
    postgres_warehouse.execute(
        "create table users (id char(5), user_id varchar(5), email varchar(9), plan varchar(5))",
        "insert into users values ('ab', 'u1', 'a@x.io', 'free'), ('abcde', 'u2', 'b@x.io', 'pro')",
    )
    tables.create(engine)
    with pytest.raises(sql_diff.WarehouseDiffError, match=r"writes the key 'ab   ' as 'ab' \(1 of 2 keys"):
        sql_diff.take_snapshot(postgres_warehouse.url, engine, tables, MODEL)
    assert sql_diff.snapshot_note(engine, tables, MODEL) is None  # no copy was kept
    cast = ModelSpec(name="users", sql="select id::text as id, user_id, email, plan from users", primary_key="id")
    store = WarehouseState(engine, tables, IDENTIFY.name)
    assert len(warehouse_run(postgres_warehouse.url, engine, tables, store, IDENTIFY, tmp_path, model=cast).events) == 2
    assert warehouse_run(postgres_warehouse.url, engine, tables, store, IDENTIFY, tmp_path, model=cast).events == {}


@pytest.mark.postgres
def test_postgres_row_hashes_tell_apart_a_change_in_any_column_swapped_values_and_null(postgres_engine) -> None:
    """Each value's own hash, seeded by its position: values swapped between columns, a null against an empty
    string or a zero, and a change in any one column each give another hash."""
    postgres_warehouse, _, engine = postgres_engine
    postgres_warehouse.execute(
        "create table hashed (row_no int, a text, b text, n int4, d date, ts timestamptz, u uuid, f bool, x numeric)",
        "insert into hashed values"
        " (1, 'p', 'q', 1, '2026-01-01', '2026-01-01 00:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.0),"
        " (2, 'q', 'p', 1, '2026-01-01', '2026-01-01 00:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.0),"
        " (3, null, 'q', 1, '2026-01-01', '2026-01-01 00:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.0),"
        " (4, '', 'q', 1, '2026-01-01', '2026-01-01 00:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.0),"
        " (5, 'p', 'q', null, '2026-01-01', '2026-01-01 00:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true,"
        " 1.0), (6, 'p', 'q', 0, '2026-01-01', '2026-01-01 00:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
        " true, 1.0), (7, 'p', 'q', 1, '2026-01-02', '2026-01-01 00:00:00+00',"
        " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.0), (8, 'p', 'q', 1, '2026-01-01',"
        " '2026-01-01 00:00:00.000001+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.0), (9, 'p', 'q', 1,"
        " '2026-01-01', '2026-01-01 00:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', true, 1.0), (10, 'p', 'q', 1,"
        " '2026-01-01', '2026-01-01 00:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', false, 1.0), (11, 'p', 'q',"
        " 1, '2026-01-01', '2026-01-01 00:00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.00),"
        " (12, 'p', 'q', 1, '2026-01-01', '2026-01-01 02:00:00+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.0),"
        " (13, 'p', 'q', 1, 'infinity', 'infinity', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.0),"
        " (14, 'p', 'q', 1, '-infinity', '-infinity', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.0)",
    )
    types = {"a": "text", "b": "text", "n": "int4", "d": "date", "ts": "timestamptz", "u": "uuid", "f": "bool"}
    table = sa.table("hashed", *map(sa.column, ["row_no", *types, "x"]))
    columns = [(table.c[c], t) for c, t in types.items()] + [(table.c.x, AS_TEXT)]
    row_hash = postgres_row_hash(sa.literal("k"), columns)
    with engine.connect() as conn:
        hashes = dict(conn.execute(sa.select(table.c.row_no, row_hash).order_by(table.c.row_no)).all())
    assert hashes[12] == hashes[1]  # the same instant, written in another zone
    assert len({h for row, h in hashes.items() if row != 12}) == 13  # infinite dates and instants too


def test_a_hash_that_moved_without_the_content_sends_nothing(engine_warehouse, tmp_path) -> None:
    warehouse, tables, engine = engine_warehouse
    warehouse.execute(*CHANGES[0])
    store = WarehouseState(engine, tables, TRACK.name)
    first = warehouse_run(warehouse.url, engine, tables, store, TRACK, tmp_path)
    assert len(first.events) == 3
    with engine.begin() as conn:  # as after a warehouse upgrade: every stored hash differs
        conn.execute(sa.update(tables.delivered).values(hash=tables.delivered.c.hash + 1))
    again = warehouse_run(warehouse.url, engine, tables, store, TRACK, tmp_path)
    assert again.events == {}
    assert sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True) == {
        "added": 1,  # the row with no user id, rejected on every run until it has one
        "changed": 0,
        "removed": 0,
    }


def _notes(keys: range | list[int], content: str) -> pl.DataFrame:
    return pl.DataFrame(
        {KEY: [f"k{i}" for i in keys], CONTENT: [content] * len(keys), HASH: list(keys)},
        schema={KEY: pl.String, CONTENT: pl.String, HASH: pl.UInt64},
    )


def test_the_fold_keeps_each_keys_latest_note_whether_it_replaces_rows_by_key_or_by_a_join(engine_warehouse) -> None:
    _, tables, engine = engine_warehouse
    store = WarehouseState(engine, tables, TRACK.name, run_id="run-a")
    with store.lock():
        store.begin_run()
        store.record_file(_notes(range(200), '{"v":1}'))  # the first run's: straight into the delivered rows
        store.commit()
        store.begin_run()
        store.record(_notes([3, 4, 500], '{"v":2}'))
        store.record(_notes([4], '{"v":3}'))
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:  # 4 notes beside 200 rows: replaced key by key
                assert fold_by_key(conn, tables)
        store.commit()
        store.begin_run()
        store.record(_notes(range(100, 160), '{"v":4}'))
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:  # 60 notes beside 201 rows: the planner's join
                assert not fold_by_key(conn, tables)
        store.commit()
    rows = dict((k, c) for k, c, _ in delivered(store))
    assert len(rows) == 201
    assert (rows["k3"], rows["k4"], rows["k500"], rows["k5"]) == ('{"v":2}', '{"v":3}', '{"v":2}', '{"v":1}')
    assert (rows["k99"], rows["k100"], rows["k159"], rows["k160"]) == ('{"v":1}', '{"v":4}', '{"v":4}', '{"v":1}')
    assert _count(engine, tables.journal) == 0


@pytest.mark.postgres
def test_the_fold_sizes_the_delivered_rows_by_their_pages_now_not_by_their_last_statistics(postgres_engine) -> None:
    """Delivered rows analyzed at 200 that grew to 5,200 without being analyzed again: 300 notes are few beside them
    (replaced key by key), though not beside the 200 the statistics last counted."""
    _, tables, engine = postgres_engine
    store = WarehouseState(engine, tables, TRACK.name, run_id="run-a")
    with store.lock():
        store.begin_run()
        store.record_file(_notes(range(200), '{"v":1}'))
        store.commit()  # the first run's rows are analyzed
    with engine.begin() as conn:
        rows = [{"sync": "other", "key": f"o{i}", "content": '{"v":1}', "gen": 1, "hash": i} for i in range(5000)]
        conn.execute(sa.insert(tables.delivered), rows)
        conn.execute(sa.insert(tables.journal), [{**row, "seq": i} for i, row in enumerate(rows[:300])])
        assert fold_by_key(conn, tables)
        assert conn.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
            {"t": engine.dialect.identifier_preparer.format_table(tables.delivered)},
        ).scalar_one() == pytest.approx(200, abs=1)  # sized without analyzing them again


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_a_first_runs_notes_go_straight_into_the_delivered_rows_and_later_runs_through_the_journal(
    engine_warehouse,
) -> None:
    _, tables, engine = engine_warehouse
    store = WarehouseState(engine, tables, TRACK.name, run_id="run-a")
    with store.lock():
        store.begin_run()
        assert store.straight
        store.record_file(_notes(range(50), '{"v":1}'))
        store.record(_notes(range(50, 60), '{"v":1}'))  # acknowledged rows, by the journal's thread
        assert (_count(engine, tables.journal), _count(engine, tables.delivered)) == (0, 60)  # before any fold
        store.commit()
    if engine.dialect.name == "postgresql":  # the planner knows of the rows inserted (else the next run plans for none)
        with engine.connect() as conn:
            query = "SELECT reltuples FROM pg_class WHERE oid = CAST(:name AS regclass)"
            assert conn.execute(sa.text(query), {"name": tables.delivered.fullname}).scalar_one() == 60
    again = WarehouseState(engine, tables, TRACK.name, run_id="run-b")
    with again.lock():
        again.begin_run()
        assert not again.straight
        again.record(_notes([1, 70], '{"v":2}'))
        assert (_count(engine, tables.journal), _count(engine, tables.delivered)) == (2, 60)
        again.commit()
    rows = {k: c for k, c, _ in delivered(again)}
    assert (len(rows), rows["k1"], rows["k70"], rows["k2"]) == (61, '{"v":2}', '{"v":2}', '{"v":1}')
    assert again.reset() is not None
    after_reset = WarehouseState(engine, tables, TRACK.name, run_id="run-c")
    with after_reset.lock():
        after_reset.begin_run()
        assert after_reset.straight  # every row is sent again as added
        after_reset.record(_notes([1], '{"v":3}'))
        after_reset.commit()
    assert delivered(after_reset) == [("k1", '{"v":3}', 4)]  # the generation after the reset's


def test_a_first_run_that_cannot_write_its_notes_fails_naming_the_delivered_table(engine_warehouse) -> None:
    _, tables, engine = engine_warehouse
    store = WarehouseState(engine, tables, TRACK.name, run_id="run-a")
    written = f"sync 'lifecycle': the journal {tables.delivered.fullname} .*could not be written"
    with pytest.raises(StateError, match=written), store.lock():
        store.begin_run()
        tables.delivered.drop(engine)  # a state table dropped by hand mid-run
        store.record(_notes([1], '{"v":1}'))  # written by the journal's thread: the run fails when it ends


def test_a_first_run_streams_its_rows_in_parts_without_work_tables(engine_warehouse, tmp_path, monkeypatch) -> None:
    """With no delivered row to pair with, the current rows are read once, in key order, in bounded parts."""
    warehouse, tables, engine = engine_warehouse
    _seed_users(warehouse, 100)
    tables.create(engine)
    sql_diff.take_snapshot(warehouse.url, engine, tables, MODEL)
    assert sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True)["added"] == 100
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda _c, _r, statement, *_: statements.append(statement))
    monkeypatch.setattr(sql_diff, "DEFAULT_BATCH_ROWS", 10)  # the read path's batches
    streamed, whole = tmp_path / "streamed.parquet", tmp_path / "whole.parquet"
    sql_diff.write_changes(warehouse.url, engine, tables, TRACK, MODEL, streamed, slice_rows=25)
    assert not [s for s in statements if "diff_news__" in s or "diff_olds__" in s]
    groups = pq.ParquetFile(streamed).metadata
    assert groups.num_row_groups > 1
    assert max(groups.row_group(i).num_rows for i in range(groups.num_row_groups)) < 25 + 10
    sql_diff.write_changes(warehouse.url, engine, tables, TRACK, MODEL, whole, slice_rows=1000)
    assert pl.read_parquet(streamed).sort(KEY).equals(pl.read_parquet(whole).sort(KEY))
    assert pl.read_parquet(streamed)[KIND].unique().to_list() == ["added"]
    assert pl.read_parquet(streamed)[KEY].is_sorted()  # in key order, as the notes are best inserted


def test_a_few_changes_of_a_big_model_read_by_index_in_slices_match_one_read(engine_warehouse, tmp_path) -> None:
    warehouse, tables, engine = engine_warehouse
    _seed_users(warehouse, 100)
    store = WarehouseState(engine, tables, TRACK.name)
    warehouse_run(warehouse.url, engine, tables, store, TRACK, tmp_path)
    warehouse.execute(
        "update users set plan = 'pro' where id in (3, 40)",
        "delete from users where id in (7, 8)",
        "insert into users values (500, 'u500', 'n@x.io', 'team', 1, 'é')",
    )
    sql_diff.take_snapshot(warehouse.url, engine, tables, MODEL)
    assert sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True) == {
        "added": 1,
        "changed": 2,
        "removed": 2,
    }  # 5 keys of 101: on PostgreSQL, each slice read by index lookups, with no work tables
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda _c, _r, statement, *_: statements.append(statement))
    read = {}
    for slice_rows in (2, 1000):
        path = tmp_path / f"changes-{slice_rows}.parquet"
        sql_diff.write_changes(warehouse.url, engine, tables, TRACK, MODEL, path, slice_rows=slice_rows)
        read[slice_rows] = pl.read_parquet(path).sort(KEY)
    made = [s for s in statements if "CREATE" in s and "diff_news__" in s]
    assert bool(made) == (engine.dialect.name == "duckdb")
    assert read[2].equals(read[1000])
    assert read[2][KEY].to_list() == ["3", "40", "500", "7", "8"]


@pytest.mark.postgres
def test_more_slices_than_are_read_straight_are_gathered_in_work_tables(postgres_engine, tmp_path) -> None:
    """Each slice read straight scans the diff table once: past `DIRECT_SLICES`, the work tables scan it once."""
    postgres_warehouse, tables, engine = postgres_engine
    _seed_users(postgres_warehouse, 300)
    warehouse_run(postgres_warehouse.url, engine, tables, WarehouseState(engine, tables, TRACK.name), TRACK, tmp_path)
    postgres_warehouse.execute("update users set plan = 'pro' where id < 22")  # 22 keys of 300: by index
    sql_diff.take_snapshot(postgres_warehouse.url, engine, tables, MODEL)
    assert sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True)["changed"] == 22
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda _c, _r, statement, *_: statements.append(statement))
    read = {}
    for slice_rows in (1, 3, 1000):  # 22 slices, 8, 1
        statements.clear()
        path = tmp_path / f"changes-{slice_rows}.parquet"
        sql_diff.write_changes(postgres_warehouse.url, engine, tables, TRACK, MODEL, path, slice_rows=slice_rows)
        read[slice_rows] = pl.read_parquet(path).sort(KEY)
        made = any("CREATE" in s and "diff_news__" in s for s in statements)
        assert made == (slice_rows == 1), slice_rows
    assert read[1].equals(read[1000]) and read[3].equals(read[1000])
    assert read[1000].height == 22


def _diff_rows(engine: sa.Engine, tables: StateTables, sync: SyncSpec = TRACK) -> list[tuple]:
    diff = sa.table(
        tables.diff_name(sync.name), sa.column("key"), sa.column("kind"), sa.column("hash"), schema=tables.schema
    )
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(diff.c.key, diff.c.kind, diff.c.hash)).all())


def _has_table(engine: sa.Engine, tables: StateTables, name: str) -> bool:
    return sa.inspect(engine).has_table(name, schema=tables.schema)


@pytest.fixture
def changed_model(postgres_engine, tmp_path) -> tuple[Warehouse, StateTables, sa.Engine]:
    """300 rows delivered twice, then added, changed and removed rows, and a removed row back again, snapshotted."""
    postgres_warehouse, tables, engine = postgres_engine
    _seed_users(postgres_warehouse, 300)
    store = WarehouseState(engine, tables, TRACK.name)
    warehouse_run(postgres_warehouse.url, engine, tables, store, TRACK, tmp_path)
    postgres_warehouse.execute("delete from users where id in (7, 8)")
    warehouse_run(postgres_warehouse.url, engine, tables, store, TRACK, tmp_path)
    postgres_warehouse.execute(
        "insert into users values (7, 'u7', 'back@x.io', 'pro', 1, null), (900, 'u900', 'n@x.io', 'team', 1, 'é')",
        "update users set plan = 'pro' where id between 20 and 60",
        "delete from users where id in (9, 250)",
    )
    sql_diff.take_snapshot(postgres_warehouse.url, engine, tables, MODEL)
    return postgres_warehouse, tables, engine


@pytest.mark.postgres
def test_a_diff_joined_in_parts_on_concurrent_connections_matches_one_statement(changed_model, monkeypatch) -> None:
    _, tables, engine = changed_model
    counts = sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True)  # 301 rows: one statement
    assert counts == {"added": 2, "changed": 41, "removed": 2}
    one_statement = _diff_rows(engine, tables)
    parts_used, insert_in_parts = [], sql_diff.insert_in_parts
    monkeypatch.setattr(sql_diff, "parts_for", lambda *_: 3)  # not the server's 2: any number of parts
    monkeypatch.setattr(sql_diff, "insert_in_parts", lambda *a: parts_used.append(a[-1]) or insert_in_parts(*a))
    assert sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True, parted_rows=0) == counts
    assert parts_used == [3]
    assert _diff_rows(engine, tables) == one_statement
    assert not _has_table(engine, tables, tables.diff_name(TRACK.name, following=True))


def test_a_diff_is_joined_in_parts_on_postgresql_as_it_allows_parallel_queries(engine_warehouse) -> None:
    _, _, engine = engine_warehouse
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            workers = int(conn.execute(sa.text("SHOW max_parallel_workers_per_gather")).scalar_one())
        assert parts_for(engine, 1_000_000) == max(1, min(workers, 8))
    else:
        assert parts_for(engine, 1_000_000) == 1
    assert parts_for(engine, 999_999) == 1


@pytest.mark.postgres
def test_a_snapshot_copied_again_while_the_parts_ran_is_joined_again_in_one_statement(
    changed_model, monkeypatch
) -> None:
    """Another run's snapshot step may replace the model's copy between two parts' reads: the parts are dropped."""
    postgres_warehouse, tables, engine = changed_model
    insert_in_parts = sql_diff.insert_in_parts

    def copied_again_meanwhile(*args) -> None:
        insert_in_parts(*args)
        postgres_warehouse.execute("insert into users values (901, 'u901', 'm@x.io', 'team', 1, null)")
        sql_diff.take_snapshot(postgres_warehouse.url, engine, tables, MODEL)

    monkeypatch.setattr(sql_diff, "insert_in_parts", copied_again_meanwhile)
    counts = sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True, parted_rows=0)
    assert counts == {"added": 3, "changed": 41, "removed": 2}  # 901 too: the new copy, joined in one statement
    assert ("901", "added") in [row[:2] for row in _diff_rows(engine, tables)]
    assert not _has_table(engine, tables, tables.diff_name(TRACK.name, following=True))


@pytest.mark.postgres
def test_a_part_that_fails_leaves_the_last_diff_whole(changed_model, monkeypatch) -> None:
    _, tables, engine = changed_model
    sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True)
    last = _diff_rows(engine, tables)
    insert_in_parts = sql_diff.insert_in_parts

    def second_part_fails(engine_, target, columns, part_query, parts) -> None:
        failing = lambda i: part_query(i).where(sa.text(f"1 / (1 - {i}) = 1"))  # noqa: E731
        insert_in_parts(engine_, target, columns, failing, parts)

    monkeypatch.setattr(sql_diff, "insert_in_parts", second_part_fails)
    with pytest.raises(sa.exc.DataError, match="division by zero"):
        sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True, parted_rows=0)
    assert _diff_rows(engine, tables) == last


@pytest.mark.postgres
def test_the_deliverys_join_finds_changed_rows_by_the_snapshots_key_index(postgres_engine, tmp_path) -> None:
    """The index is built by the key's bytes (COLLATE "C", faster to sort), and the join compares by them too."""
    postgres_warehouse, tables, engine = postgres_engine
    _seed_users(postgres_warehouse, 100)
    tables.create(engine)
    sql_diff.take_snapshot(postgres_warehouse.url, engine, tables, MODEL)
    sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True)
    news, _ = sql_diff._changes_queries(tables, TRACK, MODEL, 4)
    with engine.begin() as conn, joins_by_index(conn):  # as a slice is read when few keys changed
        sql = str(sql_diff._in_slice(news, 0).compile(engine, compile_kwargs={"literal_binds": True}))
        plan = "\n".join(conn.execute(sa.text(f"explain {sql}")).scalars())
    assert "Index Scan using snapshot__users_id_idx" in plan, plan


@pytest.mark.postgres
def test_a_statement_failing_in_a_join_by_index_block_raises_its_own_error(postgres_engine) -> None:
    """Not PostgreSQL's "current transaction is aborted", which a RESET after the failure would raise."""
    _, _, engine = postgres_engine
    with pytest.raises(sa.exc.ProgrammingError, match="no_such_table"), engine.begin() as conn, joins_by_index(conn):
        conn.execute(sa.text("SELECT * FROM no_such_table"))


def test_a_models_copy_in_the_making_never_takes_the_name_of_another_models_copy(engine_warehouse) -> None:
    """`users__next` is a model name like any other: copying `users` leaves its copy alone."""
    warehouse, tables, engine = engine_warehouse
    _seed_users(warehouse, 10)
    tables.create(engine)
    other = ModelSpec(name="users__next", table="users", primary_key="id")
    sql_diff.take_snapshot(warehouse.url, engine, tables, other)
    sql_diff.take_snapshot(warehouse.url, engine, tables, MODEL)
    sql_diff.check_snapshot_kept(engine, tables, other)
    assert _has_table(engine, tables, tables.snapshot_name(other.name))
    assert tables.snapshot_name("users", following=True) != tables.snapshot_name("users__next")
    assert tables.diff_name("lifecycle", following=True) != tables.diff_name("lifecycle__next")


def test_repeated_keys_are_counted_and_null_keys_are_not(engine_warehouse) -> None:
    warehouse, tables, engine = engine_warehouse
    warehouse.execute(
        *CHANGES[0],
        "insert into users values (1, 'u9', 'z@x.io', 'pro', 1, null), (null, 'u8', null, null, null, null)",
    )
    tables.create(engine)
    assert sql_diff.take_snapshot(warehouse.url, engine, tables, MODEL).duplicate_keys == 1
    warehouse.execute("delete from users where user_id = 'u9'")
    counts = sql_diff.take_snapshot(warehouse.url, engine, tables, MODEL)
    assert (counts.rows, counts.null_key_rows, counts.duplicate_keys) == (6, 2, 0)


@pytest.mark.postgres
def test_a_snapshot_emptied_by_a_warehouse_restart_is_refused(postgres_engine) -> None:
    """PostgreSQL empties unlogged tables when it recovers from a crash: that must not read as every row removed."""
    postgres_warehouse, tables, engine = postgres_engine
    postgres_warehouse.execute(*CHANGES[0])
    WarehouseState(engine, tables, TRACK.name)
    sql_diff.take_snapshot(postgres_warehouse.url, engine, tables, MODEL)
    with engine.begin() as conn:  # what crash recovery does to an unlogged table
        assert (
            conn.execute(
                sa.text(f"select relpersistence from pg_class where oid = '{tables.schema}.snapshot__users'::regclass")
            ).scalar()
            == "u"
        )
        conn.execute(sa.text(f"truncate {tables.schema}.snapshot__users"))
    with pytest.raises(sql_diff.WarehouseDiffError, match="is empty though 5 rows were copied"):
        sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True)


def test_the_lease_keeps_a_second_run_out(engine_warehouse) -> None:
    warehouse, tables, engine = engine_warehouse
    first = WarehouseState(engine, tables, TRACK.name, run_id="run-a")
    second = WarehouseState(engine, tables, TRACK.name, run_id="run-b")
    with first.lock(), pytest.raises(StateError, match="already running \\(run run-a"), second.lock():
        pass
    with second.lock():
        pass


def test_a_dead_runs_lease_expires(engine_warehouse) -> None:
    _, tables, engine = engine_warehouse
    store = WarehouseState(engine, tables, TRACK.name, run_id="run-new")
    leases = tables.leases
    with engine.begin() as conn:
        now = conn.execute(sa.select(sa.func.current_timestamp())).scalar_one()
        conn.execute(
            sa.insert(leases).values(
                sync=TRACK.name, holder="gone:1:x", run_id="run-dead", renewed_at=now, ttl_seconds=300
            )
        )
    with pytest.raises(StateError, match="already running \\(run run-dead, on gone:1:x\\).*expires at"), store.lock():
        pass
    with engine.begin() as conn:  # its last renewal was long ago
        conn.execute(sa.update(leases).values(renewed_at=now - dt.timedelta(seconds=301)))
    with store.lock(), engine.connect() as conn:
        assert conn.execute(sa.select(leases.c.run_id)).scalars().all() == ["run-new"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(leases)).scalar_one() == 0


def test_a_run_that_lost_its_lease_writes_nothing(engine_warehouse) -> None:
    _, tables, engine = engine_warehouse
    store = WarehouseState(engine, tables, TRACK.name, run_id="run-a")
    rows = pl.DataFrame({KEY: ["k"], CONTENT: ["{}"], HASH: [1]}, schema_overrides={HASH: pl.UInt64})
    with pytest.raises(StateError, match="lease expired and another run took it"), store.lock():
        store.begin_run()
        with engine.begin() as conn:  # another run took the lease after this one's expired
            conn.execute(sa.update(tables.leases).values(holder="other:2:y"))
        store.record(rows)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.journal)).scalar_one() == 0


def test_a_sync_row_deleted_by_hand_is_refused_not_started_over(engine_warehouse, tmp_path) -> None:
    warehouse, tables, engine = engine_warehouse
    warehouse.execute(*CHANGES[0])
    store = WarehouseState(engine, tables, TRACK.name)
    warehouse_run(warehouse.url, engine, tables, store, TRACK, tmp_path)
    with engine.begin() as conn:
        conn.execute(sa.delete(tables.syncs))
    with pytest.raises(StateError, match="has no row for it but .*delivered has its rows"):
        WarehouseState(engine, tables, TRACK.name)


def test_delivered_rows_doubled_by_hand_stop_the_diff(engine_warehouse, tmp_path) -> None:
    warehouse, tables, engine = engine_warehouse
    warehouse.execute(*CHANGES[0])
    store = WarehouseState(engine, tables, TRACK.name)
    warehouse_run(warehouse.url, engine, tables, store, TRACK, tmp_path)
    delivered = tables.delivered
    with engine.begin() as conn:
        conn.execute(
            sa.insert(delivered).from_select(
                ["sync", "key", "content", "gen", "hash"],
                sa.select(
                    delivered.c.sync, delivered.c.key, delivered.c.content, delivered.c.gen, delivered.c.hash + 1
                ).where(delivered.c.key == "1"),
            )
        )
    sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True)
    with pytest.raises(sql_diff.WarehouseDiffError, match="more than one row for the keys \\['1'\\]"):
        sql_diff.write_changes(warehouse.url, engine, tables, TRACK, MODEL, tmp_path / "changes.parquet")
    with engine.begin() as conn:  # both rows now differ from the model's: the key is in the diff twice
        conn.execute(sa.update(delivered).where(delivered.c.key == "1").values(hash=delivered.c.hash + 7))
    with pytest.raises(sql_diff.WarehouseDiffError, match="more than one row for the keys \\['1'\\]"):
        sql_diff.find_changes(engine, tables, TRACK, MODEL, trust_hashes=True)


@pytest.mark.postgres
def test_a_user_who_cannot_create_the_schema_is_told_what_to_grant(postgres_warehouse) -> None:
    admin = sa.create_engine(POSTGRES_ADMIN_URL)
    role = f"ss_reader_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"create role {role} login"))
    reader = sa.create_engine(sa.make_url(POSTGRES_ADMIN_URL).set(username=role))
    try:
        denied = pytest.raises(StateTablesError, match="cannot create the schema 'ss_denied'.*Grant the sync's")
        with denied:
            StateTables("ss_denied").create(reader)
    finally:
        reader.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"drop role {role}"))
        admin.dispose()


def test_a_schema_name_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(StateTablesError, match="warehouse_schema is 'a; drop'"):
        StateTables("a; drop")


@pytest.mark.postgres
def test_the_journal_index_of_earlier_versions_is_dropped_and_the_delivered_rows_keep_theirs(
    postgres_warehouse,
) -> None:
    schema = f"ss_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_warehouse.url)
    try:
        tables = StateTables(schema)
        tables.create(engine)
        with engine.begin() as conn:
            conn.execute(sa.text(f"create index journal_sync_key on {schema}.journal (sync, key)"))
        tables.create(engine)  # what every step does first
        with engine.connect() as conn:
            indexes = {
                t: {i["name"] for i in sa.inspect(conn).get_indexes(t, schema=schema)} for t in ("journal", "delivered")
            }
        assert indexes == {"journal": set(), "delivered": {"delivered_sync_key"}}
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop schema if exists {schema} cascade"))
        engine.dispose()


@pytest.mark.postgres
def test_a_user_who_may_not_drop_the_old_journal_index_keeps_it_and_runs(postgres_warehouse) -> None:
    schema, role = f"ss_{uuid.uuid4().hex[:10]}", f"ss_user_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL)
    StateTables(schema).create(admin)
    with admin.begin() as conn:
        conn.execute(sa.text(f"create index journal_sync_key on {schema}.journal (sync, key)"))
        conn.execute(sa.text(f"create role {role} login"))
        conn.execute(sa.text(f"grant create on database {admin.url.database} to {role}"))
        conn.execute(sa.text(f"grant usage, create on schema {schema} to {role}"))
        conn.execute(sa.text(f"grant select, insert, update, delete on all tables in schema {schema} to {role}"))
    user = sa.create_engine(sa.make_url(POSTGRES_ADMIN_URL).set(username=role))
    try:
        StateTables(schema).create(user)  # not the index's owner: no error
        with admin.connect() as conn:
            assert [i["name"] for i in sa.inspect(conn).get_indexes("journal", schema=schema)] == ["journal_sync_key"]
    finally:
        user.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"drop schema if exists {schema} cascade"))
            conn.execute(sa.text(f"revoke create on database {admin.url.database} from {role}"))
            conn.execute(sa.text(f"drop role {role}"))
        admin.dispose()
