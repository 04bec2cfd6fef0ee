"""An order or a refund with its history, drawn for a terminal (the CLI's ``order show`` and the demo)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from worker.service import OrderView, RefundView
from worker.store.records import TransitionRecord


def history_table(title: str, history: list[TransitionRecord]) -> Table:
    table = Table(title=title)
    for column in ("v", "at", "from", "to", "trigger", "source"):
        table.add_column(column)
    for h in history:
        table.add_row(str(h.version), h.at.strftime("%H:%M:%S.%f")[:-3], h.from_state or "", h.to_state, h.trigger,
                      h.source)
    return table


def render_order(view: OrderView, console: Console) -> None:
    o = view.order
    console.print(f"[bold]{o.out_trade_no}[/bold] {o.state} {o.amount} {o.currency} user={o.user_id} "
                  f"refunded={view.refunded}")
    console.print(history_table(f"order {o.out_trade_no}", view.history))
    for refund in view.refunds:
        render_refund(refund, console)


def render_refund(view: RefundView, console: Console) -> None:
    r = view.refund
    console.print(history_table(f"refund {r.out_refund_no} {r.amount} {r.currency}: {r.state}", view.history))
