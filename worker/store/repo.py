"""Reads and the few writes that are not state transitions (new records, tokens, poll times)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from statemachine import RefundCheck, RefundState, check_refund_request
from worker.gateway.money import to_minor
from worker.store.apply import Stale
from worker.store.records import OrderRecord, RefundRecord, TokenRecord, TransitionRecord
from worker.store.schema import orders, payment_tokens, refunds, transitions
from worker.store.upsert import insert_if_absent


def insert_order(conn: Connection, values: dict[str, Any]) -> int:
    values = {**values, "out_trade_no_key": values["out_trade_no"].upper(), "version": 1, "refund_seq": 0,
              "poll_count": 0}
    return int(conn.execute(orders.insert().values(**values)).inserted_primary_key[0])  # type: ignore[index]


def get_order(conn: Connection, order_id: int) -> OrderRecord | None:
    row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).first()
    return OrderRecord.from_row(row) if row else None


def find_order(conn: Connection, out_trade_no: str) -> OrderRecord | None:
    row = conn.execute(sa.select(orders).where(orders.c.out_trade_no_key == out_trade_no.upper())).first()
    return OrderRecord.from_row(row) if row else None


# Built once: constructing an ``IN`` expression per call cost more than running it (worker profile).
_FIND_ORDERS = sa.select(orders).where(orders.c.out_trade_no_key.in_(sa.bindparam("keys", expanding=True)))


def find_orders(conn: Connection, out_trade_nos: Iterable[str]) -> dict[str, OrderRecord]:
    """Many orders in one query, keyed by the upper-cased outTradeNo."""
    keys = sorted({n.upper() for n in out_trade_nos})
    if not keys:
        return {}
    rows = conn.execute(_FIND_ORDERS, {"keys": keys})
    return {r.out_trade_no_key: OrderRecord.from_row(r) for r in rows}


def get_refund(conn: Connection, refund_id: int) -> RefundRecord | None:
    row = conn.execute(sa.select(refunds).where(refunds.c.id == refund_id)).first()
    return RefundRecord.from_row(row) if row else None


def find_refund(conn: Connection, out_refund_no: str) -> RefundRecord | None:
    row = conn.execute(sa.select(refunds).where(refunds.c.out_refund_no == out_refund_no)).first()
    return RefundRecord.from_row(row) if row else None


def refunds_of(conn: Connection, order_id: int) -> list[RefundRecord]:
    query = sa.select(refunds).where(refunds.c.order_id == order_id).order_by(refunds.c.id)
    return [RefundRecord.from_row(r) for r in conn.execute(query)]


def refund_pairs(records: Iterable[RefundRecord]) -> list[tuple[RefundState, Decimal]]:
    return [(RefundState(r.state), r.amount) for r in records]


def insert_refund(conn: Connection, order: OrderRecord, *, out_refund_no: str, amount: Decimal, currency: str,
                  comments: str | None, now: datetime) -> tuple[int | None, RefundCheck]:
    """Create a refund if the money rules allow it, atomically against concurrent requests: (its id,
    the check), or (None, the check that refused it).

    The order's ``refund_seq`` is compare-and-set in the same transaction: two requests that
    both read the same refunds cannot both insert (the second matches no row and is ``Stale``).
    """
    check = check_refund_request(order_state=order.state, paid=order.amount, currency=order.currency,
                                 refunds=refund_pairs(refunds_of(conn, order.id)), amount=amount,
                                 refund_currency=currency)
    if not check.ok:
        return None, check
    return insert_refund_row(conn, order, out_refund_no=out_refund_no, amount=amount, currency=currency,
                             comments=comments, now=now, next_poll_at=now), check


def bump_refund_seq(conn: Connection, order: OrderRecord) -> None:
    """Compare-and-set the order's ``refund_seq`` as read (``Stale`` if it moved): every write that adds
    a refund, or puts one in progress, takes it, so two of them built on the same read cannot both commit."""
    bumped = conn.execute(orders.update().where(orders.c.id == order.id, orders.c.refund_seq == order.refund_seq)
                          .values(refund_seq=orders.c.refund_seq + 1)).rowcount
    if bumped != 1:
        raise Stale(f"order {order.id} refunds changed")


def insert_refund_row(conn: Connection, order: OrderRecord, *, out_refund_no: str, amount: Decimal, currency: str,
                      comments: str | None, now: datetime, next_poll_at: datetime | None) -> int:
    """Insert a CREATED refund after compare-and-setting the order's ``refund_seq`` (``Stale`` if it moved)."""
    bump_refund_seq(conn, order)
    return int(conn.execute(refunds.insert().values(
        out_refund_no=out_refund_no, order_id=order.id, state="CREATED", version=1,
        amount_minor=to_minor(amount, currency), currency=currency, comments=comments, created_at=now,
        updated_at=now, next_poll_at=next_poll_at, poll_count=0,
    )).inserted_primary_key[0])  # type: ignore[index]


