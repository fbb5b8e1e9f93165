"""Send benchmark: a computed diff delivered to the Segment emulator, next to the official Python client.

Run: ./dev python -m benchmarks.send_bench [--events 200000] [--repeat 3]
An identify sync over a synthetic model, diffed against an empty state (every row added), is delivered by
`sync_run.deliver_diff` through `SegmentHttp` to the emulator, which runs in processes of its own, with 0 and
30 ms of emulated latency and 1, 2, 4 and 8 requests in flight. Also measured, in the same run: the emulator's
own capacity (pre-built gzip bodies posted over several connections), `deliver()` alone on pre-built payloads,
gzip levels 1 and 6, and segment-analytics-python with its defaults and tuned. Every run is checked against
the emulator's counts (all accepted, no duplicates). Medians of --repeat; prints tables and writes
benchmarks/results/send.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import inspect
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import polars as pl

from benchmarks.emulator_process import EmulatorProcesses
from segment_sync.delivery.diff_delivery import CHUNK_ROWS, deliver_diff
from segment_sync.diff.keyed_diff import compute_diff
from segment_sync.events.frame_builder import PAYLOAD, build_event_frame
from segment_sync.segment_api.batching import MAX_BATCH_BYTES, pack, request_body
from segment_sync.segment_api.client import deliver
from segment_sync.segment_api.pacing import Pacer
from segment_sync.segment_api.transport import DEFAULT_GZIP_LEVEL, DEFAULT_MAX_IN_FLIGHT, SegmentHttp
from segment_sync.spec import SyncSpec
from segment_sync.storage.run_log import RunLog
from segment_sync.storage.state import SyncState

WRITE_KEY = "bench_write_key_0123456789abcdef"
SYNC = SyncSpec(
    name="traits",
    model="users",
    type="identify",
    user_id="user_id",
    fields=["email", "plan", "seats", "score", "active", "signed_up_at", "region", "note"],
)
KEY_COLUMNS = ["user_id"]
CAPACITY_CONNECTIONS = 8
OFFICIAL_SETTINGS = {
    "defaults": {},
    "tuned": {"upload_size": 2_500, "thread": DEFAULT_MAX_IN_FLIGHT},  # plus a queue as large as the run
}


def make_snapshot(rows: int) -> pl.DataFrame:
    """A synthetic model: a string key and eight columns of mixed types."""
    i = pl.col("i")
    return pl.select(pl.int_range(rows).alias("i")).select(
        ("user-" + i.cast(pl.String)).alias("user_id"),
        ("u" + i.cast(pl.String) + "@example.com").alias("email"),
        pl.lit(pl.Series(["free", "pro", "team"])).gather(i % 3).alias("plan"),
        (i % 50).cast(pl.Int32).alias("seats"),
        (i * 0.37).alias("score"),
        (i % 7 != 0).alias("active"),
        (pl.datetime(2026, 1, 1, time_zone="UTC") + pl.duration(seconds=i)).alias("signed_up_at"),
        pl.lit(pl.Series(["eu", "us", "apac"])).gather(i % 3).alias("region"),
        pl.when(i % 10 == 0).then(None).otherwise("n" + i.cast(pl.String)).alias("note"),
    )


def computed_diff(snapshot: pl.DataFrame, folder: Path) -> pl.DataFrame:
    """The diff of the snapshot against an empty state: every row added."""
    store = SyncState(folder, SYNC.name)
    return compute_diff(snapshot, KEY_COLUMNS, SYNC.sent_columns, store.delivered()).collect()


def _checked(emu: EmulatorProcesses, expected: int) -> None:
    counts = emu.counts()
    if (counts["accepted"], counts["duplicates"], counts["discarded"]) != (expected, 0, 0):
        raise AssertionError(f"the emulator counted {counts}, expected {expected:,} accepted and nothing else")


def end_to_end(emu: EmulatorProcesses, diff: pl.DataFrame, in_flight: int, gzip_level: int) -> dict[str, float]:
    """deliver_diff from the computed diff until every event is acknowledged (and recorded in the state)."""
    emu.reset()
    with tempfile.TemporaryDirectory() as tmp:
        store = SyncState(Path(tmp) / "state", SYNC.name)
        store.begin_run()
        log = RunLog(Path(tmp) / "state", SYNC.name, "bench")
        http = SegmentHttp(WRITE_KEY, emu.url, gzip_level=gzip_level, max_in_flight=in_flight)
        emulator_cpu, cpu, started = emu.cpu_seconds(), time.process_time(), time.perf_counter()
        result = deliver_diff(SYNC, diff, store, http, log, initial=True, pacer=Pacer())
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        emulator_cpu = emu.cpu_seconds() - emulator_cpu
        log.close()
        http.close()
    events = sum(result.sent.values())
    _checked(emu, events)
    return _rates(events, seconds, cpu, result.bytes_sent, result.requests) | {
        "emulator_cpu_us_per_event": emulator_cpu / events * 1e6
    }


def deliver_only(emu: EmulatorProcesses, payloads: list[bytes], in_flight: int, gzip_level: int) -> dict[str, float]:
    """deliver() alone, from pre-built payloads until every batch is acknowledged."""
    emu.reset()
    http = SegmentHttp(WRITE_KEY, emu.url, gzip_level=gzip_level, max_in_flight=in_flight)
    acknowledged: list[int] = []
    emulator_cpu, cpu, started = emu.cpu_seconds(), time.process_time(), time.perf_counter()
    report = deliver(payloads, http, acknowledged.extend, pacer=Pacer())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    emulator_cpu = emu.cpu_seconds() - emulator_cpu
    http.close()
    if len(acknowledged) != len(payloads) or report.undelivered or report.rejected:
        raise AssertionError(f"deliver() acknowledged {len(acknowledged):,} of {len(payloads):,}")
    _checked(emu, len(payloads))
    return _rates(len(payloads), seconds, cpu, report.bytes_sent, report.requests) | {
        "emulator_cpu_us_per_event": emulator_cpu / len(payloads) * 1e6
    }


def _rates(events: int, seconds: float, cpu: float, body_bytes: int, requests: int) -> dict[str, float]:
    return {
        "events": events,
        "seconds": seconds,
        "events_per_second": events / seconds,
        "sender_cpu_us_per_event": cpu / events * 1e6,
        "requests": requests,
        "bytes_per_request": body_bytes / requests,
        "batch_fill": body_bytes / requests / MAX_BATCH_BYTES,
    }


def request_bodies(payloads: list[bytes]) -> tuple[list[bytes], list[int]]:
    """The request bodies `deliver()` would send (one sentAt), and the events in each."""
    batches = list(pack(payloads, WRITE_KEY))
    stamp = "2026-01-01T00:00:00.000Z"
    bodies = [request_body([payloads[i] for i in r], WRITE_KEY, sent_at=stamp) for r in batches]
    return bodies, [len(r) for r in batches]


def emulator_capacity(emu: EmulatorProcesses, gzipped: list[bytes], counts: list[int]) -> dict[str, float]:
    """Pre-built gzip bodies posted over several keep-alive connections: the events/s the emulator absorbs."""
    emu.reset()
    address = urlsplit(emu.url)
    headers = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
    }
    queue = iter(range(len(gzipped)))
    lock, failures = threading.Lock(), []

    def post_bodies() -> None:
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        try:
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                conn.request("POST", "/v1/batch", gzipped[i], headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    failures.append(response.status)
        finally:
            conn.close()

    threads = [threading.Thread(target=post_bodies) for _ in range(CAPACITY_CONNECTIONS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if failures:
        raise AssertionError(f"the emulator answered {failures[:5]} to pre-built bodies")
    _checked(emu, sum(counts))
    return {"events": sum(counts), "seconds": seconds, "events_per_second": sum(counts) / seconds}


def gzip_costs(bodies: list[bytes], level: int) -> dict[str, float]:
    """CPU time and size of compressing the request bodies at one gzip level, as `SegmentHttp` does."""
    compress = SegmentHttp(WRITE_KEY, gzip_level=level).compress
    cpu = time.process_time()
    sizes = [len(compress(b)) for b in bodies]
    cpu = time.process_time() - cpu
    raw = sum(len(b) for b in bodies)
    return {
        "mb_per_cpu_second": raw / cpu / 1e6,
        "wire_bytes_per_request": sum(sizes) / len(sizes),
        "ratio": raw / sum(sizes),
    }


def official_client(emu: EmulatorProcesses, messages: list[dict[str, Any]], settings: dict[str, int]) -> dict:
    """segment-analytics-python: enqueue every identify call, then flush; count what the emulator accepted."""
    from segment.analytics.client import Client

    emu.reset()
    logging.getLogger("segment").setLevel(logging.CRITICAL)  # one warning per event dropped from a full queue
    errors: list[Exception] = []
    client = Client(WRITE_KEY, host=emu.url, on_error=lambda e, _: errors.append(e), **settings)
    started = time.perf_counter()
    dropped = 0
    for m in messages:
        ok, _ = client.identify(
            user_id=m["userId"], traits=m["traits"], context=m["context"], message_id=m["messageId"]
        )
        dropped += not ok
    client.flush()
    seconds = time.perf_counter() - started
    client.shutdown()
    counts = emu.counts()
    if counts["duplicates"] or counts["discarded"]:
        raise AssertionError(f"the emulator counted {counts} from the official client")
    return {
        "events": len(messages),
        "accepted": counts["accepted"],
        "dropped_by_client": dropped,
        "errors": len(errors),
        "seconds": seconds,
        "events_per_second": counts["accepted"] / seconds,
        "requests": counts["requests"],
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _repeat(times: int, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return _median([measure() for _ in range(times)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every measurement, print the tables and write benchmarks/results/send.json."""
    from benchmarks.measure import save_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latencies-ms", default="0,30", help="emulated round trips, comma-separated")
    parser.add_argument("--in-flight", default="1,2,4,8", help="max_in_flight values, comma-separated")
    parser.add_argument("--emulator-processes", type=int, default=2)
    parser.add_argument("--no-official", action="store_true", help="skip segment-analytics-python")
    args = parser.parse_args(argv)
    latencies = [int(x) for x in args.latencies_ms.split(",")]
    in_flights = [int(x) for x in args.in_flight.split(",")]
    out: dict[str, Any] = {"events": args.events, "repeat": args.repeat, "cores": _cores()}

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        diff = computed_diff(make_snapshot(args.events), Path(tmp))
        out["diff_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    built = pl.concat(
        build_event_frame(SYNC, diff.slice(o, CHUNK_ROWS), "bench-sync", initial=True)
        for o in range(0, diff.height, CHUNK_ROWS)
    )
    out["event_building"] = {"seconds": time.perf_counter() - started}
    out["event_building"]["events_per_second"] = built.height / out["event_building"]["seconds"]
    payloads = built[PAYLOAD].to_list()
    bodies, counts = request_bodies(payloads)
    out["gzip"] = {level: gzip_costs(bodies, level) for level in (1, 6)}
    gzipped = [SegmentHttp(WRITE_KEY).compress(b) for b in bodies]

    with EmulatorProcesses(WRITE_KEY, processes=args.emulator_processes) as emu:
        out["emulator"] = {"processes": args.emulator_processes, "connections": CAPACITY_CONNECTIONS}
        out["emulator"] |= _repeat(args.repeat, lambda: emulator_capacity(emu, gzipped, counts))
        out["end_to_end"], out["deliver_only"] = [], []
        for latency in latencies:
            emu.set_latency(latency / 1000)
            for k in in_flights:
                setting = {"latency_ms": latency, "max_in_flight": k, "gzip_level": DEFAULT_GZIP_LEVEL}
                e2e = _repeat(args.repeat, lambda k=k: end_to_end(emu, diff, k, DEFAULT_GZIP_LEVEL))
                alone = _repeat(args.repeat, lambda k=k: deliver_only(emu, payloads, k, DEFAULT_GZIP_LEVEL))
                out["end_to_end"].append(setting | e2e)
                out["deliver_only"].append(setting | alone)
                _progress(setting, e2e, alone)
        emu.set_latency(0)
        for level in (1, 6):
            alone = _repeat(args.repeat, lambda level=level: deliver_only(emu, payloads, DEFAULT_MAX_IN_FLIGHT, level))
            out["gzip"][level]["deliver_events_per_second"] = alone["events_per_second"]
            out["gzip"][level]["sender_cpu_us_per_event"] = alone["sender_cpu_us_per_event"]
        if not args.no_official:
            out["official"] = _official_runs(emu, payloads, latencies, args.repeat)
            out["official_defaults"] = _official_defaults()

    _summarise(out)
    _print(out)
    save_results("send", out)
    return out


