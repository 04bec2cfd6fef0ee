"""``checus-worker demo``: the seed flows on an embedded stack with real worker processes.

The stack: the simulator as Checus, the receiver on a thread, one rq worker process and one
scheduler process, SQLite in a temporary directory, Redis from ``REDIS_URL`` or a private
redis-server. Each flow is driven the way a merchant would (the Python API, the cashier page)
and its end state checked; every order's and refund's history is printed at the end.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path

import httpx
from rich.console import Console

from worker.devtools.demo.stack import EmbeddedStack
from worker.gateway.errors import ChecusError
from worker.ops.render import render_order
from worker.service_errors import RefundRefused, TokenRefused

USER = "demo_user"
DEADLINE_SECONDS = 30.0


@dataclass(slots=True)
class Check:
    flow: str
    expected: str
    actual: str

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


class Demo:
    def __init__(self, stack: EmbeddedStack, console: Console) -> None:
        self.stack, self.console = stack, console
        self.service = stack.service
        self.http = httpx.Client(timeout=10)
        self.checks: list[Check] = []
        self.orders: list[str] = []
        self.run = time.strftime("%H%M%S")

    def expect(self, flow: str, expected: str, actual: Callable[[], str], *, wait: bool = True) -> bool:
        deadline = time.monotonic() + (DEADLINE_SECONDS if wait else 0)
        value = actual()
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.1)
            value = actual()
        self.checks.append(Check(flow, expected, value))
        mark = "[green]ok[/green]" if value == expected else f"[red]FAILED (got {value})[/red]"
        self.console.print(f"  {flow}: {expected} {mark}")
        return value == expected

    def order_state(self, no: str) -> str:
        view = self.service.get_order(no)
        return view.order.state if view else "missing"

    def refund_state(self, no: str) -> str:
        view = self.service.get_refund(no)
        return view.refund.state if view else "missing"

    def sim(self, method: str, path: str, json: object) -> None:
        self.http.request(method, f"{self.stack.sim.base_url}/__sim{path}", json=json).raise_for_status()

    def number(self, name: str) -> str:
        no = f"DEMO_{self.run}_{name}"
        self.orders.append(no)
        return no

    # -- the flows ---------------------------------------------------------------------------

    def first_payment(self) -> int:
        self.console.rule("first card payment, card saved")
        no = self.number("FIRST")
        result = self.service.create_card_payment(
            out_trade_no=no, amount=Decimal("100.00"), currency="USD", user_id=USER, subject="Demo basket",
            front_callback_url="https://shop.example/return", save_card=True, country="US",
            allowed_card_orgs=("VISA", "MASTERCARD"))
        self.console.print(f"  buyer goes to {result.redirect_url}")
        self.http.post(result.redirect_url or "", data={"action": "success", "save_card": "on"})
        self.expect("paid on the cashier page", "SUCCESS", lambda: self.order_state(no))
        tokens = self.service.list_tokens(USER, sync=False)
        self.expect("card token saved", "Activated", lambda: tokens[0].status if tokens else "none", wait=False)
        return tokens[0].id if tokens else -1

    def token_payments(self, token: int) -> None:
        self.console.rule("token payments")
        for name, subject, expected_hint in (("TOKEN", "Second purchase", "SUCCESS"), ("TOKEN3DS", "3DS", "PENDING")):
            no = self.number(name)
            result = self.service.pay_with_token(
                out_trade_no=no, user_id=USER, token=token, amount=Decimal("25.00"), currency="USD", country="US",
                subject=subject, client_ip="203.0.113.7", user_agent="demo-browser")
            hint = result.gateway_hint or ""
            self.expect(f"{name}: gateway answer (a hint)", expected_hint, partial(str, hint), wait=False)
            if result.redirect_url:
                self.http.post(result.redirect_url, data={"action": "3ds_pass"})
            self.expect(f"{name}: confirmed", "SUCCESS", partial(self.order_state, no))

    def lost_notification(self) -> None:
        self.console.rule("a lost notification, recovered by polling")
        self.sim("PUT", "/faults", {"notifications": {"drop_rate": 1}})
        no = self.number("LOST")
        result = self.service.create_card_payment(
            out_trade_no=no, amount=Decimal("12.00"), currency="USD", user_id="demo_user_2", subject="Lost",
            front_callback_url="https://shop.example/return")
        self.http.post(result.redirect_url or "", data={"action": "success"})
        self.expect("found by /orderQuery", "SUCCESS", lambda: self.order_state(no))
        self.sim("DELETE", "/faults", None)

    def duplicates(self) -> None:
        self.console.rule("a burst of duplicate and reordered notifications")
        self.sim("PUT", "/faults", {"notifications": {"duplicate_rate": 1, "max_copies": 4,
                                                      "reorder_window_seconds": 0.5}})
        nos = [self.number(f"BURST{i}") for i in range(3)]
        for no in nos:
            result = self.service.create_card_payment(
                out_trade_no=no, amount=Decimal("5.00"), currency="USD", user_id="demo_user_3", subject="Burst",
                front_callback_url="https://shop.example/return")
            self.http.post(result.redirect_url or "", data={"action": "success"})
        for no in nos:
            self.expect(f"{no[-6:]} applied once", "SUCCESS x1", partial(self._applied_once, no))
        self.sim("DELETE", "/faults", None)

    def _applied_once(self, no: str) -> str:
        view = self.service.get_order(no)
        if view is None:
            return "missing"
        return f"{view.order.state} x{sum(1 for h in view.history if h.to_state == 'SUCCESS')}"

    def refunds(self) -> None:
        self.console.rule("refunds: partial, failed, up to the full amount, one too many")
        no = self.orders[0]
        plan = (("R1", "30.00", "REFUND_SUCCESS"), ("R2", "20.00", "REFUND_FAILED"), ("R3", "70.00", "REFUND_SUCCESS"))
        for name, amount, outcome in plan:
            refund_no = f"DEMO_{self.run}_{name}"
            self.service.refund(no, Decimal(amount), out_refund_no=refund_no)
            self.expect(f"{name} {amount} sent", "REFUND_PENDING", partial(self.refund_state, refund_no))
            self.sim("POST", f"/refunds/{refund_no}/complete", {"status": outcome})
            self.expect(f"{name} settled", outcome, partial(self.refund_state, refund_no))
        try:
            self.service.refund(no, Decimal("0.01"))
            refused = "accepted"
        except RefundRefused as exc:
            refused = exc.reason
        self.expect("refund above what is left", "exceeds_refundable", lambda: refused, wait=False)

    def tokens(self, token: int) -> None:
        self.console.rule("saved cards: list and remove")
        listed = self.service.list_tokens(USER, sync=True)
        self.expect("listed from /inquirePaymentToken", "Activated", lambda: listed[0].status if listed else "none",
                    wait=False)
        removed = self.service.remove_token(USER, token, reason="demo")
        self.expect("removed at Checus", "Deleted", lambda: removed.status, wait=False)
        try:
            self.service.pay_with_token(out_trade_no=self.number("AFTER"), user_id=USER, token=token,
                                        amount=Decimal("1.00"), currency="USD", country="US", subject="x",
                                        client_ip="203.0.113.7", user_agent="demo-browser")
            outcome = "paid"
        except TokenRefused as exc:
            outcome = exc.reason
        self.expect("deleted token refused before any gateway call", "token_deleted", lambda: outcome, wait=False)

    def histories(self) -> None:
        self.console.rule("histories")
        for no in self.orders:
            view = self.service.get_order(no)
            if view is not None:
                render_order(view, self.console)


def run_demo(*, console: Console | None = None, time_scale: float = 0.01, redis_url: str | None = None) -> bool:
    from worker.devtools.demo.redis_server import RedisServer

    console = console or Console()
    workdir = Path(tempfile.mkdtemp(prefix="checus-demo-"))
    private = None if redis_url else RedisServer(workdir / "redis").start()
    stack = EmbeddedStack(redis_url=redis_url or (private.url if private else ""),
                          database_url=f"sqlite:///{workdir / 'demo.db'}", time_scale=time_scale).start()
    console.print(f"simulator {stack.sim.base_url}, receiver {stack.receiver.base_url}, store {workdir / 'demo.db'}")
    stack.spawn_workers(log_dir=workdir)
    demo = Demo(stack, console)
    try:
        token = demo.first_payment()
        demo.token_payments(token)
        demo.lost_notification()
        demo.duplicates()
        demo.refunds()
        demo.tokens(token)
        demo.histories()
    except (ChecusError, httpx.HTTPError) as exc:
        console.print(f"[red]the demo stopped: {type(exc).__name__}: {exc}[/red]")
        demo.checks.append(Check("demo", "completed", type(exc).__name__))
    finally:
        stack.stop()
        if private:
            private.stop()
    failed = [c for c in demo.checks if not c.ok]
    console.rule()
    console.print(f"{len(demo.checks) - len(failed)}/{len(demo.checks)} checks passed; logs in {workdir}")
    return not failed
