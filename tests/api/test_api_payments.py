"""The payment and refund resources, end to end: create, follow the cashier, read, refund, repeat safely."""

from __future__ import annotations

from tests.api.conftest import LiveApi, payment_body
from tests.e2e.conftest import cashier


def test_a_hosted_payment_is_created_paid_read_and_refunded(live: LiveApi) -> None:
    """201 with our state and the redirect_url; after the cashier, SUCCESS with its history; a refund succeeds."""
    http = live.client()
    created = http.post("/v1/payments", json=payment_body("API_PAY_1", save_card=True),
                        headers={"Idempotency-Key": "k-pay-1"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["state"] == "PENDING" and body["redirect_url"] and body["amount"] == "10.00"
    assert cashier(body["redirect_url"], "success") == 200
    assert live.stack.settle(lambda: live.state("API_PAY_1") == "SUCCESS")
    read = http.get("/v1/payments/API_PAY_1").json()
    assert read["state"] == "SUCCESS" and [h["to_state"] for h in read["history"]][-1] == "SUCCESS"
    refund = http.post("/v1/payments/API_PAY_1/refunds", json={"amount": "4.00", "out_refund_no": "API_RF_1"})
    assert refund.status_code == 201, refund.text
    assert refund.json()["out_trade_no"] == "API_PAY_1" and refund.json()["amount"] == "4.00"

    assert live.stack.settle(lambda: refund_state(live, "API_RF_1") == "REFUND_PENDING")
    assert live.sim.complete_refund("API_RF_1", "REFUND_SUCCESS") == 200
    assert live.stack.settle(lambda: refund_state(live, "API_RF_1") == "REFUND_SUCCESS")
    assert http.get("/v1/refunds/API_RF_1").json()["state"] == "REFUND_SUCCESS"
    payment = http.get("/v1/payments/API_PAY_1").json()
    assert payment["refunded"] == "4.00" and payment["refunds"][0]["out_refund_no"] == "API_RF_1"


def refund_state(live: LiveApi, out_refund_no: str) -> str | None:
    view = live.stack.service.get_refund(out_refund_no)
    return view.refund.state if view else None


def test_amounts_keep_the_currency_exponent(live: LiveApi) -> None:
    """IDR has no decimals on the wire: "15000" is accepted and answered as "15000"; "1.5" IDR is refused."""
    http = live.client()
    ok = http.post("/v1/payments", json=payment_body("API_IDR", amount="15000", currency="IDR", country="ID"))
    assert ok.status_code == 201, ok.text
    assert ok.json()["amount"] == "15000"
    bad = http.post("/v1/payments", json=payment_body("API_IDR_2", amount="1.5", currency="IDR"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/amount"


def test_a_repeat_without_a_key_returns_the_record_and_a_different_one_conflicts(live: LiveApi) -> None:
    """out_trade_no is unique: the same body again is 200 with the record; another body is 409, never 500."""
    http = live.client()
    assert http.post("/v1/payments", json=payment_body("API_REPEAT")).status_code == 201
    again = http.post("/v1/payments", json=payment_body("API_REPEAT"))
    assert again.status_code == 200 and again.json()["out_trade_no"] == "API_REPEAT"
    other = http.post("/v1/payments", json=payment_body("API_REPEAT", amount="11.00"))
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["type"].endswith("/conflict") and other.json()["ref"] == "API_REPEAT"
    assert live.sim.ledger()["orders"]["API_REPEAT"] == 1


def test_an_unknown_create_outcome_is_202_with_the_record_being_resolved(live: LiveApi) -> None:
    """/orderAndPay's answer is lost after Checus created the order: 202, state UNKNOWN, then resolved by query."""
    live.sim.set_faults({"endpoints": {"orderAndPay": {"drop_rate": 1}}})
    answer = live.client().post("/v1/payments", json=payment_body("API_UNKNOWN"), headers={"Idempotency-Key": "u1"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["state"] == "UNKNOWN" and "being resolved" in answer.json()["detail"]
    live.sim.clear_faults()
    assert live.stack.settle(lambda: live.state("API_UNKNOWN") == "PENDING")
    replay = live.client().post("/v1/payments", json=payment_body("API_UNKNOWN"), headers={"Idempotency-Key": "u1"})
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert live.sim.ledger()["orders"]["API_UNKNOWN"] == 1


def test_refund_errors_are_problems_with_their_reason(live: LiveApi) -> None:
    """An unpaid payment cannot be refunded (422 refund-refused, its reason); an unknown one is 404."""
    http = live.client()
    assert http.post("/v1/payments", json=payment_body("API_UNPAID")).status_code == 201
    refused = http.post("/v1/payments/API_UNPAID/refunds", json={"amount": "1.00", "out_refund_no": "API_RF_X"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("/refund-refused") and refused.json()["reason"]
    missing = http.post("/v1/payments/NOPE/refunds", json={"amount": "1.00", "out_refund_no": "API_RF_Y"})
    assert missing.status_code == 404 and missing.json()["type"].endswith("/not-found")
    assert http.get("/v1/refunds/NOPE").status_code == 404
    assert http.get("/v1/payments/NOPE").json()["ref"] == "NOPE"
    keyless = http.post("/v1/payments/API_UNPAID/refunds", json={"amount": "1.00"})
    assert keyless.status_code == 422 and keyless.json()["field"] == "out_refund_no"


def test_a_refund_number_names_one_refund(live: LiveApi) -> None:
    """The same out_refund_no and amount again is 200 with the record; another amount is 409; a third decimal 422."""
    http = live.client()
    created = http.post("/v1/payments", json=payment_body("API_RFN")).json()
    assert cashier(created["redirect_url"], "success", save_card=False) == 200
    assert live.stack.settle(lambda: live.state("API_RFN") == "SUCCESS")
    first = http.post("/v1/payments/API_RFN/refunds", json={"amount": "2.00", "out_refund_no": "API_RFN_1"})
    again = http.post("/v1/payments/API_RFN/refunds", json={"amount": "2.00", "out_refund_no": "API_RFN_1"})
    assert (first.status_code, again.status_code) == (201, 200)
    other = http.post("/v1/payments/API_RFN/refunds", json={"amount": "3.00", "out_refund_no": "API_RFN_1"})
    assert other.status_code == 409 and other.json()["ref"] == "API_RFN_1"
    precise = http.post("/v1/payments/API_RFN/refunds", json={"amount": "0.001", "out_refund_no": "API_RFN_2"})
    assert precise.status_code == 422 and precise.json()["field"] == "amount"
    assert live.stack.service.get_refund("API_RFN_2") is None
