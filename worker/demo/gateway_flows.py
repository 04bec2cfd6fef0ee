"""The seed flows through ``ChecusClient`` against the simulator, each step checked.

A first card payment on the hosted cashier that saves the card; a token payment without
3DS; one with 3DS; partial refunds up to the full amount; a refund above what is left;
token listing and removal, and the removed token refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from ..gateway import ChecusClient, GatewayRejected, Signer, Verifier, build_http_client
from ..gateway.requests import HostedCardPayment, Refund, TokenInquiry, TokenPayment, TokenRemoval
from ..gateway.signing import generate_portal_key_pair
from .sink import NotificationSink

USER = "demo_user_1"


@dataclass(slots=True)
class Step:
    flow: str
    action: str
    expected: str
    actual: str

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


class GatewayDemo:
    """Runs the flows; ``steps`` is the record printed at the end."""

    def __init__(self, client: ChecusClient, sim_url: str, sink: NotificationSink) -> None:
        self.client, self.sim_url, self.sink = client, sim_url, sink
        self.http = httpx.Client(timeout=10.0)
        self.steps: list[Step] = []
        self.run_id = time.strftime("%H%M%S")

    def check(self, flow: str, action: str, expected: str, actual: Callable[[], Any]) -> str:
        try:
            value = str(actual())
        except GatewayRejected as exc:
            value = f"rejected {exc.code}"
        self.steps.append(Step(flow, action, expected, value))
        return value

    def notified(self, key: str, value: str) -> str:
        note = self.sink.wait_for(key, value)
        return note["data"]["status"] if note else "no notification"

    def cashier(self, redirect_url: str, action: str) -> int:
        response = self.http.post(redirect_url, data={"action": action, "save_card": "on"})
        return response.status_code

    def run(self) -> None:
        token = self.first_payment()
        self.token_payments(token)
        self.refunds()
        self.tokens(token)

    def first_payment(self) -> str:
        flow, no = "first card payment", f"DEMO_{self.run_id}_1"
        created = self.client.create_payment(HostedCardPayment(
            out_trade_no=no, subject="Demo order", amount=Decimal("100.00"), currency="USD", user_id=USER,
            front_callback_url="https://shop.example/return", notify_url=self.sink.url + "/payment",
            token_for_future_use=True, allowed_card_orgs=("VISA", "MASTERCARD"),
        ))
        self.check(flow, "orderAndPay (Hosted_Checkout, CARD)", "PENDING", lambda: created.status)
        self.check(flow, "pay on the cashier page", "200", lambda: self.cashier(created.redirect_url or "", "success"))
        self.check(flow, "signed notification", "SUCCESS", lambda: self.notified("outTradeNo", no))
        state = self.client.query_order(no)
        self.check(flow, "orderQuery", "SUCCESS", lambda: state.status)
        self.check(flow, "card token saved", "True", lambda: state.payment_token_id is not None)
        return state.payment_token_id or ""

    def token_payment(self, no: str, token: str, subject: str) -> Any:
        return self.client.create_payment(TokenPayment(
            out_trade_no=no, subject=subject, amount=Decimal("25.00"), currency="USD", country="US", user_id=USER,
            payment_token_id=token, client_ip="127.0.0.1", user_agent="checus-demo",
            notify_url=self.sink.url + "/payment",
        ))

    def token_payments(self, token: str) -> None:
        flow, no = "token payment", f"DEMO_{self.run_id}_2"
        reply = self.token_payment(no, token, "Second purchase")
        self.check(flow, "orderAndPay (Direct_Payment, token)", "SUCCESS", lambda: reply.status)
        self.check(flow, "confirmed by notification", "SUCCESS", lambda: self.notified("outTradeNo", no))
        flow, no = "token payment with 3DS", f"DEMO_{self.run_id}_3"
        reply = self.token_payment(no, token, "3DS")
        self.check(flow, "orderAndPay asks for 3DS", "PENDING", lambda: reply.status)
        self.check(flow, "pass the 3DS challenge", "200", lambda: self.cashier(reply.redirect_url or "", "3ds_pass"))
        self.check(flow, "confirmed by notification", "SUCCESS", lambda: self.notified("outTradeNo", no))

    def refund(self, no: str, amount: str) -> Any:
        return self.client.refund(Refund(
            out_refund_no=no, out_trade_no=f"DEMO_{self.run_id}_1", amount=Decimal(amount), currency="USD",
            refund_notify_url=self.sink.url + "/refund",
        )).status

    def complete_refund(self, no: str, status: str) -> str:
        self.http.post(f"{self.sim_url}/__sim/refunds/{no}/complete", json={"status": status}).raise_for_status()
        return self.notified("outRefundNo", no)

    def refund_status(self, no: str) -> str:
        return self.client.query_refund(no).status.value

    def refunds(self) -> None:
        flow = "partial refunds"
        for i, (amount, outcome) in enumerate([("30.00", "REFUND_SUCCESS"), ("20.00", "REFUND_FAILED"),
                                               ("70.00", "REFUND_SUCCESS")], start=1):
            no = f"DEMO_{self.run_id}_R{i}"
            self.check(flow, f"refund {amount}", "REFUND_PENDING", partial(self.refund, no, amount))
            self.check(flow, f"gateway settles {no[-2:]}", outcome, partial(self.complete_refund, no, outcome))
            self.check(flow, "refundQuery", outcome, partial(self.refund_status, no))
        no = f"DEMO_{self.run_id}_R4"
        self.check("refund above paid", "refund 0.01 more", "rejected AMOUNT_INVALID", lambda: self.refund(no, "0.01"))

    def tokens(self, token: str) -> None:
        flow = "tokens"
        listed = self.client.inquire_tokens(TokenInquiry(user_id=USER))
        self.check(flow, "inquirePaymentToken", "Activated", lambda: listed[0].status.value if listed else "none")
        removal = TokenRemoval(user_id=USER, payment_token_id=token, reason="demo")
        self.check(flow, "removePaymentToken", "Deleted", lambda: self.client.remove_token(removal).status.value)
        no = f"DEMO_{self.run_id}_4"
        self.check(flow, "pay with the removed token", "rejected PARAMS_INVALID",
                   lambda: self.token_payment(no, token, "After removal").status)


def print_steps(steps: list[Step], console: Console) -> None:
    table = Table(title="Checus demo (gateway level)")
    for column in ("flow", "step", "expected", "actual", ""):
        table.add_column(column)
    for step in steps:
        table.add_row(step.flow, step.action, step.expected, step.actual, "ok" if step.ok else "FAILED")
    console.print(table)


def run_gateway_demo(*, time_scale: float, console: Console | None = None) -> bool:
    from ..simulator.config import SimulatorConfig
    from ..simulator.server import start_background

    console = console or Console()
    merchant, platform = generate_portal_key_pair(), generate_portal_key_pair()
    sim = start_background(SimulatorConfig(
        app_id="DEMO_APP", merchant_no="DEMO_MERCHANT", merchant_public_keys=(merchant.public_key,),
        platform_private_key=platform.private_key, time_scale=time_scale,
    ))
    verifier = Verifier.from_values([platform.public_key], setting="platform")
    sink = NotificationSink(verifier).start()
    client = ChecusClient(
        http=build_http_client(), base_url=sim.base_url, app_id="DEMO_APP", merchant_no="DEMO_MERCHANT",
        signer=Signer.from_value(merchant.private_key, setting="merchant"), verifier=verifier,
    )
    demo = GatewayDemo(client, sim.base_url, sink)
    try:
        demo.run()
    finally:
        sink.stop()
        sim.stop()
    print_steps(demo.steps, console)
    ok = all(step.ok for step in demo.steps)
    console.print("all flows ended as expected" if ok else "SOME FLOWS DID NOT END AS EXPECTED")
    return ok
