"""SegmentHttp and Outbox over real loopback sockets and files: requests, answers, keep-alive, errors, TLS, proxies."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import json
import shutil
import socket
import ssl
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pytest
from isal import igzip

from segment_sync import __version__
from segment_sync.segment_api.transport import DEFAULT_ENDPOINT, Outbox, Response, SegmentHttp
from segment_sync_tests.support.segment_emulator import Fault, SegmentEmulator

KEY = "wk_connections_0123456789abcdef"
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"success":true}'
ENVIRONMENT = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def no_proxy_or_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's proxies and CA bundles stay out of these tests."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class RawServer:
    """A loopback TCP server that hands each accepted connection to `serve`, in a thread of its own."""

    def __init__(self, serve: Callable[[BinaryIO], None]):
        self.serve = serve
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.accepted = 0
        self.hung_up = threading.Event()  # set each time this side closes a connection
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn, conn.makefile("rwb") as stream:  # OSError: the client hung up
            self.serve(stream)
        self.hung_up.set()

    def read_request(self, stream: BinaryIO) -> bytes | None:
        """One request's head (recorded) after reading its body; None when the client closed the connection."""
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = stream.readline()
            if not line:
                return None
            head += line
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        self.bodies.append(stream.read(length))
        self.heads.append(head)
        return head

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def server_factory() -> Iterator[Callable[[Callable[[RawServer, BinaryIO], None]], RawServer]]:
    servers: list[RawServer] = []

    def make(serve: Callable[[RawServer, BinaryIO], None]) -> RawServer:
        server = RawServer(lambda stream: serve(server, stream))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def answer_each(answer: bytes) -> Callable[[RawServer, BinaryIO], None]:
    """A keep-alive server that gives every request the same answer."""

    def serve(server: RawServer, stream: BinaryIO) -> None:
        while server.read_request(stream) is not None:
            stream.write(answer)
            stream.flush()

    return serve


def answering(server_factory: Any, answer: bytes, **kwargs: Any) -> tuple[SegmentHttp, RawServer]:
    """A client of a keep-alive server that gives every request `answer`."""
    server = server_factory(answer_each(answer))
    return SegmentHttp(KEY, server.url, **kwargs), server


def http_answer(status: int, text: str = "", headers: dict[str, str] | None = None) -> bytes:
    fields = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    body = text.encode()
    return f"HTTP/1.1 {status} X\r\n{fields}Content-Length: {len(body)}\r\n\r\n".encode() + body


def fields(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


# --- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("https://api.segment.io", "https://api.segment.io/v1/batch"),
        ("https://api.segment.io/", "https://api.segment.io/v1/batch"),
        ("https://api.segment.io/v1", "https://api.segment.io/v1/batch"),
        ("https://api.segment.io/v1/", "https://api.segment.io/v1/batch"),
        ("https://events.eu1.segmentapis.com", "https://events.eu1.segmentapis.com/v1/batch"),
        ("https://events.eu1.segmentapis.com/v1", "https://events.eu1.segmentapis.com/v1/batch"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765/v1/batch"),
    ],
)
def test_the_batch_url_of_an_endpoint(endpoint: str, url: str) -> None:
    assert SegmentHttp("wk", endpoint).url == url


def test_the_default_endpoint_is_segments() -> None:
    assert DEFAULT_ENDPOINT == "https://api.segment.io"
    assert SegmentHttp("wk").url == "https://api.segment.io/v1/batch"


def test_an_empty_write_key_is_refused() -> None:
    with pytest.raises(ValueError, match="write key is empty"):
        SegmentHttp("")


@pytest.mark.parametrize(("kwargs", "message"), [({"gzip_level": 0}, "gzip_level"), ({"max_in_flight": 0}, "max_in")])
def test_bad_settings_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmentHttp("wk", **kwargs)


def test_the_repr_hides_the_key() -> None:
    http = SegmentHttp("sekret_write_key_123")
    assert "sekret_write_key_123" not in repr(http) and "sekret_write_key_123" not in str(http)
    assert "api.segment.io" in repr(http)


# --- the request ------------------------------------------------------------------------------------


def test_the_request_carries_segments_auth_gzip_and_the_retry_count(server_factory: Any) -> None:
    http, server = answering(server_factory, OK)
    body = b'{"batch":[],"sentAt":"x"}'
    assert http.post(body, 1) == Response(200, '{"success":true}', None)
    http.post(body, 3)
    first, third = (fields(head) for head in server.heads)
    assert server.heads[0].startswith(b"POST /v1/batch HTTP/1.1\r\n")
    assert first["authorization"] == "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    assert first["content-type"] == "application/json" and first["content-encoding"] == "gzip"
    assert first["user-agent"] == f"segment-sync/{__version__}"
    assert first["host"] == f"127.0.0.1:{server.port}"
    assert "x-retry-count" not in first and third["x-retry-count"] == "2"
    assert [gzip.decompress(sent) for sent in server.bodies] == [body, body]


