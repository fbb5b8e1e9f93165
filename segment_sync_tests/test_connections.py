"""Connections to Segment over real loopback sockets: the request head, keep-alive, errors, TLS and proxies."""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
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

import pytest

from segment_sync.segment_api.client import Response, SegmentHttp
from segment_sync.segment_api.connections import (
    ACCEPT_ENCODING,
    Connector,
    DirectConnection,
    ProxiedConnection,
    Route,
    _host_field,
    basic_auth,
    tls_context,
)
from segment_sync_tests.segment_emulator import Fault, SegmentEmulator

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
        stream.read(length)
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


def direct(url: str, timeout: float = 5.0) -> DirectConnection:
    connection = Connector(url, KEY, "segment-sync/test", timeout).connect()
    assert isinstance(connection, DirectConnection)
    return connection


# --- the request ------------------------------------------------------------------------------------


def test_the_request_head_is_the_one_requests_sent(server_factory: Any) -> None:
    server = server_factory(answer_each(OK))
    url = server.url + "/v1/batch"
    headers = {"X-Retry-Count": "1", "Content-Encoding": "gzip"}
    ours = direct(url).post(b"{}", headers)
    theirs = ProxiedConnection(Route(url, {}, True, direct=False), KEY, "segment-sync/test", 5.0).post(b"{}", headers)
    assert ours == theirs
    assert ours.status == 200 and ours.text == '{"success":true}'
    assert (
        server.heads[0]
        == server.heads[1]
        == (
            f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUser-Agent: segment-sync/test\r\n"
            f"Accept-Encoding: {ACCEPT_ENCODING}\r\nAccept: */*\r\nConnection: keep-alive\r\n"
            "Content-Type: application/json\r\nX-Retry-Count: 1\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n"
            f"Authorization: {basic_auth(KEY)}\r\n\r\n"
        ).encode()
    )


@pytest.mark.parametrize(
    ("host", "port", "scheme", "field"),
    [
        ("api.segment.io", 443, "https", "api.segment.io"),
        ("api.segment.io", 8443, "https", "api.segment.io:8443"),
        ("127.0.0.1", 80, "http", "127.0.0.1"),
        ("::1", 8765, "http", "[::1]:8765"),
        ("bücher.example", 443, "https", "xn--bcher-kva.example"),
    ],
)
def test_the_host_field_is_written_as_http_client_writes_it(host: str, port: int, scheme: str, field: str) -> None:
    assert _host_field(host, port, scheme) == field


def test_basic_auth_is_the_key_and_an_empty_password() -> None:
    assert basic_auth("abc123") == "Basic YWJjMTIzOg=="


def test_the_endpoints_path_and_query_are_kept(server_factory: Any) -> None:
    server = server_factory(answer_each(OK))
    direct(server.url + "/segment/v1/batch?region=eu").post(b"{}", {})
    assert server.heads[0].startswith(b"POST /segment/v1/batch?region=eu HTTP/1.1\r\n")


# --- keep-alive -------------------------------------------------------------------------------------


def test_one_connection_serves_every_request(server_factory: Any) -> None:
    server = server_factory(answer_each(OK))
    connection = direct(server.url + "/v1/batch")
    for _ in range(3):
        assert connection.post(b"{}", {}).status == 200
    assert server.accepted == 1


def _answer_once_then_hang_up(server: RawServer, stream: BinaryIO) -> None:
    if server.read_request(stream) is not None:
        stream.write(OK)
        stream.flush()


def test_a_connection_the_server_closed_while_idle_is_reopened_without_an_error(server_factory: Any) -> None:
    server = server_factory(_answer_once_then_hang_up)
    connection = direct(server.url + "/v1/batch")
    assert connection.post(b"{}", {}).status == 200
    assert server.hung_up.wait(5)
    assert connection.post(b"{}", {}).status == 200
    assert server.accepted == 2


def test_connection_close_is_honoured(server_factory: Any) -> None:
    closing = OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length")
    server = server_factory(answer_each(closing))
    connection = direct(server.url + "/v1/batch")
    assert connection.post(b"{}", {}).status == 200
    assert connection.post(b"{}", {}).status == 200
    assert server.accepted == 2


# --- answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", lambda b: zlib.compress(b, wbits=-15))],
)
def test_compressed_answers_are_decoded(server_factory: Any, coding: str, encode: Callable[[bytes], bytes]) -> None:
    body = encode(b"Bad Request\n")
    head = f"HTTP/1.1 400 Bad Request\r\nContent-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n\r\n"
    server = server_factory(answer_each(head.encode() + body))
    assert direct(server.url + "/v1/batch").post(b"{}", {}).text == "Bad Request\n"


def test_chunked_and_close_delimited_answers_are_read(server_factory: Any) -> None:
    chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{"succe\r\n9\r\nss":true}\r\n0\r\n\r\n'
    server = server_factory(answer_each(chunked))
    connection = direct(server.url + "/v1/batch")
    assert [connection.post(b"{}", {}).text for _ in range(2)] == ['{"success":true}'] * 2
    assert server.accepted == 1  # the connection stayed open after a chunked answer

    def until_close(server: RawServer, stream: BinaryIO) -> None:
        server.read_request(stream)
        stream.write(b"HTTP/1.1 200 OK\r\n\r\n" + b'{"success":true}')

    closing = server_factory(until_close)
    connection = direct(closing.url + "/v1/batch")
    assert [connection.post(b"{}", {}).text for _ in range(2)] == ['{"success":true}'] * 2
    assert closing.accepted == 2


