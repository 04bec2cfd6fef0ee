"""The API's contract: its OpenAPI 3.1 document, its reference page, and a problem type per error."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from tests.api.conftest import LiveApi, payment_body
from worker.api.app import create_api
from worker.api.problems import KINDS, TYPE_BASE, from_service
from worker.devtools.serving import serve_in_thread
from worker.runtime import Runtime
from worker.service_errors import (
    Busy,
    Conflict,
    GatewayRefused,
    InvalidRequest,
    NotConfigured,
    NotFound,
    OutcomeUnknown,
    RefundRefused,
    Refused,
    ServiceError,
    TokenRefused,
)


def test_the_openapi_document_is_valid_3_1_and_documents_every_resource(live: LiveApi) -> None:
    document = live.client(auth=False).get("/v1/openapi.json").json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {"/v1/payments", "/v1/payments/{out_trade_no}",
                                      "/v1/payments/{out_trade_no}/refunds", "/v1/refunds/{out_refund_no}",
                                      "/v1/users/{user_id}/cards", "/v1/users/{user_id}/cards/{card_id}",
                                      "/v1/events"}
    create = document["paths"]["/v1/payments"]["post"]
    assert {"200", "201", "202", "401", "403", "409", "422"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])


def test_the_reference_page_is_served(live: LiveApi) -> None:
    page = live.client(auth=False).get("/v1/docs")
    assert page.status_code == 200 and "/v1/openapi.json" in page.text


EXPECTED: list[tuple[ServiceError, int, str]] = [
    (InvalidRequest("bad", field="amount"), 422, "invalid-request"),
    (NotConfigured("CHECUS_APP_ID: is required", variable="CHECUS_APP_ID"), 503, "not-configured"),
    (RefundRefused("above_refundable", Decimal("3.00")), 422, "refund-refused"),
    (TokenRefused("token_expired"), 422, "card-refused"),
    (TokenRefused("token_not_found"), 404, "not-found"),
    (GatewayRefused("refused", code="TOKEN_INVALID"), 422, "gateway-refused"),
    (Refused("nope"), 422, "refused"),
    (NotFound("no X", ref="X"), 404, "not-found"),
    (Conflict("taken", ref="X"), 409, "conflict"),
    (Busy("kept changing"), 503, "busy"),
    (OutcomeUnknown("may have", ref="X"), 504, "outcome-unknown"),
]


@pytest.mark.parametrize(("error", "status", "slug"), EXPECTED, ids=[type(e[0]).__name__ for e in EXPECTED])
def test_each_service_error_has_a_stable_problem_type(error: ServiceError, status: int, slug: str) -> None:
    """The service's tree, mapped: a type per kind, the reason and the context a merchant acts on."""
    problem = from_service(error)
    assert (problem.kind.status, problem.kind.type) == (status, TYPE_BASE + slug)
    assert problem.extra["reason"] == error.reason
    if isinstance(error, Busy):
        assert problem.headers["Retry-After"] == "1"
    if isinstance(error, NotConfigured):
        assert "CHECUS_APP_ID" not in problem.detail  # the operator's log names it, not the merchant's answer
    if isinstance(error, RefundRefused):
        assert problem.extra["refundable"] == "3.00"


def test_every_problem_type_is_distinct() -> None:
    assert len({k.type for k in KINDS.values()}) == len(KINDS)


def test_validation_errors_point_at_fields_and_never_echo_the_input(live: LiveApi) -> None:
    http = live.client()
    answer = http.post("/v1/payments", json=payment_body("API_BAD", amount="10.001", subject="4111111111111111",
                                                         currency="usd"))
    assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"].endswith("/validation-failed")
    assert {e["pointer"] for e in problem["errors"]} == {"/currency"}
    assert "4111111111111111" not in answer.text
    floats = http.post("/v1/payments", json=payment_body("API_FLOAT", amount=10.5))
    assert floats.status_code == 422 and floats.json()["errors"][0]["pointer"] == "/amount"
    too_precise = http.post("/v1/payments", json=payment_body("API_BAD2", amount="10.001"))
    assert [e["pointer"] for e in too_precise.json()["errors"]] == ["/amount"]
    assert "decimal places" in too_precise.json()["errors"][0]["message"]
    for zero in ("0", "0.00"):
        assert http.post("/v1/payments", json=payment_body("API_ZERO", amount=zero)).status_code == 422
    junk = http.post("/v1/payments", content=b"{not json", headers={"content-type": "application/json"})
    assert junk.status_code == 422 and "Traceback" not in junk.text


def test_unknown_routes_and_methods_are_problems(live: LiveApi) -> None:
    http = live.client()
    missing = http.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    wrong = http.put("/v1/payments")
    assert wrong.status_code == 405 and wrong.json()["type"].endswith("/method-not-allowed")


@pytest.fixture
def unconfigured(live: LiveApi) -> Iterator[str]:
    """The same store and keys, served by an API whose settings lack the merchant's app id."""
    rt = live.stack.rt
    bare = Runtime(settings=rt.settings.with_overrides(app_id=""), engine=rt.engine, redis=rt.redis,
                   timers=rt.timers)
    served = serve_in_thread(create_api(bare, feed_settle=0), name="api-unconfigured")
    try:
        yield served.base_url
    finally:
        served.stop()


def test_a_missing_setting_is_503_not_configured_and_nothing_is_stored(live: LiveApi, unconfigured: str) -> None:
    import httpx

    answer = httpx.post(f"{unconfigured}/v1/payments", json=payment_body("API_NOCONF"),
                        headers={"Authorization": f"Bearer {live.secret}", "Idempotency-Key": "nc"}, timeout=30)
    assert answer.status_code == 503 and answer.json()["type"].endswith("/not-configured")
    assert live.stack.service.get_order("API_NOCONF") is None


def test_an_unexpected_error_is_a_bare_500_problem(tmp_path: Path, live: LiveApi) -> None:
    """A store without the API's tables: 500 internal, no traceback, no SQL, no message of the driver."""
    import httpx

    from worker.store.db import create_engine

    rt = live.stack.rt
    broken = Runtime(settings=rt.settings, engine=create_engine(f"sqlite:///{tmp_path / 'empty.db'}"), redis=rt.redis)
    served = serve_in_thread(create_api(broken, feed_settle=0), name="api-broken")
    try:
        answer = httpx.get(f"{served.base_url}/v1/events", headers={"Authorization": f"Bearer {live.secret}"})
    finally:
        served.stop()
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/internal")
    assert "Traceback" not in answer.text and "api_keys" not in answer.text and "sqlite" not in answer.text.lower()


def test_ids_beyond_the_stores_integers_are_422_not_500(live: LiveApi) -> None:
    http = live.client()
    huge = http.post("/v1/payments", json=payment_body("API_HUGE", card_id=2**40, country="US", client_ip="1.2.3.4",
                                                       user_agent="x", return_url=None))
    assert huge.status_code == 422 and huge.json()["errors"][0]["pointer"] == "/card_id"
    assert http.delete(f"/v1/users/u/cards/{2**40}").status_code == 422