def test_a_plain_body_is_sent_as_it_is(server_factory: Any) -> None:
    http, server = answering(server_factory, OK, gzip_body=False)
    http.post(b"{}", 1)
    assert server.bodies == [b"{}"] and "content-encoding" not in fields(server.heads[0])


def test_the_gzip_level_is_isal_up_to_3_and_zlib_above(server_factory: Any) -> None:
    events = [orjson.dumps({"userId": f"u{i}", "score": i * 7919 % 10007, "x": i**3}) for i in range(2_000)]
    body = b'{"batch":[' + b",".join(events) + b'],"sentAt":"x"}'
    sizes = {}
    for level in (1, 3, 4, 9):
        http, server = answering(server_factory, OK, gzip_level=level)
        http.post(body, 1)
        sent = server.bodies[0]
        assert gzip.decompress(sent) == body
        sizes[level] = len(sent)
        expected = igzip.compress(body, compresslevel=level) if level <= 3 else gzip.compress(body, compresslevel=level)
        assert (sent[:4], sent[8:]) == (expected[:4], expected[8:])  # bytes 4-7: the time of compression
    assert max(sizes.values()) < len(body) and sizes[9] < sizes[4]


def test_the_endpoints_path_and_query_are_kept(server_factory: Any) -> None:
    server = server_factory(answer_each(OK))
    http = SegmentHttp(KEY, server.url + "/segment")
    http.url += "?region=eu"
    http.post(b"{}", 1)
    assert server.heads[0].startswith(b"POST /segment/v1/batch?region=eu HTTP/1.1\r\n")


# --- answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"X-RateLimit-Reset": "30"}, 30.0),
        ({}, None),
    ],
)
def test_retry_after(server_factory: Any, headers: dict[str, str], expected: float | None) -> None:
    http, _ = answering(server_factory, http_answer(429, "slow down", headers))
    assert http.post(b"{}", 1) == Response(429, "slow down", expected)


def test_retry_after_as_an_http_date(server_factory: Any) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    http, _ = answering(server_factory, http_answer(503, "", {"Retry-After": header}))
    wait = http.post(b"{}", 1).retry_after
    assert wait is not None and 115 <= wait <= 121


def test_a_malformed_retry_after_is_ignored(server_factory: Any) -> None:
    http, _ = answering(server_factory, http_answer(503, "", {"Retry-After": "soon"}))
    assert http.post(b"{}", 1) == Response(503, "", None)


def test_retry_after_from_the_emulator(emulator: SegmentEmulator) -> None:
    emulator.inject(Fault(429, "slow down", retry_after="2"), Fault(503, headers={"X-RateLimit-Reset": "7"}))
    http = SegmentHttp(emulator.write_key, emulator.url)
    assert http.post(b"{}", 1) == Response(429, "slow down", 2.0)
    assert http.post(b"{}", 2).retry_after == 7.0


def test_the_write_key_is_never_passed_on(server_factory: Any) -> None:
    echo = f'unknown writeKey "{KEY}" in {{"writeKey":"{KEY}"}}'
    http, _ = answering(server_factory, http_answer(400, echo, {"Content-Type": "text/plain; charset=utf-8"}))
    assert http.post(b"{}", 1).text == 'unknown writeKey "<write key>" in {"writeKey":"<write key>"}'


def test_long_answers_are_cut_at_500_characters(server_factory: Any) -> None:
    http, _ = answering(server_factory, http_answer(400, "x" * 5_000))
    assert http.post(b"{}", 1).text == "x" * 500


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", lambda b: zlib.compress(b, wbits=-15))],
)
def test_compressed_answers_are_decoded(server_factory: Any, coding: str, encode: Callable[[bytes], bytes]) -> None:
    body = encode(b"Bad Request\n")
    head = f"HTTP/1.1 400 Bad Request\r\nContent-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n\r\n"
    http, _ = answering(server_factory, head.encode() + body)
    assert http.post(b"{}", 1).text == "Bad Request\n"


