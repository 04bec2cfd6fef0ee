"""The receiver's HTTP edge (reliability notes §5 rows 1-2): size limit, method, content type.

Every refusal here happens before a signature is even looked at, and leaves no trace: no inbox
row, no rq job. The size limit is checked while streaming, so what matters is not only the 413
but that the server stops reading: a client offering 64 MiB gets to send little more than what
the kernel buffers hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_receiver_harness import ACK, PAYMENT, Rig, open_rig, payment_note, raw_exchange, statuses
from worker.gateway.signing import PortalKeyPair
from worker.receiver.app import MAX_BODY

OFFERED = 64 * 1024 * 1024  # what a hostile client offers to send
KERNEL_SLACK = 4 * 1024 * 1024  # loopback socket buffers: what a client can push before the server reads


@pytest.fixture
def rig(redis_url: str, tmp_path: Path, platform_keys: PortalKeyPair) -> Iterator[Rig]:
    with open_rig(redis_url=redis_url, database_url=f"sqlite:///{tmp_path / 'store.db'}", platform=platform_keys) as r:
        yield r


class Offer:
    """A body generator that counts how many bytes the HTTP client actually pulled from it."""

    def __init__(self, total: int = OFFERED, chunk: int = 16 * 1024) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.pulled < self.total:
            self.pulled += self.chunk
            yield b" " * self.chunk


def assert_untouched(rig: Rig) -> None:
    snapshot = rig.snapshot()
    assert snapshot["inbox"] == 0 and snapshot["rq_jobs"] == [] and snapshot["queued"] == 0


def padded(rig: Rig, size: int) -> tuple[bytes, str]:
    """A genuine signed notification padded with JSON whitespace to exactly ``size`` bytes."""
    raw, _ = rig.signed(payment_note())
    body = raw + b" " * (size - len(raw))
    return body, rig.signer.sign(body)


def test_a_signed_notification_of_exactly_64_kib_is_read_and_acked(rig: Rig) -> None:
    """The limit is inclusive: 65,536 bytes are read whole and the notification is kept."""
    body, sign = padded(rig, MAX_BODY)
    response = rig.post(body, sign=sign)
    assert (response.status_code, response.content) == (200, ACK)
    assert rig.meter.total == MAX_BODY and len(rig.inbox_rows()) == 1


def test_one_byte_over_64_kib_with_a_true_content_length_is_413_unread(rig: Rig) -> None:
    """A declared length of 65,537 is refused from the header alone: the body is never read."""
    body, sign = padded(rig, MAX_BODY + 1)
    response = rig.post(body, sign=sign)
    assert response.status_code == 413 and response.json() == {"code": "FAIL", "msg": "too_large"}
    assert rig.meter.total == 0
    assert_untouched(rig)


def test_a_huge_body_with_a_true_content_length_is_not_read(rig: Rig) -> None:
    """Declaring 64 MiB gets a 413 and a closed connection, not a server reading 64 MiB."""
    offer = Offer()
    response = rig.http.post(rig.url(PAYMENT), content=offer,
                             headers={"content-type": "application/json", "content-length": str(OFFERED)})
    assert response.status_code == 413 and response.headers["connection"] == "close"
    assert rig.meter.total == 0 and offer.pulled < KERNEL_SLACK
    assert_untouched(rig)


def test_a_chunked_body_without_content_length_is_cut_off_past_64_kib(rig: Rig) -> None:
    """Chunked 64 MiB: the receiver stops at the first chunk past 64 KiB, answers 413 and hangs up."""
    offer = Offer()
    response = rig.http.post(rig.url(PAYMENT), content=offer, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json() == {"code": "FAIL", "msg": "too_large"}
    chunks = rig.meter.chunks
    assert sum(chunks[:-1]) <= MAX_BODY < sum(chunks), chunks  # it stopped at the chunk that crossed the limit
    assert offer.pulled < KERNEL_SLACK, offer.pulled  # and the server stopped reading the socket
    assert_untouched(rig)


def test_a_false_large_content_length_is_refused_without_waiting_for_the_body(rig: Rig) -> None:
    """Declared 10 MiB, sent 100 bytes: 413 at once (no read timeout), connection closed."""
    head = (b"POST " + PAYMENT.encode() + b" HTTP/1.1\r\nHost: rx\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10485760\r\nsign: x\r\n\r\n")
    answer, _sent = raw_exchange(rig.served.base_url, head, [b"{" * 100], timeout=3.0)
    assert statuses(answer) == [413] and b"connection: close" in answer.lower()
    assert rig.meter.total == 0
    assert_untouched(rig)


def test_a_false_small_content_length_frames_the_body_at_the_declared_length(rig: Rig) -> None:
    """Declared 100, sent 1 MiB: the receiver sees only 100 bytes; the rest is a bad request, never a body.

    HTTP/1.1 frames the body by Content-Length, so no server can answer 413 here: the 100
    bytes fail the signature (401) and the trailing bytes are refused as a malformed request
    (400) and the connection closed. Either way nothing past the declared length is read as
    body and nothing is kept."""
    body, sign = padded(rig, 1024 * 1024)
    head = (b"POST " + PAYMENT.encode() + b" HTTP/1.1\r\nHost: rx\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\nsign: " + sign.encode() + b"\r\n\r\n")
    parts = [body[i:i + 16384] for i in range(0, len(body), 16384)]
    answer, _sent = raw_exchange(rig.served.base_url, head, parts, timeout=3.0)
    codes = statuses(answer)
    assert codes and set(codes) <= {400, 401}, answer[:300]
    assert rig.meter.total <= 100
    assert_untouched(rig)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_a_method_other_than_post_is_405(rig: Rig, method: str) -> None:
    """Only POST reaches the ingestor; anything else is 405 and leaves no trace."""
    raw, sign = rig.signed(payment_note())
    response = rig.http.request(method, rig.url(PAYMENT), content=raw if method != "GET" else None,
                                headers={"content-type": "application/json", "sign": sign})
    assert response.status_code == 405 and "POST" in response.headers["allow"]
    assert_untouched(rig)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", "multipart/form-data; boundary=x"])
def test_a_non_json_content_type_is_415_even_when_signed(rig: Rig, content_type: str | None) -> None:
    """A genuine signed body under another media type is 415: the content type is checked first."""
    raw, sign = rig.signed(payment_note())
    response = rig.post(raw, sign=sign, content_type=content_type)
    assert response.status_code == 415 and response.json() == {"code": "FAIL", "msg": "unsupported_media_type"}
    assert rig.meter.total == 0
    assert_untouched(rig)


def test_json_with_a_charset_parameter_is_accepted(rig: Rig) -> None:
    """``application/json; charset=utf-8`` is JSON: the media type is compared without parameters."""
    raw, sign = rig.signed(payment_note())
    response = rig.post(raw, sign=sign, content_type="Application/JSON; charset=utf-8")
    assert (response.status_code, response.content) == (200, ACK)


def test_a_huge_non_json_body_is_refused_unread(rig: Rig) -> None:
    """A 415 sent before the body was read closes the connection instead of draining 64 MiB."""
    offer = Offer()
    response = rig.http.post(rig.url(PAYMENT), content=offer, headers={"content-type": "text/plain"})
    assert response.status_code == 415 and response.headers["connection"] == "close"
    assert offer.pulled < KERNEL_SLACK
    assert_untouched(rig)
