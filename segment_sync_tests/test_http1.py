"""Reading HTTP/1.1 answers: framing, keep-alive, limits and malformed answers, next to http.client's reading."""

from __future__ import annotations

import gzip
import http.client
import io
import zlib

import pytest

from segment_sync.segment_api.http1 import MAX_FIELDS, MAX_LINE, RawAnswer, decoded, read_answer, text


def read(raw: bytes) -> tuple[RawAnswer, bytes]:
    """The answer read from these bytes, and the bytes left for the next answer."""
    reader = io.BufferedReader(io.BytesIO(raw))
    return read_answer(reader), reader.read()


class _Socket:
    def __init__(self, raw: bytes):
        self.raw = raw

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.raw))


def http_client_reads(raw: bytes) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection stays open, as http.client reads them."""
    response = http.client.HTTPResponse(_Socket(raw), method="POST")  # type: ignore[arg-type]
    response.begin()
    return response.status, response.read(), not response.will_close


ANSWERS = {
    "length": b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"success":true}',
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;ext=1\r\n{"suc\r\nB\r\ncess":true}\r\n0\r\nX-Trailer: 1\r\n\r\n'
    ),
    "chunked, capitals": b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "until close": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it",
    "bad length": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
    "negative length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
    "no content": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "continue first": b"HTTP/1.1 100 Continue\r\nX: y\r\n\r\nHTTP/1.1 429 Too Many\r\nContent-Length: 4\r\n\r\nslow",
    "early hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
    "close": b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy",
    "http/1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "http/1.0 keep-alive": b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
    "no reason": b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    "bare line ends": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
}


@pytest.mark.parametrize("raw", ANSWERS.values(), ids=ANSWERS.keys())
def test_answers_are_read_as_http_client_reads_them(raw: bytes) -> None:
    answer, _ = read(raw)
    assert (answer.status, answer.body, answer.keep_open) == http_client_reads(raw)


def test_the_next_answer_starts_where_this_one_ended() -> None:
    for name in ("length", "chunked", "no content", "continue first"):
        _, rest = read(ANSWERS[name] + b"HTTP/1.1 200 OK\r\n")
        assert rest == b"HTTP/1.1 200 OK\r\n", name


def test_headers_are_lower_case_with_repeats_joined_and_folds_unfolded() -> None:
    answer, _ = read(
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\nretry-after: 2\r\nX-Long: a\r\n\tb\r\nno colon\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert answer.fields == {"retry-after": "1, 2", "x-long": "a b", "content-length": "0"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "closed the connection without answering"),
        (b"HTTQ/1.1 200 OK\r\n\r\n", "status line"),
        (b"HTTP/2 200\r\n\r\n", "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 099 Low\r\n\r\n", "status line"),
        (b"HTTP/1.1 OK 200\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended after 5 of 10 bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nshort", "ended after 5 of 9 bytes"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_FIELDS + 1) + b"\r\n", "more than 100 headers"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_LINE + b"\r\n\r\n", "longer than"),
    ],
)
def test_what_is_not_an_answer_is_a_connection_error(raw: bytes, message: str) -> None:
    with pytest.raises(ConnectionError, match=message):
        read(raw)


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        (" GZIP ", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),
        (None, lambda b: b),
        ("br", lambda b: b),  # not asked for: left as it came
    ],
)
def test_bodies_are_decoded(coding: str | None, encode: object) -> None:
    assert decoded(encode(b"Bad Request\n"), coding) == b"Bad Request\n"  # type: ignore[operator]


def test_a_body_that_is_not_the_gzip_it_claims_is_an_error() -> None:
    with pytest.raises(zlib.error):
        decoded(b"not gzip", "gzip")


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", "é".encode(), "é"),
        ("text/plain", "é".encode("latin-1"), "é"),
        ("text/plain; charset=utf-8", "é".encode(), "é"),
        ('text/plain; charset="UTF-8"', "é".encode(), "é"),
        ("text/plain; charset=no-such-codec", "é".encode(), "é"),
        (None, b"\xff ok", "\ufffd ok"),
    ],
)
def test_text_is_decoded_as_requests_decoded_it(content_type: str | None, body: bytes, expected: str) -> None:
    assert text(body, content_type) == expected