def _official_runs(emu: EmulatorProcesses, payloads: list[bytes], latencies: list[int], repeat: int) -> list[dict]:
    messages = [orjson.loads(p) for p in payloads]
    runs = []
    for latency in latencies:
        emu.set_latency(latency / 1000)
        for name, settings in OFFICIAL_SETTINGS.items():
            if name == "tuned":
                settings = {**settings, "max_queue_size": len(messages)}
            measured = _repeat(repeat, lambda s=settings: official_client(emu, messages, s))
            runs.append({"setting": name, "latency_ms": latency, "settings": settings} | measured)
            _progress({"official": name, "latency_ms": latency}, measured)
    emu.set_latency(0)
    return runs


def _official_defaults() -> dict[str, Any]:
    """The installed client's version and the defaults that decide its speed and its drops."""
    from segment.analytics.client import Client
    from segment.analytics.version import VERSION

    names = ("max_queue_size", "upload_size", "upload_interval", "thread", "gzip", "max_retries", "timeout")
    parameters = inspect.signature(Client.__init__).parameters
    return {"version": VERSION} | {name: parameters[name].default for name in names}


def _summarise(out: dict[str, Any]) -> None:
    """Our default setting (0 ms, DEFAULT_MAX_IN_FLIGHT) against the issue's targets and the official client."""
    e2e = {(r["latency_ms"], r["max_in_flight"]): r for r in out["end_to_end"]}
    alone = {(r["latency_ms"], r["max_in_flight"]): r for r in out["deliver_only"]}
    ours = (0, DEFAULT_MAX_IN_FLIGHT) if (0, DEFAULT_MAX_IN_FLIGHT) in e2e else next(iter(e2e))
    ratios = {}
    for run in out.get("official", []):
        key = (run["latency_ms"], ours[1])
        if key in e2e:
            ratios[f"{run['setting']}, {run['latency_ms']} ms"] = {
                "end_to_end": e2e[key]["events_per_second"] / run["events_per_second"],
                "deliver_only": alone[key]["events_per_second"] / run["events_per_second"],
            }
    tuned = ratios.get("tuned, 0 ms", {}).get("end_to_end", 0.0)
    out["summary"] = {
        "setting": {"latency_ms": ours[0], "max_in_flight": ours[1], "gzip_level": DEFAULT_GZIP_LEVEL},
        "end_to_end_events_per_second": e2e[ours]["events_per_second"],
        "deliver_only_events_per_second": alone[ours]["events_per_second"],
        "emulator_capacity_events_per_second": out["emulator"]["events_per_second"],
        "average_batch_fill": e2e[ours]["batch_fill"],
        "ratios_to_official": ratios,
        "targets_met": {
            "end to end >= 200,000 events/s": e2e[ours]["events_per_second"] >= 200_000,
            ">= 10x the tuned official client (end to end, 0 ms)": tuned >= 10,
            "batches >= 95% full": e2e[ours]["batch_fill"] >= 0.95,
        },
    }


