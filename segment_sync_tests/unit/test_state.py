"""A sync's durable state: meta, delivered rows, the journal of a run, recovery and the lock."""

from __future__ import annotations

import json
import multiprocessing
import signal
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segment_sync.diff.keyed_diff import compute_diff
from segment_sync.events.row_builder import DiffRow, build_outcomes
from segment_sync.spec import SyncSpec
from segment_sync.storage.durable_file import write_bytes
from segment_sync.storage.state import STATE_FORMAT, StateError, SyncState
from segment_sync.values.row_columns import AFTER, BEFORE, BEFORE_GEN, CONTENT, DELIVERED_SCHEMA, GEN, HASH, KEY, KIND


def rows(state: SyncState) -> list[tuple[str, str | None, int]]:
    return list(state.delivered().select(KEY, CONTENT, GEN).collect().sort(KEY).iter_rows())


def noted(pairs: Iterable[tuple[str, str | None]]) -> pl.DataFrame:
    """Rows to record: key and content, with a row hash standing in for the snapshot's (null when removed)."""
    keys, contents = zip(*pairs, strict=True) if pairs else ((), ())
    frame = pl.DataFrame({KEY: list(keys), CONTENT: list(contents)}, schema={KEY: pl.String, CONTENT: pl.String})
    return frame.with_columns(pl.when(pl.col(CONTENT).is_not_null()).then(pl.col(CONTENT).hash()).alias(HASH))


def new_state(tmp_path: Path, name: str = "users_lifecycle") -> SyncState:
    return SyncState(tmp_path / "syncs" / name, name)


# --- meta ------------------------------------------------------------------------------------------