def test_repeated_headers_are_joined_as_requests_joined_them(server_factory: Any) -> None:
    answer = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n"
    server = server_factory(answer_each(answer))
    assert direct(server.url + "/v1/batch").post(b"{}", {}).headers["retry-after"] == "1, 2"


def test_segment_http_reads_retry_after_from_the_emulator(emulator: SegmentEmulator) -> None:
    emulator.inject(Fault(429, "slow down", retry_after="2"), Fault(503, headers={"X-RateLimit-Reset": "7"}))
    http = SegmentHttp(emulator.write_key, emulator.url)
    assert http.post(b"{}", 1) == Response(429, "slow down", 2.0)
    assert http.post(b"{}", 2).retry_after == 7.0


# --- failures: OSErrors that name the host, never the key --------------------------------------------


def _failure(url: str, timeout: float = 5.0) -> OSError:
    with pytest.raises(OSError) as caught:
        direct(url, timeout).post(b"{}", {})
    text = str(caught.value)
    assert KEY not in text and basic_auth(KEY) not in text and "127.0.0.1:" in text
    return caught.value


def test_a_refused_connection_is_an_oserror() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert "ConnectionRefusedError" in str(_failure(f"http://127.0.0.1:{port}/v1/batch"))


def test_no_answer_within_the_timeout_is_a_timeout_error(server_factory: Any) -> None:
    answered = threading.Event()

    def never_answer(server: RawServer, stream: BinaryIO) -> None:
        server.read_request(stream)
        answered.wait(5)

    server = server_factory(never_answer)
    assert isinstance(_failure(server.url + "/v1/batch", timeout=0.3), TimeoutError)
    answered.set()


def test_a_connection_dropped_without_an_answer_is_an_oserror(server_factory: Any) -> None:
    server = server_factory(lambda server, stream: server.read_request(stream))
    assert "ConnectionResetError: the server closed the connection without answering" in str(
        _failure(server.url + "/v1/batch")
    )


def test_a_garbled_answer_is_an_oserror(server_factory: Any) -> None:
    server = server_factory(answer_each(b"HTTQ/9 2OO\r\n\r\n"))
    assert "does not start with an HTTP/1 status line" in str(_failure(server.url + "/v1/batch"))


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
    connection = direct(server.url + "/v1/batch")
    with pytest.raises(OSError):
        connection.post(b"{}", {})
    assert connection.post(b"{}", {}).status == 200 and server.accepted == 2


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
    assert direct(https_url).post(b"{}", {}).status == 200


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
    assert direct(https_url).post(b"{}", {}).status == 200


def test_without_a_bundle_certifi_decides_and_an_unknown_ca_is_refused(https_url: str) -> None:
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        direct(https_url).post(b"{}", {})
    assert KEY not in str(caught.value)


def test_a_bundle_that_does_not_exist_fails_each_post(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/no/such/ca.pem")
    http = SegmentHttp(KEY, "https://127.0.0.1:9/")
    for attempt in (1, 2):
        with pytest.raises(OSError, match="invalid path: /no/such/ca.pem"):
            http.post(b"{}", attempt)


def test_the_tls_settings_are_urllib3s(certificates: dict[str, Path]) -> None:
    context = tls_context(str(certificates["ca"]))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION and context.options & ssl.OP_NO_TICKET


def test_the_hostname_is_checked(
    https_url: str, certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates["ca"]))
    with pytest.raises(OSError, match="mismatch"):
        direct(https_url.replace("localhost", "127.0.0.1")).post(b"{}", {})


# --- proxies ----------------------------------------------------------------------------------------


def test_a_proxy_from_the_environment_is_used_through_requests(
    server_factory: Any, emulator: SegmentEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = server_factory(answer_each(OK))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    http = SegmentHttp(emulator.write_key, emulator.url)
    assert http.post(b"{}", 1).status == 200
    assert proxy.heads[0].startswith(f"POST {emulator.url}/v1/batch HTTP/1.1\r\n".encode())
    assert emulator.requests == []
    assert isinstance(http.new_connection(), ProxiedConnection)


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
    assert isinstance(http.new_connection(), DirectConnection)


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


@pytest.mark.parametrize(
    ("url", "direct"),
    [
        ("https://api.segment.io/v1/batch", True),
        ("http://127.0.0.1:8765/v1/batch?region=eu", True),
        ("http://127.0.0.1:8765/a b/v1/batch", False),  # requests quotes what a socket of our own would not
        ("http://127.0.0.1:8765/é/v1/batch", False),
        ("ftp://127.0.0.1/v1/batch", False),
    ],
)
def test_only_plain_urls_go_direct(url: str, direct: bool) -> None:
    assert Route.from_environment(url).direct is direct


def test_the_environment_is_read_once_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/company-ca.pem")
    http = SegmentHttp(KEY)
    connection = http.new_connection()
    assert isinstance(connection, ProxiedConnection)
    assert connection.session.proxies["https"] == "http://proxy.example:3128"
    assert connection.session.verify == "/etc/company-ca.pem" and not connection.session.trust_env
    monkeypatch.setenv("NO_PROXY", "api.segment.io")
    assert isinstance(http.new_connection(), ProxiedConnection)  # the same client keeps its route
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert Route.from_environment(http.url).direct and isinstance(SegmentHttp(KEY).new_connection(), DirectConnection)