def _print(out: dict[str, Any]) -> None:
    print(f"\nsend benchmark: identify sync, {out['events']:,} events, median of {out['repeat']}, {out['cores']} cores")
    print(f"diff {out['diff_seconds']:.2f} s; event building alone {out['event_building']['events_per_second']:,.0f}/s")
    emu = out["emulator"]
    print(
        f"emulator capacity ({emu['processes']} processes, {emu['connections']} connections, pre-built gzip bodies):"
        f" {emu['events_per_second']:,.0f} events/s"
    )
    head = f"{'':<22}{'latency':>8}{'in flight':>10}{'events/s':>11}{'CPU us/ev':>10}{'emulator':>9}{'bytes/req':>11}"
    print(head + f"{'fill':>7}")
    for name in ("end_to_end", "deliver_only"):
        for r in out[name]:
            print(
                f"{name.replace('_', ' '):<22}{r['latency_ms']:>6}ms{r['max_in_flight']:>10}"
                f"{r['events_per_second']:>11,.0f}{r['sender_cpu_us_per_event']:>10.1f}"
                f"{r['emulator_cpu_us_per_event']:>9.1f}{r['bytes_per_request']:>11,.0f}{r['batch_fill']:>7.1%}"
            )
    print("(CPU us/ev: the sender's CPU time per event; emulator: the emulator processes', on the same cores)")
    print(f"{'gzip level':<12}{'MB/CPU s':>10}{'wire B/req':>12}{'ratio':>7}{'deliver() ev/s':>16}{'CPU us/ev':>10}")
    for level, g in out["gzip"].items():
        print(
            f"{level:<12}{g['mb_per_cpu_second']:>10,.0f}{g['wire_bytes_per_request']:>12,.0f}{g['ratio']:>7.1f}"
            f"{g.get('deliver_events_per_second', 0):>16,.0f}{g.get('sender_cpu_us_per_event', 0):>10.1f}"
        )
    if "official_defaults" in out:
        print(f"official client defaults: {out['official_defaults']}")
    for r in out.get("official", []):
        if "events_per_second" in r:
            print(
                f"official client, {r['setting']:<9}{r['latency_ms']:>4}ms: {r['events_per_second']:>9,.0f} events/s,"
                f" accepted {r['accepted']:,.0f} of {r['events']:,}, dropped by it {r['dropped_by_client']:,.0f}"
            )
    s = out["summary"]
    print(f"ours at {s['setting']} against the official client:")
    for name, r in s["ratios_to_official"].items():
        print(f"  {name:<16} end to end {r['end_to_end']:5.1f}x, deliver() alone {r['deliver_only']:5.1f}x")
    print("targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in s["targets_met"].items()))


def _progress(setting: dict[str, Any], *measured: dict[str, Any]) -> None:
    rates = ", ".join(f"{m['events_per_second']:,.0f}/s" for m in measured)
    print(f"  {setting}: {rates}", file=sys.stderr, flush=True)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
