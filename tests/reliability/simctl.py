"""A small client for the simulator's control API (``/__sim/...``): the gateway's truth and its knobs."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx


class SimControl:
    def __init__(self, base_url: str, *, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url + "/__sim", timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> Any:
        response.raise_for_status()  # amounts stay Decimal: the checker compares money exactly
        return json.loads(response.content, parse_float=Decimal) if response.content else None

    def healthy(self) -> bool:
        try:
            return self.http.get("/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    # -- outcomes ---------------------------------------------------------------------------

    def complete_order(self, out_trade_no: str, status: str, *, notify: bool = True, force: bool = False) -> int:
        """Settle an order at the gateway; returns the HTTP status (404: the gateway does not know it yet)."""
        body = {"status": status, "notify": notify, "force": force}
        return self.http.post(f"/orders/{out_trade_no}/complete", json=body).status_code

    def complete_refund(self, out_refund_no: str, status: str | None = None, *, notify: bool = True,
                        force: bool = False) -> int:
        body: dict[str, Any] = {"notify": notify, "force": force}
        if status is not None:
            body["status"] = status
        return self.http.post(f"/refunds/{out_refund_no}/complete", json=body).status_code

    # -- truth ------------------------------------------------------------------------------

    def order(self, out_trade_no: str) -> dict[str, Any] | None:
        response = self.http.get(f"/orders/{out_trade_no}")
        return None if response.status_code == 404 else dict(self._json(response))

    def refund(self, out_refund_no: str) -> dict[str, Any] | None:
        response = self.http.get(f"/refunds/{out_refund_no}")
        return None if response.status_code == 404 else dict(self._json(response))

    def orders(self) -> list[dict[str, Any]]:
        return list(self._json(self.http.get("/orders"))["orders"])

    def ledger(self) -> dict[str, Any]:
        return dict(self._json(self.http.get("/ledger")))

    def notifications(self) -> dict[str, Any]:
        return dict(self._json(self.http.get("/notifications")))

    # -- knobs ------------------------------------------------------------------------------

    def set_faults(self, plan: dict[str, Any]) -> None:
        self._json(self.http.put("/faults", json=plan))

    def clear_faults(self) -> None:
        self._json(self.http.delete("/faults"))

    def resend(self, key: str, copies: int) -> bool:
        return self.http.post("/notifications/resend", json={"key": key, "copies": copies}).status_code == 200

    def advance(self, seconds: float) -> None:
        self._json(self.http.post("/clock/advance", json={"seconds": seconds}))
