"""Delivery settings in YAML reach the transport: gzip level and requests in flight."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
from dagster.components.testing import create_defs_folder_sandbox

from segment_sync.component import SegmentSettings, SegmentSyncComponent
from segment_sync.delivery import DEFAULT_GZIP_LEVEL, DEFAULT_MAX_IN_FLIGHT, Outbox, SegmentHttp
from segment_sync.resources import SegmentResource


def test_defaults_are_one_gzip_level_and_four_in_flight(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "wk")
    transport = SegmentResource(**SegmentSettings().model_dump()).transport(tmp_path / "outbox.jsonl")
    assert isinstance(transport, SegmentHttp)
    assert (transport.gzip_level, transport.max_in_flight) == (DEFAULT_GZIP_LEVEL, DEFAULT_MAX_IN_FLIGHT) == (1, 4)


def test_yaml_settings_reach_the_transport(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "wk")
    settings = SegmentSettings(gzip_level=6, max_in_flight=1)
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
    ],
)
def test_out_of_range_settings_are_refused_when_the_definitions_load(field: dict[str, int], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        SegmentResource(**SegmentSettings(**field).model_dump())


def test_a_bad_setting_in_yaml_names_the_file_and_the_field() -> None:
    attributes = {
        "models": [{"name": "users", "table": "users", "primary_key": "user_id"}],
        "syncs": [{"name": "traits", "model": "users", "type": "identify", "user_id": "user_id"}],
        "segment": {"max_in_flight": 0},
    }
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            component_cls=SegmentSyncComponent,
            defs_yaml_contents={"type": "segment_sync.SegmentSyncComponent", "attributes": attributes},
        )
        with pytest.raises(Exception) as info, sandbox.load_component_and_build_defs(defs_path=path):
            pass
    text = "".join(str(e) for e in _chain(info.value))
    assert "defs.yaml: attributes.segment.max_in_flight is 0; use 1 (one request at a time) or more" in text


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__
