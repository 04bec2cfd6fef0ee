"""API keys and Idempotency-Key against the live API: who may call, and one effect per key."""

from __future__ import annotations

import threading

import httpx
from structlog.testing import capture_logs

from tests.api.conftest import LiveApi, payment_body
from worker.api.keys import list_keys, revoke_key


def test_without_a_valid_key_every_resource_is_401(live: LiveApi) -> None:
    """No key, a malformed one, a wrong one: 401 problem with a Bearer challenge; nothing is created."""
    for client in (live.client(auth=False), live.client("chk_wrong"), live.client("not-even-a-key")):
        for method, path in (("GET", "/v1/payments/X"), ("POST", "/v1/payments"), ("GET", "/v1/events")):
            answer = client.request(method, path, json=payment_body("API_NOAUTH"))
            assert answer.status_code == 401, (method, path)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert answer.json()["type"].endswith("/unauthorized")
    assert live.stack.service.get_order("API_NOAUTH") is None


def test_a_revoked_key_is_refused_and_another_still_works(live: LiveApi) -> None:
    """Rotation: two keys at once; revoking one refuses it on its next request, the other goes on."""
    new = live.key("shop-new")
    old, fresh = live.client(), live.client(new)
    assert old.get("/v1/events").status_code == 200 and fresh.get("/v1/events").status_code == 200
    revoke_key(live.stack.rt.engine, "shop", now=live.stack.rt.clock())
    assert old.get("/v1/events").status_code == 401
    assert fresh.get("/v1/events").status_code == 200
    assert [(k.name, k.active) for k in list_keys(live.stack.rt.engine)] == [("shop", False), ("shop-new", True)]


def test_a_read_only_key_reads_but_never_writes(live: LiveApi) -> None:
    """403 on POST and DELETE, 200 on GET."""
    reader = live.client(live.key("dashboard", read_only=True))
    assert reader.get("/v1/events").status_code == 200
    refused = reader.post("/v1/payments", json=payment_body("API_RO"))
    assert refused.status_code == 403 and refused.json()["type"].endswith("/forbidden")
    assert reader.delete("/v1/users/u1/cards/1").status_code == 403
    assert live.stack.service.get_order("API_RO") is None


def test_secrets_never_reach_the_logs(live: LiveApi) -> None:
    """The request log names the key, never its secret or the Authorization header."""
    with capture_logs() as logs:
        live.client().get("/v1/events")
    assert any(entry.get("key") == "shop" for entry in logs)
    assert live.secret not in repr(logs)


def test_the_same_key_and_body_replay_the_first_answer(live: LiveApi) -> None:
    """Status and body byte for byte, marked Idempotent-Replayed, and no second gateway call."""
    http = live.client()
    first = http.post("/v1/payments", json=payment_body("API_IDEM"), headers={"Idempotency-Key": "same"})
    calls = live.sim.ledger()["calls"]["orderAndPay"]
    second = http.post("/v1/payments", json=payment_body("API_IDEM"), headers={"Idempotency-Key": "same"})
    assert (second.status_code, second.content) == (first.status_code, first.content) == (201, first.content)
    assert second.headers["idempotent-replayed"] == "true"
    assert live.sim.ledger()["calls"]["orderAndPay"] == calls


def test_the_same_key_with_another_body_is_422(live: LiveApi) -> None:
    http = live.client()
    assert http.post("/v1/payments", json=payment_body("API_IDEM2"), headers={"Idempotency-Key": "k"}).is_success
    other = http.post("/v1/payments", json=payment_body("API_IDEM3"), headers={"Idempotency-Key": "k"})
    assert other.status_code == 422 and other.json()["type"].endswith("/idempotency-key-reused")
    assert live.stack.service.get_order("API_IDEM3") is None


def test_concurrent_requests_with_one_key_have_one_effect(live: LiveApi) -> None:
    """Eight requests at once with one key: one create at the gateway; every answer is that create's."""
    live.sim.set_faults({"endpoints": {"orderAndPay": {"delay_seconds": 0.5}}})
    answers: list[httpx.Response] = []
    go = threading.Barrier(8)

    def call() -> None:
        with httpx.Client(base_url=live.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {live.secret}", "Idempotency-Key": "race"}) as c:
            go.wait()
            answers.append(c.post("/v1/payments", json=payment_body("API_RACE")))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live.sim.clear_faults()
    assert sorted(a.status_code for a in answers) == [201] * 8, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 7
    ledger = live.sim.ledger()
    assert ledger["orders"]["API_RACE"] == 1 and ledger["calls"]["orderAndPay"] == 1
