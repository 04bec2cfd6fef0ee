"""The ``sign`` header as the receiver reads it: one line is the value; repeated lines never verify.

Found by the signature fuzz: the receiver read only the first ``sign`` line, so a genuine
signature followed by any other (or by itself) was accepted, while a proxy reading the last
line would have judged another value. Repeated lines now combine as HTTP combines a repeated
field (RFC 9110 §5.3), and no signature is spelled with ``", "``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import httpx
import pytest
import sqlalchemy as sa
from redis import Redis

from worker.devtools.serving import serve_in_thread
from worker.gateway.signing import PortalKeyPair, Signer, Verifier
from worker.receiver.app import PAYMENT_PATH, create_receiver
from worker.receiver.inbox_writer import InboxWriter
from worker.receiver.ingest import Ingestor, Kind, Verdict, sign_value

BODY = b'{"notifyType":"PAYMENT","data":{"outTradeNo":"P1","status":"SUCCESS"}}'


@pytest.fixture(scope="module")
def genuine(platform_keys: PortalKeyPair) -> str:
    return Signer.from_value(platform_keys.private_key, setting="test").sign(BODY)


@pytest.fixture(scope="module")
def verifier(platform_keys: PortalKeyPair) -> Verifier:
    return Verifier.from_values([platform_keys.public_key], setting="test")


def test_no_line_is_no_value_and_one_line_is_the_value(genuine: str, verifier: Verifier) -> None:
    """Without the header there is no value; a single line is used as sent, and verifies."""
    assert sign_value([]) is None
    assert sign_value([""]) == ""
    assert verifier.verify(BODY, sign_value([genuine]))


@pytest.mark.parametrize("lines", ["twice", "genuine first", "genuine last", "empty first", "empty last", "halves"])
def test_repeated_lines_never_verify(genuine: str, verifier: Verifier, other_keys: PortalKeyPair, lines: str) -> None:
    """However the lines are arranged, a request with two ``sign`` lines is not signed."""
    stranger = Signer.from_value(other_keys.private_key, setting="test").sign(BODY)
    sent = {"twice": [genuine, genuine], "genuine first": [genuine, stranger], "genuine last": [stranger, genuine],
            "empty first": ["", genuine], "empty last": [genuine, ""], "halves": [genuine[:100], genuine[100:]]}[lines]
    assert not verifier.verify(BODY, sign_value(sent))


class Recorder:
    """Stands in for the ``Ingestor``: records the ``sign`` it is handed and refuses."""

    def __init__(self) -> None:
        self.signs: list[str | None] = []
        self.writer = InboxWriter(sa.create_engine("sqlite://"), lambda: datetime.now(UTC))  # never started

    async def ingest(self, _kind: Kind, _body: bytes, sign: str | None) -> Verdict:
        self.signs.append(sign)
        return Verdict(401, "bad_signature")


def test_the_receiver_hands_every_sign_line_to_the_ingestor() -> None:
    """The endpoint passes all ``sign`` lines, combined, not just the first one."""
    recorder = Recorder()
    app = create_receiver(cast(Ingestor, recorder), engine=sa.create_engine("sqlite://"), redis=Redis())  # unused
    served = serve_in_thread(app, name="sign-header")
    try:
        with httpx.Client(base_url=served.base_url) as client:
            for lines in ([], ["A"], ["A", "B"]):
                client.post(PAYMENT_PATH, content=BODY,
                            headers=[("content-type", "application/json"), *(("sign", v) for v in lines)])
    finally:
        served.stop()
    assert recorder.signs == [None, "A", "A, B"]