def test_chunked_and_close_delimited_answers_are_read(server_factory: Any) -> None:
    chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{"succe\r\n9\r\nss":true}\r\n0\r\n\r\n'
    http, server = answering(server_factory, chunked)
    assert [http.post(b"{}", 1).text for _ in range(2)] == ['{"success":true}'] * 2
    assert server.accepted == 1  # the connection stayed open after a chunked answer

    def until_close(server: RawServer, stream: BinaryIO) -> None:
        server.read_request(stream)
        stream.write(b"HTTP/1.1 200 OK\r\n\r\n" + b'{"success":true}')

    closing = server_factory(until_close)
    http = SegmentHttp(KEY, closing.url)
    assert [http.post(b"{}", 1).text for _ in range(2)] == ['{"success":true}'] * 2
    assert closing.accepted == 2


# --- keep-alive -------------------------------------------------------------------------------------


def test_one_connection_serves_every_request_in_turn(server_factory: Any) -> None:
    http, server = answering(server_factory, OK)
    for _ in range(3):
        assert http.post(b"{}", 1).status == 200
    assert server.accepted == 1


def test_each_request_in_flight_has_a_connection_of_its_own(server_factory: Any) -> None:
    inside = threading.Barrier(3, timeout=5)

    def serve(server: RawServer, stream: BinaryIO) -> None:
        while server.read_request(stream) is not None:
            if not inside.broken:
                inside.wait()  # the first three requests are in flight at once
            stream.write(OK)
            stream.flush()

    server = server_factory(serve)
    http = SegmentHttp(KEY, server.url, max_in_flight=3)
    threads = [threading.Thread(target=http.post, args=(b"{}", 1)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    inside.abort()
    for _ in range(5):
        assert http.post(b"{}", 1).status == 200
    assert server.accepted == 3 and len(server.heads) == 8


def _answer_once_then_hang_up(server: RawServer, stream: BinaryIO) -> None:
    if server.read_request(stream) is not None:
        stream.write(OK)
        stream.flush()


def test_a_connection_the_server_closed_while_idle_is_reopened_without_an_error(server_factory: Any) -> None:
    server = server_factory(_answer_once_then_hang_up)
    http = SegmentHttp(KEY, server.url)
    assert http.post(b"{}", 1).status == 200
    assert server.hung_up.wait(5)
    assert http.post(b"{}", 1).status == 200
    assert server.accepted == 2


def test_connection_close_is_honoured(server_factory: Any) -> None:
    http, server = answering(server_factory, OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length"))
    assert http.post(b"{}", 1).status == 200
    assert http.post(b"{}", 1).status == 200
    assert server.accepted == 2


def test_close_closes_the_idle_connections(server_factory: Any) -> None:
    http, server = answering(server_factory, OK)
    http.post(b"{}", 1)
    http.close()
    assert server.hung_up.wait(5)


# --- failures: OSErrors that name the host, never the key --------------------------------------------


def _failure(url: str, timeout: float = 5.0) -> OSError:
    with pytest.raises(OSError) as caught:
        SegmentHttp(KEY, url, timeout=timeout).post(b"{}", 1)
    text = str(caught.value)
    assert KEY not in text and base64.b64encode(KEY.encode()).decode()[:20] not in text and "127.0.0.1" in text
    return caught.value


def test_a_refused_connection_is_an_oserror() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert "Connection refused" in str(_failure(f"http://127.0.0.1:{port}"))


def test_no_answer_within_the_timeout_is_a_timeout_error(server_factory: Any) -> None:
    answered = threading.Event()

    def never_answer(server: RawServer, stream: BinaryIO) -> None:
        server.read_request(stream)
        answered.wait(5)

    server = server_factory(never_answer)
    assert "timed out" in str(_failure(server.url, timeout=0.3))
    answered.set()


def test_a_connection_dropped_without_an_answer_is_an_oserror(server_factory: Any) -> None:
    server = server_factory(lambda server, stream: server.read_request(stream))
    assert "closed" in str(_failure(server.url)).lower()


def test_a_garbled_answer_is_an_oserror(server_factory: Any) -> None:
    server = server_factory(answer_each(b"HTTQ/9 2OO\r\n\r\n"))
    _failure(server.url)


def test_a_connection_that_failed_is_reopened_for_the_next_post(server_factory: Any) -> None:
    calls = []

    def serve(server: RawServer, stream: BinaryIO) -> None:
        calls.append(1)
        while server.read_request(stream) is not None:
            if len(calls) == 1:
                return  # the first connection drops its first request
            stream.write(OK)
            stream.flush()

    server = server_factory(serve)
    http = SegmentHttp(KEY, server.url)
    with pytest.raises(OSError):
        http.post(b"{}", 1)
    assert http.post(b"{}", 2).status == 200 and server.accepted == 2


# --- TLS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA and a certificate it signed for localhost (not for 127.0.0.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)

    def certificate(name: str, key: Any, issuer: x509.Name, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "segment-sync test CA")])
    ca = certificate("segment-sync test CA", ca_key, ca_name, ca_key, True)
    server = certificate("localhost", server_key, ca_name, ca_key, False)
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "16")
        self.end_headers()
        self.wfile.write(b'{"success":true}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def https_url(certificates: dict[str, Path]) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 with the test CA's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates["cert"], certificates["key"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}/v1/batch"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_tls_verifies_against_the_bundle_from_the_environment(
    https_url: str, certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, str(certificates["ca"]))
    assert SegmentHttp(KEY, https_url).post(b"{}", 1).status == 200


