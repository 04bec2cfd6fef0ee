"""Fault injection: gateway errors, bare HTTP errors, drops, late answers, spoiled signatures,
eventual consistency, notification faults, and repeatable draws from a seed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import conform
from tests.openapi import notification_kind, validate_notification
from tests.support.notification_sink import NotificationSink
from tests.support.simkit import MerchantCaller, direct_order, hosted_order, own_simulator, wait_until
from worker.devtools.simulator.faults import FaultPlan
from worker.devtools.simulator.server import RunningSimulator
from worker.gateway.signing import PortalKeyPair
from worker.gateway.wire import dumps


def faults(web: httpx.Client, plan: dict[str, Any]) -> None:
    web.put("/__sim/faults", json=plan).raise_for_status()


def test_error_rate_one_answers_the_error_code_without_effect(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client
) -> None:
    faults(web, {"endpoints": {"orderAndPay": {"error_rate": 1, "error_code": "SYSTEM_ERROR"}}})
    answer = merchant.call("orderAndPay", hosted_order("ERR_1"))
    assert answer.body == {"code": "SYSTEM_ERROR", "msg": "System is busy, please try again later."}
    assert sim.state.order("ERR_1") is None
    assert merchant.call("orderQuery", {"outTradeNo": "ERR_1"}).code == "ORDER_NOT_EXIST"
    ledger = web.get("/__sim/ledger").json()
    assert ledger["calls"] == {"orderAndPay": 1, "orderQuery": 1}
    assert ledger["codes"]["orderAndPay"] == {"SYSTEM_ERROR": 1}
    assert ledger["orders"] == {}


def test_any_gateway_code_can_be_injected(merchant: MerchantCaller, web: httpx.Client) -> None:
    faults(web, {"endpoints": {"*": {"error_rate": 1, "error_code": "REQUEST_TIMEOUT"}}})
    assert merchant.call("refundQuery", {"outRefundNo": "X"}).code == "REQUEST_TIMEOUT"
    assert merchant.call("inquirePaymentToken", {"userId": "u"}).code == "REQUEST_TIMEOUT"


@pytest.mark.parametrize(("code", "status"), [("http_500", 500), ("http_502", 502), ("http_503", 503)])
def test_bare_http_errors(merchant: MerchantCaller, web: httpx.Client, code: str, status: int) -> None:
    faults(web, {"endpoints": {"orderQuery": {"error_rate": 1, "error_code": code}}})
    answer = merchant.call("orderQuery", {"outTradeNo": "X"}, check=False)
    assert answer.status_code == status
    assert answer.sign is None
    assert answer.body == {}


def test_faults_apply_per_endpoint(merchant: MerchantCaller, web: httpx.Client) -> None:
    faults(web, {"endpoints": {"orderQuery": {"error_rate": 1}}})
    assert merchant.call("orderAndPay", hosted_order("PER_1")).code == "APPLY_SUCCESS"
    assert merchant.call("orderQuery", {"outTradeNo": "PER_1"}).code == "SYSTEM_ERROR"
    web.delete("/__sim/faults").raise_for_status()
    assert merchant.call("orderQuery", {"outTradeNo": "PER_1"}).code == "APPLY_SUCCESS"


def test_a_dropped_connection_still_applies_the_request(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client
) -> None:
    faults(web, {"endpoints": {"orderAndPay": {"drop_rate": 1}}})
    with pytest.raises(httpx.RemoteProtocolError):
        merchant.call("orderAndPay", hosted_order("DROP_1"))
    assert sim.state.order("DROP_1") is not None
    web.delete("/__sim/faults").raise_for_status()
    assert merchant.call("orderAndPay", hosted_order("DROP_1")).code == "ORDER_REPEAT"


def test_a_dropped_connection_can_also_lose_the_request(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client
) -> None:
    faults(web, {"endpoints": {"orderAndPay": {"drop_rate": 1, "drop_applies_effect": False}}})
    with pytest.raises(httpx.RemoteProtocolError):
        merchant.call("orderAndPay", hosted_order("DROP_2"))
    assert sim.state.order("DROP_2") is None


def test_a_late_answer_times_the_client_out_but_the_order_exists(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client
) -> None:
    faults(web, {"endpoints": {"orderAndPay": {"timeout_rate": 1, "timeout_seconds": 0.6}}})
    raw = dumps(merchant.envelope("orderAndPay", hosted_order("LATE_1")))
    headers = {"content-type": "application/json", "sign": merchant.signer.sign(raw)}
    with pytest.raises(httpx.ReadTimeout):
        merchant.http.post("/aggregate-pay/api/gateway/orderAndPay", content=raw, headers=headers, timeout=0.2)
    assert sim.state.order("LATE_1") is not None


def test_latency(merchant: MerchantCaller, web: httpx.Client) -> None:
    faults(web, {"endpoints": {"orderQuery": {"delay_seconds": 0.25}}})
    started = time.monotonic()
    assert merchant.call("orderQuery", {"outTradeNo": "X"}).code == "ORDER_NOT_EXIST"
    assert time.monotonic() - started >= 0.25


def test_unsigned_and_badly_signed_answers(merchant: MerchantCaller, web: httpx.Client) -> None:
    faults(web, {"endpoints": {"orderQuery": {"unsigned": True}, "refundQuery": {"bad_signature": True}}})
    unsigned = merchant.call("orderQuery", {"outTradeNo": "X"}, check=False)
    spoiled = merchant.call("refundQuery", {"outRefundNo": "X"}, check=False)
    assert (unsigned.sign, unsigned.signature_ok, unsigned.code) == (None, False, "ORDER_NOT_EXIST")
    assert spoiled.sign is not None
    assert (spoiled.signature_ok, spoiled.code) == (False, "ORDER_NOT_EXIST")


def test_hide_from_query_until_the_time_passes(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client
) -> None:
    faults(web, {"hide_from_query": {"hide_1": 30}})
    merchant.call("orderAndPay", direct_order("HIDE_1"))
    merchant.call("orderAndPay", direct_order("SHOWN_1"))
    assert merchant.call("orderQuery", {"outTradeNo": "HIDE_1"}).code == "ORDER_NOT_EXIST"
    assert merchant.call("orderQuery", {"outTradeNo": "SHOWN_1"}).code == "APPLY_SUCCESS"
    web.post("/__sim/clock/advance", json={"seconds": 31}).raise_for_status()
    assert merchant.call("orderQuery", {"outTradeNo": "HIDE_1"}).data["status"] == "SUCCESS"


def test_hide_every_order_for_a_while(merchant: MerchantCaller, web: httpx.Client) -> None:
    faults(web, {"hide_from_query": {"*": 0.3}})
    merchant.call("orderAndPay", hosted_order("HIDE_2"))
    assert merchant.call("orderQuery", {"outTradeNo": "HIDE_2"}).code == "ORDER_NOT_EXIST"
    wait_until(lambda: merchant.call("orderQuery", {"outTradeNo": "HIDE_2"}).code == "APPLY_SUCCESS")


@pytest.mark.parametrize(
    "plan",
    [
        {"endpoints": {"orderQuery": {"error_rate": 1.5}}},
        {"endpoints": {"orderQuery": {"surprise": 1}}},
        {"endpoints": {"nope": {}}},
        {"endpoints": {"orderQuery": {"error_code": "lower case"}}},
        {"notifications": {"drop_rate": "high"}},
        {"hide_from_query": {"X": -1}},
        {"unknown": True},
    ],
)
def test_bad_fault_plans_are_refused(web: httpx.Client, plan: dict[str, Any]) -> None:
    response = web.put("/__sim/faults", json=plan)
    assert response.status_code == 400
    assert "error" in response.json()


def test_the_fault_plan_reads_back(web: httpx.Client) -> None:
    faults(web, {"endpoints": {"refund": {"error_rate": 0.5}}, "notifications": {"duplicate_rate": 1}})
    plan = web.get("/__sim/faults").json()
    assert plan["endpoints"]["refund"]["error_rate"] == 0.5
    assert plan["notifications"]["duplicate_rate"] == 1
    assert FaultPlan.from_json(plan).to_json() == plan
    assert web.delete("/__sim/faults").json() == FaultPlan().to_json()


def codes_under_half_errors(caller: MerchantCaller, web: httpx.Client) -> list[str | None]:
    faults(web, {"endpoints": {"orderQuery": {"error_rate": 0.5}}})
    return [caller.call("orderQuery", {"outTradeNo": "X"}).code for _ in range(16)]


def test_seeded_faults_repeat(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    runs = []
    for _ in range(2):
        with (
            own_simulator(merchant_keys, platform_keys, inspect=conform, seed=7) as (running, caller),
            httpx.Client(base_url=running.base_url) as web,
        ):
            runs.append(codes_under_half_errors(caller, web))
            runs.append(codes_under_half_errors(caller, web))
    assert runs[0] == runs[1] == runs[2] == runs[3]
    assert {"SYSTEM_ERROR", "ORDER_NOT_EXIST"} == set(runs[0])


def test_faults_can_come_from_the_config(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> None:
    plan = FaultPlan.from_json({"endpoints": {"orderQuery": {"error_rate": 1}}})
    with own_simulator(merchant_keys, platform_keys, inspect=conform, faults=plan) as (_, caller):
        assert caller.call("orderQuery", {"outTradeNo": "X"}).code == "SYSTEM_ERROR"
        caller.http.post("/__sim/reset").raise_for_status()
        assert caller.call("orderQuery", {"outTradeNo": "X"}).code == "SYSTEM_ERROR"


# notification faults


@pytest.fixture
def sink(platform_keys: PortalKeyPair) -> Iterator[NotificationSink]:
    """Unlike the shared sink, this one is not checked afterwards: faults spoil signatures here."""
    receiver = NotificationSink(platform_keys.public_key)
    yield receiver
    receiver.close()


def test_a_dropped_notification_never_arrives(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client, sink: NotificationSink
) -> None:
    faults(web, {"notifications": {"drop_rate": 1}})
    merchant.call("orderAndPay", direct_order("LOST_1", notify_url=sink.url))
    time.sleep(0.2)
    assert sink.received == []
    assert web.get("/__sim/notifications", params={"key": "LOST_1"}).json() == {
        "attempts": [],
        "dropped": [{"kind": "payment", "key": "LOST_1"}],
    }


def test_a_badly_signed_notification(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client, sink: NotificationSink
) -> None:
    faults(web, {"notifications": {"bad_signature_rate": 1}})
    merchant.call("orderAndPay", direct_order("BADSIG_1", notify_url=sink.url))
    (note,) = sink.wait_for(1)
    assert note.sign is not None
    assert not note.signature_ok
    wait_until(lambda: len(sim.state.attempts(key="BADSIG_1")) == 1)
    assert sim.state.attempts(key="BADSIG_1")[0].signature_valid is False


def test_duplicates_follow_an_acknowledged_notification(
    sim: RunningSimulator, merchant: MerchantCaller, web: httpx.Client, sink: NotificationSink
) -> None:
    faults(web, {"notifications": {"duplicate_rate": 1, "max_copies": 1}})
    merchant.call("orderAndPay", direct_order("TWICE_1", notify_url=sink.url))
    first, second = sink.wait_for(2)
    assert first.body["data"] == second.body["data"]
    wait_until(lambda: len(sim.state.attempts(key="TWICE_1")) == 2)
    assert [a.source for a in sim.state.attempts(key="TWICE_1")] == ["ladder", "duplicate"]
    for note in (first, second):
        validate_notification(notification_kind(note.body), note.body)


def test_notification_delay(merchant: MerchantCaller, web: httpx.Client, sink: NotificationSink) -> None:
    faults(web, {"notifications": {"delay_seconds": 0.3}})
    started = time.monotonic()
    merchant.call("orderAndPay", direct_order("LATE_N", notify_url=sink.url))
    assert merchant.call("orderQuery", {"outTradeNo": "LATE_N"}).data["status"] == "SUCCESS"
    assert sink.received == []
    (note,) = sink.wait_for(1)
    assert note.arrived - started >= 0.3


def test_reordering_window_still_delivers_everything(
    merchant: MerchantCaller, web: httpx.Client, sink: NotificationSink
) -> None:
    faults(web, {"notifications": {"reorder_window_seconds": 0.2}})
    for index in range(4):
        merchant.call("orderAndPay", direct_order(f"REORDER_{index}", notify_url=sink.url))
    keys = {note.body["data"]["outTradeNo"] for note in sink.wait_for(4)}
    assert keys == {f"REORDER_{index}" for index in range(4)}
