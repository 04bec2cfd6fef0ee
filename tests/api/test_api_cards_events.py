"""Saved cards (synced with Checus) and the event feed, against the live API."""

from __future__ import annotations

import httpx

from tests.api.conftest import LiveApi, payment_body
from tests.e2e.conftest import cashier


def paid_with_saved_card(live: LiveApi, http: httpx.Client, no: str = "API_CARD_1") -> int:
    created = http.post("/v1/payments", json=payment_body(no, save_card=True)).json()
    assert cashier(created["redirect_url"], "success", save_card=True) == 200
    assert live.stack.settle(lambda: live.state(no) == "SUCCESS")
    cards = http.get("/v1/users/shopper1/cards").json()
    assert cards["synced"] is True and [c["status"] for c in cards["cards"]] == ["Activated"]
    assert "token_id" not in cards["cards"][0] and len(cards["cards"][0]["token_hint"]) <= 8
    return int(cards["cards"][0]["card_id"])


def test_a_saved_card_pays_again_and_is_removed(live: LiveApi) -> None:
    """Pay with card_id (a hint of SUCCESS, our state PENDING), remove it (Deleted), remove again (same answer)."""
    http = live.client()
    card = paid_with_saved_card(live, http)
    again = http.post("/v1/payments", json=payment_body("API_CARD_2", card_id=card, country="US",
                                                        client_ip="203.0.113.9", user_agent="Mozilla/5.0",
                                                        return_url=None))
    assert again.status_code == 201, again.text
    assert again.json()["kind"] == "token" and again.json()["state"] in {"PENDING", "SUCCESS"}
    removed = http.delete(f"/v1/users/shopper1/cards/{card}")
    assert removed.status_code == 200 and removed.json()["status"] == "Deleted"
    assert http.delete(f"/v1/users/shopper1/cards/{card}").json()["status"] == "Deleted"
    refused = http.post("/v1/payments", json=payment_body("API_CARD_3", card_id=card, country="US",
                                                          client_ip="203.0.113.9", user_agent="x", return_url=None))
    assert refused.status_code == 422 and refused.json()["type"].endswith("/card-refused")
    assert refused.json()["reason"] == "token_deleted"


def test_someone_elses_card_is_not_found(live: LiveApi) -> None:
    http = live.client()
    card = paid_with_saved_card(live, http)
    assert http.delete(f"/v1/users/intruder/cards/{card}").status_code == 404
    pay = http.post("/v1/payments", json=payment_body("API_CARD_X", user_id="intruder", card_id=card, country="US",
                                                      client_ip="1.2.3.4", user_agent="x", return_url=None))
    assert pay.status_code == 404 and pay.json()["type"].endswith("/not-found")


def test_cards_are_listed_as_last_known_when_checus_cannot_be_asked(live: LiveApi) -> None:
    http = live.client()
    paid_with_saved_card(live, http)
    live.sim.set_faults({"endpoints": {"inquirePaymentToken": {"drop_rate": 1}}})
    cards = http.get("/v1/users/shopper1/cards")
    live.sim.clear_faults()
    assert cards.status_code == 200 and cards.json()["synced"] is False and len(cards.json()["cards"]) == 1


def test_the_feed_pages_through_the_merchant_events_with_the_webhook_ids(live: LiveApi) -> None:
    """Every outbox event once, in order, by cursor; the ids are the outbox's (the webhook's)."""
    http = live.client()
    paid_with_saved_card(live, http)
    everything = http.get("/v1/events", params={"limit": 500}).json()
    types = [e["type"] for e in everything["events"]]
    assert "payment.succeeded" in types and "token.saved" in types and everything["has_more"] is False
    from worker.store import outbox

    with live.stack.rt.engine.connect() as conn:
        stored = [e.event_id for e in outbox.due(conn, now=live.stack.rt.clock(), limit=500)]
    assert [e["event_id"] for e in everything["events"]] == stored
    seen, cursor = [], None
    while True:
        page = http.get("/v1/events", params={"limit": 1, **({"after": cursor} if cursor else {})}).json()
        seen += [e["event_id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == stored
    assert http.get("/v1/events", params={"after": cursor}).json() == {"events": [], "next_cursor": cursor,
                                                                      "has_more": False}
    with live.stack.rt.engine.connect() as conn:  # read past them all: acknowledged (no other consumer here)
        assert outbox.due(conn, now=live.stack.rt.clock(), limit=500) == []
    far = http.get("/v1/events", params={"after": "9" * 18})  # past any id (found by schemathesis: a 500 on PG)
    assert far.status_code == 200 and far.json()["events"] == []
    bad = http.get("/v1/events", params={"after": "abc"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "query/after"


def test_a_removal_whose_outcome_is_unknown_is_202_and_the_card_is_blocked(live: LiveApi) -> None:
    """/removePaymentToken's answer is lost: 202 with the card Removing (never charged) until the next sync."""
    http = live.client()
    card = paid_with_saved_card(live, http)
    live.sim.set_faults({"endpoints": {"removePaymentToken": {"drop_rate": 1}}})
    answer = http.delete(f"/v1/users/shopper1/cards/{card}")
    live.sim.clear_faults()
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "Removing" and "blocked" in answer.json()["detail"]
    refused = http.post("/v1/payments", json=payment_body("API_CARD_BLOCKED", card_id=card, country="US",
                                                          client_ip="1.2.3.4", user_agent="x", return_url=None))
    assert refused.status_code == 422 and refused.json()["reason"] == "token_removing"


def test_a_removal_checus_refuses_is_a_gateway_refused_problem_and_the_card_stays(live: LiveApi) -> None:
    """Checus refuses /removePaymentToken with a documented code: 422 gateway-refused naming the code, nothing
    changed on our side (the card is still Activated and usable)."""
    http = live.client()
    card = paid_with_saved_card(live, http)
    live.sim.set_faults({"endpoints": {"removePaymentToken": {"error_rate": 1, "error_code": "PARAMS_INVALID"}}})
    answer = http.delete(f"/v1/users/shopper1/cards/{card}")
    live.sim.clear_faults()
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["type"].endswith("/gateway-refused") and problem["code"] == "PARAMS_INVALID", problem
    cards = http.get("/v1/users/shopper1/cards").json()
    assert [c["status"] for c in cards["cards"]] == ["Activated"]


def test_a_token_inquiry_checus_refuses_is_a_gateway_refused_problem(live: LiveApi) -> None:
    http = live.client()
    paid_with_saved_card(live, http)
    live.sim.set_faults({"endpoints": {"inquirePaymentToken": {"error_rate": 1, "error_code": "MERCHANT_INVALID"}}})
    answer = http.get("/v1/users/shopper1/cards")
    live.sim.clear_faults()
    assert answer.status_code == 422 and answer.json()["type"].endswith("/gateway-refused"), answer.text
    assert answer.json()["code"] == "MERCHANT_INVALID"
