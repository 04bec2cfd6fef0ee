"""What every route is handed: the service, the key check, idempotency and the feed (one per app).

``once`` runs a POST's action under its Idempotency-Key (or directly without one) and turns the
action's result or service error into the one answer that is sent, and stored for replays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import simplejson
from fastapi import Depends, Header, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from worker.api.feed import Feed
from worker.api.idempotency import Answer, Idempotency, InProgress, KeyReused, fingerprint
from worker.api.keys import ApiKey, authenticate
from worker.api.problems import MEDIA_TYPE, ApiProblem, body, from_service
from worker.config import SettingsError
from worker.runtime import Runtime
from worker.service import PaymentService
from worker.service_errors import NotConfigured, ServiceError


@dataclass(kw_only=True)
class Api:
    rt: Runtime
    service: PaymentService
    idempotency: Idempotency
    feed: Feed


def api_of(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


_bearer = HTTPBearer(auto_error=False, description="An API key made with `checus-worker api-keys create`")


def reader(request: Request,
           credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiKey:
    """The caller's active API key, or 401."""
    challenge = {"WWW-Authenticate": 'Bearer realm="checus-worker"'}
    if credentials is None:
        raise ApiProblem("unauthorized", "send an API key as Authorization: Bearer <key>", headers=challenge)
    key = authenticate(api_of(request).rt.engine, credentials.credentials)
    if key is None:
        raise ApiProblem("unauthorized", "the API key is unknown or revoked", headers=challenge)
    request.state.api_key = key.name
    return key


def writer(key: Annotated[ApiKey, Depends(reader)]) -> ApiKey:
    """The caller's key if it may write, else 403."""
    if key.read_only:
        raise ApiProblem("forbidden", f"the key {key.name!r} is read-only")
    return key


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Any unique string (a UUID): the same key and body replay the first answer; kept at least 24 h")]


def json_answer(status: int, model: BaseModel | dict[str, Any]) -> Answer:
    text = model.model_dump_json() if isinstance(model, BaseModel) else simplejson.dumps(model, separators=(",", ":"))
    return Answer(status, text)


def problem_answer(problem: ApiProblem) -> Answer:
    return json_answer(problem.kind.status, body(problem.kind, problem.detail, **problem.extra))


def to_response(answer: Answer, headers: dict[str, str] | None = None) -> Response:
    media = MEDIA_TYPE if answer.status >= 400 else "application/json"
    extra = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return Response(answer.body, status_code=answer.status, media_type=media, headers={**extra, **(headers or {})})


def guarded(act: Callable[[], Answer]) -> tuple[Answer, dict[str, str]]:
    """The action's answer, with a service error or missing setting turned into its problem."""
    try:
        return act(), {}
    except ServiceError as exc:
        problem = from_service(exc)
    except SettingsError as exc:
        problem = from_service(NotConfigured(str(exc), variable=exc.variable))
    except ApiProblem as exc:
        problem = exc
    return problem_answer(problem), problem.headers


def once(request: Request, key: str | None, payload: BaseModel, act: Callable[[], Answer]) -> Response:
    """Run a POST's ``act`` once per Idempotency-Key (see ``idempotency``); without a key, just run it."""
    headers: dict[str, str] = {}

    def run() -> Answer:
        answer, more = guarded(act)
        headers.update(more)
        return answer

    if key is None:
        return to_response(run(), headers)
    print_ = fingerprint(request.method, request.url.path, payload.model_dump(mode="json"))
    try:
        answer = api_of(request).idempotency.run(key, print_, run)
    except KeyReused:
        raise ApiProblem("idempotency-key-reused", "this Idempotency-Key was first used with another request; "
                         "use a new key for a new request") from None
    except InProgress:
        raise ApiProblem("idempotency-in-progress", "the first request with this Idempotency-Key is still running; "
                         "retry with the same key", headers={"Retry-After": "1"}) from None
    return to_response(answer, headers)
