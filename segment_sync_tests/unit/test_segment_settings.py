"""Delivery settings in YAML reach the transport: gzip level, requests in flight and the batch size's range."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
from dagster.components.testing import create_defs_folder_sandbox

from segment_sync.component import SegmentSyncComponent
from segment_sync.resources import SegmentResource
from segment_sync.segment_api.batching import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MIN_BATCH_BYTES,
    envelope_bytes,
    pack,
    request_body,
    utc_stamp,
)
from segment_sync.segment_api.transport import DEFAULT_GZIP_LEVEL, DEFAULT_MAX_IN_FLIGHT, Outbox, SegmentHttp


def test_defaults_are_one_gzip_level_and_four_in_flight(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "wk")
    transport = SegmentResource().transport(tmp_path / "outbox.jsonl")
    assert isinstance(transport, SegmentHttp)
    assert (transport.gzip_level, transport.max_in_flight) == (DEFAULT_GZIP_LEVEL, DEFAULT_MAX_IN_FLIGHT) == (1, 4)


def test_yaml_settings_reach_the_transport(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "wk")
    settings = SegmentResource(gzip_level=6, max_in_flight=1)
    transport = SegmentResource(**settings.model_dump()).transport(tmp_path / "outbox.jsonl")
    assert isinstance(transport, SegmentHttp)
    assert (transport.gzip_level, transport.max_in_flight) == (6, 1)


def test_the_outbox_sends_one_at_a_time(tmp_path: Path) -> None:
    transport = SegmentResource(destination="outbox", max_in_flight=8).transport(tmp_path / "outbox.jsonl")
    assert isinstance(transport, Outbox) and transport.max_in_flight == 1


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"gzip_level": 0}, r"segment.gzip_level is 0; use 1 \(fastest\) to 9"),
        ({"gzip_level": 10}, r"segment.gzip_level is 10; use 1 \(fastest\) to 9"),
        ({"max_in_flight": 0}, r"segment.max_in_flight is 0; use 1 \(one request at a time\) or more"),
        ({"max_batch_bytes": 475_001}, r"segment.max_batch_bytes is 475001; use 32,094 to 475,000"),
        ({"max_batch_bytes": 32_093}, r"segment.max_batch_bytes is 32093; use 32,094 to 475,000"),
    ],
)
def test_out_of_range_settings_are_refused_when_the_definitions_load(field: dict[str, int], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        SegmentResource(**field)


@pytest.mark.parametrize("size", [MIN_BATCH_BYTES, MAX_BATCH_BYTES])
def test_max_batch_bytes_takes_its_bounds(size: int) -> None:
    assert SegmentResource(max_batch_bytes=size).max_batch_bytes == size


def test_the_smallest_batch_holds_one_event_of_the_largest_size_with_a_write_key() -> None:
    assert MIN_BATCH_BYTES == MAX_EVENT_BYTES + envelope_bytes("k" * 32) == 32_000 + 94
    biggest = b'"' + b"x" * (MAX_EVENT_BYTES - 2) + b'"'
    assert list(pack([biggest, biggest], "k" * 32, max_bytes=MIN_BATCH_BYTES)) == [range(0, 1), range(1, 2)]
    assert len(request_body([biggest], "k" * 32, sent_at=utc_stamp())) == MIN_BATCH_BYTES


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ({"max_in_flight": 0}, "segment.max_in_flight is 0; use 1 (one request at a time) or more"),
        ({"max_batch_bytes": 500_000}, "segment.max_batch_bytes is 500000; use 32,094 to 475,000"),
        ({"max_batch_bytes": 1_000}, "segment.max_batch_bytes is 1000; use 32,094 to 475,000"),
        ({"max_batch_bytes": "475kb"}, "attributes.segment.SegmentResource.max_batch_bytes at "),
        ({"max_batch_byte": 400_000}, "max_batch_byte"),
    ],
)
def test_a_bad_setting_in_yaml_names_the_file_and_the_field(segment: dict[str, object], message: str) -> None:
    attributes = {
        "models": [{"name": "users", "table": "users", "primary_key": "user_id"}],
        "syncs": [{"name": "traits", "model": "users", "type": "identify", "user_id": "user_id"}],
        "segment": segment,
    }
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            component_cls=SegmentSyncComponent,
            defs_yaml_contents={"type": "segment_sync.SegmentSyncComponent", "attributes": attributes},
        )
        with pytest.raises(Exception) as info, sandbox.load_component_and_build_defs(defs_path=path):
            pass
    text = "".join(str(e) for e in _chain(info.value))
    assert message in text and "attributes.segment.SegmentResource." in text and "defs.yaml:" in text


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__
