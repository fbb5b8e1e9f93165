"""The benchmark's emulator in several processes on one port: counts summed, duplicates found across them."""

from __future__ import annotations

import time

import requests

from benchmarks.emulator_process import EmulatorProcesses

KEY = "wk_processes_0123456789abcdefghi"


def post(url: str, *events: dict) -> int:
    """POST a batch on a new connection (so the kernel may pick either process)."""
    body = {"batch": list(events), "sentAt": "2026-01-01T00:00:00.000Z"}
    return requests.post(url + "/v1/batch", json=body, auth=(KEY, ""), timeout=5).status_code


def track(n: int) -> dict:
    return {"type": "track", "event": "E", "userId": f"u{n}", "messageId": f"m-{n}"}


def test_processes_share_a_port_and_sum_their_counts() -> None:
    with EmulatorProcesses(KEY, processes=2) as emu:
        cpu = emu.cpu_seconds()
        for i in range(30):
            assert post(emu.url, track(i), track(i + 1000)) == 200
        for i in range(30):
            assert post(emu.url, track(i)) == 200  # the same messageIds again, whichever process gets them
        assert post(emu.url, {"type": "track", "userId": "u"}) == 200  # no event name: discarded
        per_process = [c["accepted"] for c in emu.counts_by_process()]
        assert min(per_process) > 0  # both took connections
        assert emu.counts() == {"requests": 61, "accepted": 90, "discarded": 1, "duplicates": 30}
        assert emu.cpu_seconds() > cpu  # the processes' own CPU time, which the send benchmark reports
        emu.reset()
        assert emu.counts() == {"requests": 0, "accepted": 0, "discarded": 0, "duplicates": 0}
        emu.set_latency(0.3)
        started = time.monotonic()
        assert post(emu.url, track(1)) == 200
        assert time.monotonic() - started >= 0.3