def history(conn: Connection, entity: str, entity_id: int) -> list[TransitionRecord]:
    query = (sa.select(transitions).where(transitions.c.entity == entity, transitions.c.entity_id == entity_id)
             .order_by(transitions.c.version))
    return [TransitionRecord.from_row(r) for r in conn.execute(query)]


def schedule_poll(conn: Connection, table: sa.Table, record_id: int, at: datetime | None, *,
                  count_poll: bool = False, version: int | None = None) -> bool:
    """Set when the record is polled next. With ``version``, only if the record is still at the version
    its caller read (a record that moved on has had its next poll decided by whoever moved it)."""
    values: dict[str, Any] = {"next_poll_at": at}
    if count_poll:
        values["poll_count"] = table.c.poll_count + 1
    where = [table.c.id == record_id]
    if version is not None:
        where.append(table.c.version == version)
    return conn.execute(table.update().where(*where).values(**values)).rowcount == 1


def due_polls(conn: Connection, table: sa.Table, terminal: tuple[str, ...], *, now: datetime,
              limit: int) -> list[int]:
    """Records whose next poll is due: an index range scan on ``next_poll_at`` (O(due))."""
    query = (sa.select(table.c.id).where(table.c.next_poll_at <= now, table.c.state.not_in(terminal))
             .order_by(table.c.next_poll_at).limit(limit))
    return [int(r.id) for r in conn.execute(query)]


def save_token(conn: Connection, *, user_id: str, token_id: str, card_org: str | None, masked_card: str | None,
               source_order_id: int, now: datetime) -> int:
    """Keep a token once, whoever saves it first: ``INSERT ... ON CONFLICT DO NOTHING`` on its unique id, then
    read its row. Why not select-then-insert: two transactions could both miss it, and the second insert
    failed the whole transaction (on PostgreSQL it waits for the first, then now finds its row)."""
    insert_if_absent(conn, payment_tokens, {
        "user_id": user_id, "token_id": token_id, "token_hint": token_id[-4:], "status": "Activated",
        "card_org": card_org, "masked_card": masked_card, "source_order_id": source_order_id, "created_at": now,
        "updated_at": now,
    }, key="token_id")
    return int(conn.execute(sa.select(payment_tokens.c.id).where(payment_tokens.c.token_id == token_id)).scalar_one())


def tokens_of(conn: Connection, user_id: str) -> list[TokenRecord]:
    query = sa.select(payment_tokens).where(payment_tokens.c.user_id == user_id).order_by(payment_tokens.c.id)
    return [TokenRecord.from_row(r) for r in conn.execute(query)]


def get_token(conn: Connection, token_pk: int) -> TokenRecord | None:
    row = conn.execute(sa.select(payment_tokens).where(payment_tokens.c.id == token_pk)).first()
    return TokenRecord.from_row(row) if row else None


def find_token(conn: Connection, token_id: str) -> TokenRecord | None:
    row = conn.execute(sa.select(payment_tokens).where(payment_tokens.c.token_id == token_id)).first()
    return TokenRecord.from_row(row) if row else None


def set_token_status(conn: Connection, token_pk: int, status: str, now: datetime, **extra: Any) -> None:
    conn.execute(payment_tokens.update().where(payment_tokens.c.id == token_pk)
                 .values(status=status, updated_at=now, **extra))