def test_tls_verifies_against_a_hashed_certificate_folder(
    https_url: str, certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to name a CA file by its subject hash")
    digest = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(certificates["ca"])], capture_output=True, text=True
    )
    shutil.copy(certificates["ca"], tmp_path / f"{digest.stdout.strip()}.0")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path))
    assert SegmentHttp(KEY, https_url).post(b"{}", 1).status == 200


def test_without_a_bundle_certifi_decides_and_an_unknown_ca_is_refused(https_url: str) -> None:
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        SegmentHttp(KEY, https_url).post(b"{}", 1)
    assert KEY not in str(caught.value)


def test_a_bundle_that_does_not_exist_fails_each_post(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/no/such/ca.pem")
    http = SegmentHttp(KEY, "https://127.0.0.1:9/")
    for attempt in (1, 2):
        with pytest.raises(OSError, match="invalid path: /no/such/ca.pem"):
            http.post(b"{}", attempt)


def test_the_hostname_is_checked(
    https_url: str, certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates["ca"]))
    with pytest.raises(OSError, match="match"):
        SegmentHttp(KEY, https_url.replace("localhost", "127.0.0.1")).post(b"{}", 1)


# --- proxies ----------------------------------------------------------------------------------------


def test_a_proxy_from_the_environment_is_used(
    server_factory: Any, emulator: SegmentEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = server_factory(answer_each(OK))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    http = SegmentHttp(emulator.write_key, emulator.url)
    assert http.post(b"{}", 1).status == 200
    assert proxy.heads[0].startswith(f"POST {emulator.url}/v1/batch HTTP/1.1\r\n".encode())
    assert emulator.requests == []


def test_no_proxy_sends_directly(
    server_factory: Any, emulator: SegmentEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = server_factory(answer_each(OK))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    http = SegmentHttp(emulator.write_key, emulator.url, gzip_body=False)
    body = b'{"batch":[],"sentAt":"2026-01-01T00:00:00.000Z","writeKey":"' + emulator.write_key.encode() + b'"}'
    assert http.post(body, 1).status == 200
    assert proxy.heads == [] and len(emulator.requests) == 1


def test_an_https_endpoint_tunnels_through_the_proxy(server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []  # the request lines the proxy got

    def refuse_tunnel(server: RawServer, stream: BinaryIO) -> None:
        seen.append(stream.readline())
        stream.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        stream.flush()

    proxy = server_factory(refuse_tunnel)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with pytest.raises(OSError):
        SegmentHttp(KEY, "https://api.segment.io").post(b"{}", 1)
    assert len(seen) == 1 and seen[0].startswith(b"CONNECT api.segment.io:443 HTTP/")


def test_the_environment_is_read_once_per_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/company-ca.pem")
    session = SegmentHttp(KEY).new_session()
    assert session.proxies["https"] == "http://proxy.example:3128"
    assert session.verify == "/etc/company-ca.pem" and not session.trust_env


# --- Outbox -----------------------------------------------------------------------------------------


def test_the_outbox_writes_one_line_per_body(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "outbox" / "sync.jsonl"
    outbox = Outbox(path)
    assert outbox.write_key is None
    assert outbox.post(b'{"batch":[1]}', 1) == Response(200, '{"success":true}')
    assert outbox.post(b'{"batch":[2]}', 1).status == 200
    assert path.read_bytes() == b'{"batch":[1]}\n{"batch":[2]}\n'


def test_the_outbox_is_written_one_body_at_a_time(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "out.jsonl")
    assert outbox.max_in_flight == 1
    threads = [threading.Thread(target=outbox.post, args=(b'{"batch":[%d]}' % i, 1)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = sorted(json.loads(line)["batch"][0] for line in (tmp_path / "out.jsonl").read_bytes().splitlines())
    assert lines == list(range(20))
