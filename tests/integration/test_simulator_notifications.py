"""Notification delivery: acks, the retry ladder on a scaled clock, re-signing, resends."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import httpx
import pytest

from tests.integration.conftest import checked, signed_as_documented
from tests.support.notification_sink import NotificationSink
from tests.support.simkit import Inspector, MerchantCaller, direct_order, own_simulator, wait_until
from worker.devtools.simulator.notifier import LADDER_SECONDS
from worker.devtools.simulator.server import RunningSimulator
from worker.gateway.signing import PortalKeyPair
from worker.gateway.wire import ACK_BODY, parse_time

FAIL_500 = (500, b"oops")


@pytest.fixture
def answer_check() -> Inspector:
    """Answers here are checked for their signature and shape, not their HTTP status."""
    return signed_as_documented


def attempts_of(sim: RunningSimulator, key: str) -> list[Any]:
    return sim.state.attempts(key=key)


def has_attempts(sim: RunningSimulator, key: str, count: int) -> Callable[[], bool]:
    return lambda: len(sim.state.attempts(key=key)) == count


def test_two_failures_then_an_ack_make_exactly_three_attempts(
    sim: RunningSimulator, merchant: MerchantCaller, platform_keys: PortalKeyPair
) -> None:
    receiver = NotificationSink(platform_keys.public_key, answers=[FAIL_500, FAIL_500])
    try:
        merchant.call("orderAndPay", direct_order("LADDER_1", notify_url=receiver.url))
        receiver.wait_for(3)
        wait_until(lambda: len(attempts_of(sim, "LADDER_1")) == 3)
        time.sleep(0.7)  # the next rung would be 600 ms away: nothing more may come
        log = attempts_of(sim, "LADDER_1")
        assert [(a.attempt, a.http_status, a.acked) for a in log] == [(1, 500, False), (2, 500, False), (3, 200, True)]
        gaps = [(b.sent_at - a.sent_at).total_seconds() for a, b in itertools.pairwise(log)]
        assert gaps[0] >= 30 * 0.001
        assert gaps[1] >= 300 * 0.001
        assert len(receiver.received) == 3
        checked(receiver)
    finally:
        receiver.close()


def test_a_merchant_that_never_acks_gets_exactly_six_attempts(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair
) -> None:
    with (
        closing(NotificationSink(platform_keys.public_key, default=FAIL_500)) as receiver,
        own_simulator(merchant_keys, platform_keys, time_scale=0.00001) as (running, caller),
    ):
        caller.call("orderAndPay", direct_order("NEVER_1", notify_url=receiver.url))
        receiver.wait_for(6)
        time.sleep(0.3)
        assert len(receiver.received) == 6
        log = running.state.attempts(key="NEVER_1")
        assert [a.attempt for a in log] == [1, 2, 3, 4, 5, 6]
        assert not any(a.acked for a in log)
        gaps = [(b.sent_at - a.sent_at).total_seconds() for a, b in itertools.pairwise(log)]
        for gap, rung in zip(gaps, LADDER_SECONDS[1:], strict=True):
            assert gap >= rung * 0.00001
        checked(receiver)


def test_advancing_the_clock_brings_the_next_retry_forward(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair
) -> None:
    """At real speed the ladder spans half a day; the virtual clock gets through it at once."""
    with (
        closing(NotificationSink(platform_keys.public_key, default=FAIL_500)) as receiver,
        own_simulator(merchant_keys, platform_keys, time_scale=1.0) as (running, caller),
    ):
        caller.call("orderAndPay", direct_order("CLOCK_1", notify_url=receiver.url))
        receiver.wait_for(1)
        for count, rung in enumerate(LADDER_SECONDS[1:], start=2):
            wait_until(has_attempts(running, "CLOCK_1", count - 1))
            caller.http.post("/__sim/clock/advance", json={"seconds": rung}).raise_for_status()
            receiver.wait_for(count)
        wait_until(lambda: len(running.state.attempts(key="CLOCK_1")) == 6)
        caller.http.post("/__sim/clock/advance", json={"seconds": 10**6}).raise_for_status()
        time.sleep(0.1)
        assert len(receiver.received) == 6


@pytest.mark.parametrize(
    ("answer", "acked"),
    [
        ((200, ACK_BODY), True),
        ((200, b'{"msg":"Success","code":"SUCCESS"}'), True),
        ((201, b'{"code":"SUCCESS","msg":"ok"}'), True),
        ((200, b'{"code":"FAIL","msg":"Success"}'), False),
        ((200, b"SUCCESS"), False),
        ((204, b""), False),
        ((500, ACK_BODY), False),
        ((302, ACK_BODY), False),
    ],
)
def test_what_counts_as_an_ack(
    sim: RunningSimulator,
    merchant: MerchantCaller,
    platform_keys: PortalKeyPair,
    answer: tuple[int, bytes],
    acked: bool,
) -> None:
    receiver = NotificationSink(platform_keys.public_key, answers=[answer])
    try:
        merchant.call("orderAndPay", direct_order("ACK_1", notify_url=receiver.url))
        wait_until(lambda: len(attempts_of(sim, "ACK_1")) >= 1)
        assert attempts_of(sim, "ACK_1")[0].acked is acked
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("answer", "acked"),
    [
        ((200, ACK_BODY), True),
        ((200, b'{"msg":"Success","code":"SUCCESS"}'), True),
        ((201, ACK_BODY), False),
        ((200, b'{"code":"SUCCESS","msg":"ok"}'), False),
        ((200, b'{"code":"SUCCESS"}'), False),
    ],
)
def test_strict_ack_wants_http_200_and_exactly_the_ack_body(
    merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair, answer: tuple[int, bytes], acked: bool
) -> None:
    with (
        closing(NotificationSink(platform_keys.public_key, answers=[answer])) as receiver,
        own_simulator(merchant_keys, platform_keys, strict_ack=True) as (running, caller),
    ):
        caller.call("orderAndPay", direct_order("STRICT_1", notify_url=receiver.url))
        wait_until(lambda: len(running.state.attempts(key="STRICT_1")) >= 1)
        assert running.state.attempts(key="STRICT_1")[0].acked is acked


def test_each_attempt_is_re_signed_with_a_fresh_notify_time(
    sim: RunningSimulator, merchant: MerchantCaller, platform_keys: PortalKeyPair
) -> None:
    receiver = NotificationSink(platform_keys.public_key, answers=[FAIL_500])
    try:
        merchant.call("orderAndPay", direct_order("RESIGN_1", notify_url=receiver.url))
        first, second = receiver.wait_for(2)
        assert first.signature_ok
        assert second.signature_ok
        assert first.sign != second.sign
        assert first.body["data"] == second.body["data"]
        first_time, second_time = parse_time(first.body["notifyTime"]), parse_time(second.body["notifyTime"])
        assert first_time is not None
        assert second_time is not None
        assert second_time > first_time
        checked(receiver)
    finally:
        receiver.close()


def test_the_attempt_log_records_a_digest_not_the_signature(
    sim: RunningSimulator, merchant: MerchantCaller, platform_keys: PortalKeyPair, web: httpx.Client
) -> None:
    receiver = NotificationSink(platform_keys.public_key)
    try:
        merchant.call("orderAndPay", direct_order("LOG_1", notify_url=receiver.url))
        (note,) = receiver.wait_for(1)
        wait_until(lambda: len(attempts_of(sim, "LOG_1")) == 1)
        (entry,) = web.get("/__sim/notifications", params={"key": "LOG_1"}).json()["attempts"]
        assert entry["bodySha256"] == hashlib.sha256(note.raw).hexdigest()
        assert (entry["kind"], entry["attempt"], entry["source"], entry["httpStatus"], entry["acked"]) == (
            "payment",
            1,
            "ladder",
            200,
            True,
        )
        assert "sign" not in entry
        assert note.sign is not None
        assert note.sign not in str(entry)
    finally:
        receiver.close()


def test_an_unreachable_merchant_is_a_failed_attempt(sim: RunningSimulator, merchant: MerchantCaller) -> None:
    merchant.call("orderAndPay", direct_order("DOWN_1", notify_url="http://127.0.0.1:9/notify"))
    wait_until(lambda: len(attempts_of(sim, "DOWN_1")) >= 2)
    first = attempts_of(sim, "DOWN_1")[0]
    assert (first.http_status, first.acked) == (None, False)
    assert first.error == "ConnectError"


def test_a_slow_merchant_times_out_and_is_retried(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    with (
        closing(NotificationSink(platform_keys.public_key, delays=[0.5])) as receiver,
        own_simulator(merchant_keys, platform_keys, time_scale=0.001, notify_timeout_seconds=0.1) as (running, caller),
    ):
        caller.call("orderAndPay", direct_order("SLOW_1", notify_url=receiver.url))
        wait_until(lambda: len(running.state.attempts(key="SLOW_1")) == 2)
        first, second = running.state.attempts(key="SLOW_1")
        assert (first.error, first.acked, second.acked) == ("ReadTimeout", False, True)


def test_resend_delivers_duplicates_after_an_ack(
    sim: RunningSimulator, merchant: MerchantCaller, platform_keys: PortalKeyPair, web: httpx.Client
) -> None:
    receiver = NotificationSink(platform_keys.public_key)
    try:
        merchant.call("orderAndPay", direct_order("DUP_1", notify_url=receiver.url))
        receiver.wait_for(1)
        response = web.post("/__sim/notifications/resend", json={"key": "DUP_1", "copies": 2})
        assert response.json() == {"key": "DUP_1", "copies": 2}
        notes = receiver.wait_for(3)
        assert len({n.raw for n in notes}) == 3, "each copy is re-signed with its own notifyTime"
        assert all(n.body["data"] == notes[0].body["data"] for n in notes)
        wait_until(lambda: len(attempts_of(sim, "DUP_1")) == 3)
        assert [a.source for a in attempts_of(sim, "DUP_1")] == ["ladder", "resend", "resend"]
        checked(receiver)
        assert web.post("/__sim/notifications/resend", json={"key": "NONE"}).status_code == 404
        assert web.post("/__sim/notifications/resend", json={"copies": 1}).status_code == 400
    finally:
        receiver.close()


def test_failed_resends_are_not_retried(
    sim: RunningSimulator, merchant: MerchantCaller, platform_keys: PortalKeyPair, web: httpx.Client
) -> None:
    receiver = NotificationSink(platform_keys.public_key, answers=[(200, ACK_BODY)], default=FAIL_500)
    try:
        merchant.call("orderAndPay", direct_order("DUP_2", notify_url=receiver.url))
        receiver.wait_for(1)
        web.post("/__sim/notifications/resend", json={"key": "DUP_2"}).raise_for_status()
        receiver.wait_for(2)
        time.sleep(0.1)
        assert len(receiver.received) == 2
    finally:
        receiver.close()