def test_new_state_creates_meta(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    raw = json.loads(state.meta_path.read_bytes())
    assert raw["format"] == STATE_FORMAT == 3
    assert raw["generation"] == 0
    assert raw["baseline_done"] is False
    assert str(uuid.UUID(raw["sync_uuid"])) == raw["sync_uuid"] == state.meta.sync_uuid
    assert not state.delivered_path.exists()
    assert not state.journal_path.exists()


def test_uuid_is_kept_and_differs_per_sync(tmp_path: Path) -> None:
    first = new_state(tmp_path)
    again = new_state(tmp_path)
    other = new_state(tmp_path, "other")
    assert again.meta.sync_uuid == first.meta.sync_uuid
    assert other.meta.sync_uuid != first.meta.sync_uuid


def test_empty_delivered(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    frame = state.delivered().collect()
    assert frame.height == 0
    assert dict(frame.schema) == DELIVERED_SCHEMA
    assert state.delivered_row_count() == 0


def test_begin_run_increments_generation(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    assert state.begin_run() == 1
    assert state.begin_run() == 2
    assert new_state(tmp_path).meta.generation == 2
    assert new_state(tmp_path).begin_run() == 3


def test_meta_missing_with_delivered_rows_is_an_error(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", "x")]))
    state.commit()
    state.meta_path.unlink()
    with pytest.raises(StateError, match="meta.json is missing but delivered rows exist"):
        new_state(tmp_path)
    assert state.delivered_path.exists()  # nothing was reset


def test_meta_missing_with_a_journal_is_an_error(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", "x")]))
    state.meta_path.unlink()
    with pytest.raises(StateError, match="users_lifecycle"):
        new_state(tmp_path)


def test_unknown_meta_format_is_an_error(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    raw = json.loads(state.meta_path.read_bytes())
    state.meta_path.write_bytes(orjson.dumps({**raw, "format": 99}))
    with pytest.raises(StateError, match="format 99"):
        new_state(tmp_path)


# --- record and commit -----------------------------------------------------------------------------


def test_record_and_commit(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    gen = state.begin_run()
    state.record(noted([("b", '{"v":2}'), ("a", '{"v":1}')]))
    assert state.journal_path.exists()
    state.commit()
    assert not state.journal_path.exists()
    assert rows(state) == [("a", '{"v":1}', gen), ("b", '{"v":2}', gen)]
    assert state.meta.baseline_done is True
    assert json.loads(state.meta_path.read_bytes())["baseline_done"] is True
    assert new_state(tmp_path).meta.baseline_done is True
    assert sorted(p.name for p in state.root.iterdir()) == ["delivered.parquet", "meta.json"]


def test_journal_is_one_fsynced_line_per_row(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(pl.DataFrame({KEY: ["a", "b"], CONTENT: ["x", None], HASH: [2**64 - 1, None]}))
    state.record(pl.DataFrame({KEY: ["c"], CONTENT: ["z"], HASH: [7]}))
    lines = state.journal_path.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {"g": 1, "k": "a", "c": "x", "h": 2**64 - 1},
        {"g": 1, "k": "b", "c": None, "h": None},
        {"g": 1, "k": "c", "c": "z", "h": 7},
    ]
    state.commit()
    assert state.delivered().select(KEY, HASH).collect().sort(KEY).rows() == [("a", 2**64 - 1), ("b", None), ("c", 7)]


def test_empty_record_writes_nothing(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([]))
    assert not state.journal_path.exists()


def test_commit_without_rows_marks_the_baseline(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.commit()
    assert state.meta.baseline_done is True
    assert not state.delivered_path.exists()


def test_second_run_updates_only_its_rows(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", "a1"), ("b", "b1"), ("c", "c1")]))
    state.commit()
    state.begin_run()
    state.record(noted([("b", "b2"), ("c", None), ("d", "d2")]))
    state.commit()
    assert rows(state) == [("a", "a1", 1), ("b", "b2", 2), ("c", None, 2), ("d", "d2", 2)]


def test_last_record_of_a_key_wins(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", "first")]))
    state.record(noted([("a", "second"), ("b", "x")]))
    state.record(noted([("b", None)]))
    state.commit()
    assert rows(state) == [("a", "second", 1), ("b", None, 1)]


def test_tombstones_kept_and_not_counted(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", "x"), ("b", "y"), ("c", "z")]))
    state.commit()
    state.begin_run()
    state.record(noted([("b", None)]))
    state.commit()
    assert rows(state)[1] == ("b", None, 2)
    assert state.delivered().collect().height == 3
    assert state.delivered_row_count() == 2


def test_rows_noted_in_files_are_folded_at_commit(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    gen = state.begin_run()
    state.record_file(noted([("b", '{"v":2}'), ("a", '{"v":1}')]))
    state.record_file(noted([]))  # nothing to note: no file
    state.record_file(pl.DataFrame({KEY: ["c"], CONTENT: [None], HASH: [None], GEN: [7]}))  # keeps its generation
    assert len(list(state.root.glob("noted-*.parquet"))) == 2 and not state.journal_path.exists()
    state.commit()
    assert rows(state) == [("a", '{"v":1}', gen), ("b", '{"v":2}', gen), ("c", None, 7)]
    assert sorted(p.name for p in state.root.iterdir()) == ["delivered.parquet", "meta.json"]


def test_the_journal_then_the_later_file_wins_for_a_key_noted_twice(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", "journal"), ("d", "journal")]))
    state.record_file(noted([("a", "first file"), ("b", "first file"), ("c", "first file")]))
    state.record_file(noted([("a", "second file"), ("b", "second file")]))
    state.commit()
    assert [(k, c) for k, c, _ in rows(state)] == [
        ("a", "journal"),
        ("b", "second file"),
        ("c", "first file"),
        ("d", "journal"),
    ]


def test_a_dead_run_s_files_are_folded_by_the_next_run(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record_file(noted([("a", "a1"), ("b", "b1")]))
    state.commit()
    state.begin_run()
    state.record_file(noted([("a", "a2")]))
    state.record(noted([("c", "c2")]))
    (state.root / "noted-99999999999999999999-1-000009.parquet.tmp").write_bytes(b"PAR1 half written")
    # The process dies here: no commit.
    nxt = new_state(tmp_path)
    assert nxt.begin_run() == 3
    assert rows(nxt) == [("a", "a2", 2), ("b", "b1", 1), ("c", "c2", 2)]
    assert sorted(p.name for p in nxt.root.iterdir()) == ["delivered.parquet", "meta.json"]  # the torn file too


def test_refolding_files_after_a_crash_between_replace_and_unlink_is_harmless(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record_file(noted([("a", "x"), ("b", None)]))
    [file] = state.root.glob("noted-*.parquet")
    kept = file.read_bytes()
    state.commit()
    file.write_bytes(kept)
    nxt = new_state(tmp_path)
    nxt.begin_run()
    assert rows(nxt) == [("a", "x", 1), ("b", None, 1)]


def test_meta_missing_with_noted_files_is_an_error(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record_file(noted([("a", "x")]))
    state.meta_path.unlink()
    with pytest.raises(StateError, match="meta.json is missing"):
        new_state(tmp_path)


# --- recovery --------------------------------------------------------------------------------------


def test_dead_run_journal_folded_by_next_begin_run(tmp_path: Path) -> None:
    dead = new_state(tmp_path)
    dead.begin_run()
    dead.record(noted([("a", "x"), ("b", "y")]))
    # The process dies here: no commit.
    assert dead.journal_path.exists()

    nxt = new_state(tmp_path)
    assert nxt.meta.generation == 1
    assert nxt.meta.baseline_done is False
    assert nxt.begin_run() == 2
    assert not nxt.journal_path.exists()
    assert rows(nxt) == [("a", "x", 1), ("b", "y", 1)]
    assert nxt.delivered_row_count() == 2


def test_recover_folds_a_dead_run(tmp_path: Path) -> None:
    dead = new_state(tmp_path)
    dead.begin_run()
    dead.record(noted([("a", "x")]))
    other = new_state(tmp_path)
    other.recover()
    assert rows(other) == [("a", "x", 1)]
    assert not other.journal_path.exists()
    other.recover()  # idempotent, no journal
    assert rows(other) == [("a", "x", 1)]


def test_dead_run_after_a_good_run(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", "a1"), ("b", "b1")]))
    state.commit()
    state.begin_run()
    state.record(noted([("a", "a2")]))
    state2 = new_state(tmp_path)
    state2.begin_run()
    state2.record(noted([("c", "c3")]))
    state2.commit()
    assert rows(state2) == [("a", "a2", 2), ("b", "b1", 1), ("c", "c3", 3)]


def test_torn_last_journal_line_ignored(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", "x"), ("b", "y")]))
    with open(state.journal_path, "ab") as f:
        f.write(b'{"g":1,"k":"c","c":"z')  # the process died mid-write
    nxt = new_state(tmp_path)
    nxt.begin_run()
    assert rows(nxt) == [("a", "x", 1), ("b", "y", 1)]
    assert not nxt.journal_path.exists()


def test_journal_with_only_a_torn_line(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.journal_path.write_bytes(b'{"g":1,"k":"a"')
    state.commit()
    assert not state.journal_path.exists()
    assert rows(state) == []


def test_refold_after_crash_between_replace_and_unlink(tmp_path: Path) -> None:
    """If a run dies after writing delivered.parquet but before removing the journal, folding again is harmless."""
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", "x"), ("b", None)]))
    journal = state.journal_path.read_bytes()
    state.commit()
    state.journal_path.write_bytes(journal)
    nxt = new_state(tmp_path)
    nxt.begin_run()
    assert rows(nxt) == [("a", "x", 1), ("b", None, 1)]


def test_no_temporary_files_left(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    for _ in range(3):
        state.begin_run()
        state.record(noted([("a", str(state.meta.generation))]))
        state.commit()
    assert not [p.name for p in state.root.iterdir() if p.name.endswith(".tmp")]


def test_durable_write_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_bytes(path, b"one")
    write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


# --- with the diff and events: unacknowledged rows are retried with the same messageIds -------------


def test_unacknowledged_rows_come_back_with_the_same_message_ids(tmp_path: Path) -> None:
    sync = SyncSpec(name="s", model="m", type="identify", user_id="uid", fields=["plan"])
    snapshot = pl.DataFrame({"uid": ["u1", "u2", "u3"], "plan": ["free", "pro", "team"]})
    hashes: dict[str, int] = {}

    def outcomes(state: SyncState) -> list:
        state.recover()
        diff = compute_diff(snapshot, ["uid"], sync.sent_columns, state.delivered()).collect().sort(KEY)
        nonlocal hashes
        hashes = dict(zip(diff[KEY], diff[HASH], strict=True))
        gen_rows = [DiffRow(*r) for r in diff.select(KEY, KIND, BEFORE_GEN, BEFORE, AFTER).iter_rows()]
        return list(build_outcomes(sync, gen_rows, state.meta.sync_uuid, initial=not state.meta.baseline_done))

    state = new_state(tmp_path)
    first = outcomes(state)
    state.begin_run()
    ids = {o.row.key: o.event.message_id for o in first if o.event}
    assert sorted(ids) == ["u1", "u2", "u3"]
    # Only u1 and u3 are acknowledged; the run then dies.
    acknowledged = [o.row for o in first if o.row.key in ("u1", "u3")]
    state.record(
        pl.DataFrame({KEY: [r.key for r in acknowledged], CONTENT: [r.after for r in acknowledged]}).with_columns(
            pl.Series(HASH, [hashes[r.key] for r in acknowledged], pl.UInt64)
        )
    )

    state = new_state(tmp_path)
    second = outcomes(state)
    assert [(o.row.key, o.row.kind) for o in second] == [("u2", "added")]
    assert second[0].event is not None
    assert second[0].event.message_id == ids["u2"]
    assert second[0].event.payload == next(o.event.payload for o in first if o.row.key == "u2")


# --- the lock --------------------------------------------------------------------------------------


def test_lock_is_reentrant_after_release(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    with state.lock():
        pass
    with state.lock():
        pass


def test_second_lock_in_the_same_process_conflicts(tmp_path: Path) -> None:
    """flock locks belong to the open file description, so a second open() conflicts even in one process."""
    one, two = new_state(tmp_path), new_state(tmp_path)
    with one.lock():
        with pytest.raises(StateError, match="'users_lifecycle' is already running in another process"), two.lock():
            pass
        with pytest.raises(StateError, match="sent nothing"), one.lock():
            pass
    with two.lock():
        pass


def test_other_syncs_do_not_conflict(tmp_path: Path) -> None:
    with new_state(tmp_path, "a").lock(), new_state(tmp_path, "b").lock():
        pass


def _hold_lock(root: str, name: str, locked: Any, release: Any) -> None:
    """In a child process: hold the sync's lock until told to let go."""
    with SyncState(Path(root), name).lock():
        locked.set()
        release.wait(30)


def _start_holder(tmp_path: Path) -> tuple[Any, Any, Any]:
    # fork: the child reuses the parent's imports, so it starts in milliseconds. It only opens and
    # locks a file, which is safe after a fork.
    ctx = multiprocessing.get_context("fork")
    locked, release = ctx.Event(), ctx.Event()
    root = tmp_path / "syncs" / "users_lifecycle"
    child = ctx.Process(target=_hold_lock, args=(str(root), "users_lifecycle", locked, release), daemon=True)
    child.start()
    assert locked.wait(10), "the child never took the lock"
    return child, locked, release


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    new_state(tmp_path)  # create meta before the child, so both agree on it
    child, _, release = _start_holder(tmp_path)
    try:
        with pytest.raises(StateError) as info, new_state(tmp_path).lock():
            pass
        message = str(info.value)
        assert "'users_lifecycle' is already running in another process" in message
        assert "this run sent nothing" in message
        # The holder finishes: the lock is free again.
        release.set()
        child.join(10)
        assert child.exitcode == 0
        with new_state(tmp_path).lock():
            pass
    finally:
        if child.is_alive():
            child.kill()
            child.join()


def test_lock_freed_when_the_holder_dies(tmp_path: Path) -> None:
    new_state(tmp_path)
    child, _, _ = _start_holder(tmp_path)
    try:
        with pytest.raises(StateError), new_state(tmp_path).lock():
            pass
    finally:
        child.kill()
        child.join()
    assert child.exitcode == -signal.SIGKILL
    with new_state(tmp_path).lock():
        pass


def test_delivered_schema_on_disk(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record(noted([("a", None)]))
    state.commit()
    frame = pl.read_parquet(state.delivered_path)
    assert dict(frame.schema) == {KEY: pl.String, CONTENT: pl.String, GEN: pl.Int64, HASH: pl.UInt64}


def test_state_of_format_1_is_upgraded_in_place(tmp_path: Path) -> None:
    """A state written before row hashes existed keeps its rows; their hashes are placeholders until the next diff."""
    root = tmp_path / "syncs" / "old"
    root.mkdir(parents=True)
    meta = {"format": 1, "sync_uuid": "u-1", "generation": 3, "baseline_done": True, "column_kinds": None}
    (root / "meta.json").write_bytes(orjson.dumps(meta))
    pl.DataFrame(
        {KEY: ["a", "b"], CONTENT: ['{"v":1}', None], GEN: [2, 3]},
        schema={KEY: pl.String, CONTENT: pl.String, GEN: pl.Int64},
    ).write_parquet(root / "delivered.parquet")
    (root / "journal.jsonl").write_bytes(b'{"g":3,"k":"c","c":"{\\"v\\":3}"}\n{"g":3,"k":"d"')
    state = SyncState(root, "old")
    assert (state.meta.sync_uuid, state.meta.generation, state.meta.hash_basis) == ("u-1", 3, None)
    assert json.loads(state.meta_path.read_bytes())["format"] == STATE_FORMAT
    state.recover()
    frame = state.delivered().collect().sort(KEY)
    assert frame.rows() == [("a", '{"v":1}', 2, 0), ("b", None, 3, None), ("c", '{"v":3}', 3, 0)]
    assert state.delivered_row_count() == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.dictionaries(
        st.text(st.characters(codec="utf-8"), max_size=12),
        st.none() | st.text(st.characters(codec="utf-8"), max_size=40).map(lambda s: orjson.dumps({"v": s}).decode()),
        max_size=30,
    ),
    torn=st.booleans(),
)
def test_any_key_and_content_come_back_from_the_journal_as_they_were_noted(
    tmp_path_factory: pytest.TempPathFactory, pairs: dict[str, str | None], torn: bool
) -> None:
    state = new_state(tmp_path_factory.mktemp("state"))
    gen = state.begin_run()
    state.record(noted(pairs.items()))
    if torn:  # a dead run's last line, cut while it was written: that row is not noted
        with open(state.journal_path, "ab") as f:
            f.write(b'{"g":1,"k":"cut","c":"{\\"v')
    state.commit()
    assert rows(state) == sorted((k, c, gen) for k, c in pairs.items())


# --- segments: a run writes what it noted, and compaction folds them into delivered.parquet ---------------------


def test_a_run_writes_a_segment_of_its_rows_and_leaves_delivered_parquet_alone(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record_file(noted([(f"k{i:03d}", f"v{i}") for i in range(100)]))
    state.commit()
    base = state.delivered_path.read_bytes()
    gen = state.begin_run()
    state.record(noted([("k001", "changed"), ("k002", None), ("new", "n")]))
    state.commit()
    assert state.delivered_path.read_bytes() == base
    [segment] = state.folder.segments()
    assert pl.read_parquet(segment).height == 3
    assert rows(state)[:3] == [("k000", "v0", 1), ("k001", "changed", gen), ("k002", None, gen)]
    assert ("new", "n", gen) in rows(state) and len(rows(state)) == 101
    assert state.delivered_row_count() == 100  # k002 is a tombstone now, "new" is new


def test_segments_are_compacted_once_they_hold_a_fifth_of_the_rows(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record_file(noted([(f"k{i:02d}", "v") for i in range(50)]))
    state.commit()
    for run in range(1, 4):  # 5 rows each: 5 and 10 rows stay as segments, 15 > 20% of 50 compacts them
        state.begin_run()
        state.record(noted([(f"k{i:02d}", f"v{run}") for i in range(run * 5, run * 5 + 5)]))
        before = rows(state)
        state.commit()
        assert len(state.folder.segments()) == (run if run < 3 else 0)
    expected = {k: c for k, c, _ in before} | {f"k{i:02d}": "v3" for i in range(15, 20)}
    assert {k: c for k, c, _ in rows(state)} == expected


def test_a_fold_repeated_after_a_crash_before_its_notes_were_removed_changes_nothing(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record_file(noted([(f"k{i:02d}", "v") for i in range(50)]))
    state.commit()
    state.begin_run()
    state.record(noted([("k01", "w"), ("k02", None)]))
    journal = state.journal_path.read_bytes()
    state.commit()
    state.journal_path.write_bytes(journal)  # as if the run died after writing the segment
    again = new_state(tmp_path)
    again.recover()
    assert len(again.folder.segments()) == 2
    assert rows(again) == rows(state) and again.delivered_row_count() == 49


def test_a_compaction_repeated_after_a_crash_before_the_segments_were_removed_changes_nothing(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record_file(noted([(f"k{i:02d}", "v") for i in range(50)]))
    state.commit()
    state.begin_run()
    state.record(noted([("k01", "w"), ("k02", None), ("x", "y")]))
    state.commit()
    [segment] = state.folder.segments()
    kept = segment.read_bytes()
    expected = rows(state)
    state._compact()
    segment.write_bytes(kept)  # as if the run died after renaming delivered.parquet
    assert rows(new_state(tmp_path)) == expected


def test_a_reset_sets_the_segments_aside_with_delivered_parquet(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.begin_run()
    state.record_file(noted([(f"k{i:02d}", "v") for i in range(50)]))
    state.commit()
    state.begin_run()
    state.record(noted([("k01", "w")]))
    state.commit()
    backup = state.reset()
    assert backup is not None and pl.read_parquet(backup).filter(pl.col(KEY) == "k01")[CONTENT].item() == "w"
    assert state.folder.segments() == [] and rows(state) == []


def test_a_state_of_format_2_is_read_and_marked_format_3(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    raw = json.loads(state.meta_path.read_bytes())
    state.meta_path.write_text(json.dumps({**raw, "format": 2}))
    new_state(tmp_path)
    assert json.loads(state.meta_path.read_bytes())["format"] == 3


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    runs=st.lists(
        st.lists(
            st.tuples(st.sampled_from("abcdefgh"), st.none() | st.sampled_from(["1", "2", "3"]), st.booleans()),
            max_size=6,
            unique_by=lambda note: note[0],  # a run notes a key once (see SyncState.record_file)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_sequence_of_runs_gives_the_same_state_with_segments_and_without(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, runs: list[list[tuple]]
) -> None:
    """Each run notes rows (key, content or removed, in a file or the journal); a later run's note of a key wins."""
    outcomes = []
    for share in (0.0, 10.0**9):  # compacted after every run, or never
        monkeypatch.setattr("segment_sync.storage.state.COMPACT_SHARE", share)
        state = new_state(tmp_path_factory.mktemp("state"))
        expected: dict[str, tuple[str | None, int]] = {}
        for notes in runs:
            gen = state.begin_run()
            for key, content, in_file in notes:
                (state.record_file if in_file else state.record)(noted([(key, content)]))
                expected[key] = (content, gen)
            state.commit()
            assert rows(state) == sorted((k, c, g) for k, (c, g) in expected.items())
            assert state.delivered_row_count() == sum(c is not None for c, _ in expected.values())
        outcomes.append(rows(state))
    assert outcomes[0] == outcomes[1]
