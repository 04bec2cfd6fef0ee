"""Signed payment notifications, made before the clock starts, and the order they are sent in.

Why sign up front: RSA-2048 signing costs about 1 ms per body (≈1,100/s per core), as much as
the receiver spends on a request; signing during the load would measure the signer. Bodies are
signed once, in a process pool across every core, before any process of the stack starts.

Why a plan with duplicates spread through it: Checus re-sends notifications, and a re-send of a
notification the receiver already acknowledged should take the cheap path. A duplicate repeats
a notification sent at least ``lag`` requests earlier (a few times the concurrency), so it has
almost surely been acknowledged by the time it is sent. ``duplicates`` is the share of all
requests that are duplicates: 0.2 with 20,000 notifications means 5,000 extra requests.
"""

from __future__ import annotations

import io
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO

from worker.devtools.bench.seed import AMOUNT_MINOR, CURRENCY
from worker.devtools.bench.stack import APP_ID, MERCHANT_NO
from worker.gateway.signing import Signer
from worker.gateway.wire import dumps, format_time, format_utc

IN_PROCESS_BELOW = 1_500  # a spawned pool costs ~0.5 s to start: not worth it for small runs
SIGN_LINE = 345  # an RSA-2048 signature is 344 Base64 characters, plus the newline


def notification_body(out_trade_no: str, now: datetime) -> bytes:
    """A SUCCESS payment notification for a seeded order, in the envelope Checus sends."""
    return dumps({
        "code": "APPLY_SUCCESS", "msg": "", "keyVersion": "1", "appId": APP_ID, "merchantNo": MERCHANT_NO,
        "notifyTime": format_time(now), "notifyType": "PAYMENT",
        "data": {"outTradeNo": out_trade_no, "tradeToken": f"TT{out_trade_no}",
                 "totalAmount": Decimal(AMOUNT_MINOR).scaleb(-2), "currency": CURRENCY, "country": "US",
                 "status": "SUCCESS", "completeTime": format_utc(now), "paymentDetails": []},
    })


def _sign_lines(private_key: str, bodies: Iterable[bytes], out: IO[bytes]) -> None:
    signer = Signer.from_value(private_key, setting="bench platform key")
    for i, body in enumerate(bodies, 1):
        out.write(signer.sign(body).encode("ascii") + b"\n")
        if i % 100 == 0:
            out.flush()


def sign_all(private_key: str, bodies: Sequence[bytes], *, processes: int, work_dir: Path,
             on_progress: Callable[[int], None] | None = None) -> list[str]:
    """The ``sign`` header of every body, in order, signed by ``processes`` child processes.

    Children are plain ``python -m worker.devtools.bench.payloads`` processes, not a multiprocessing pool:
    a pool would fork a process that runs threads, or re-import the ``__main__`` of whatever
    started the bench (``python -m worker`` runs the CLI at import).
    """
    if len(bodies) < IN_PROCESS_BELOW or processes <= 1:
        buffer = io.BytesIO()
        _sign_lines(private_key, bodies, buffer)
        if on_progress is not None:
            on_progress(len(bodies))
        return buffer.getvalue().decode("ascii").split()
    work_dir.mkdir(parents=True, exist_ok=True)
    size = -(-len(bodies) // processes)
    children = []
    for k in range(processes):
        source, target = work_dir / f"sign-{k}.in", work_dir / f"sign-{k}.out"
        source.write_bytes(b"".join(body + b"\n" for body in bodies[k * size:(k + 1) * size]))
        child = subprocess.Popen([sys.executable, "-m", "worker.devtools.bench.payloads", str(source), str(target)],  # noqa: S603
                                 stdin=subprocess.PIPE)
        assert child.stdin is not None
        child.stdin.write(private_key.encode("ascii"))
        child.stdin.close()
        children.append((child, target))
    try:
        while any(child.poll() is None for child, _ in children):
            if on_progress is not None:
                on_progress(sum(t.stat().st_size // SIGN_LINE for _, t in children if t.exists()))
            time.sleep(0.2)
    finally:
        for child, _ in children:
            if child.poll() is None:
                child.kill()
            child.wait()
    if any(child.returncode for child, _ in children):
        raise RuntimeError("a signing process failed")
    signs = [line for _, target in children for line in target.read_text("ascii").split()]
    if len(signs) != len(bodies):
        raise RuntimeError(f"signed {len(signs)} of {len(bodies)} bodies")
    if on_progress is not None:
        on_progress(len(signs))
    return signs


@dataclass(frozen=True, slots=True)
class Planned:
    seq: int  # position in the plan (wrk reports it back with each ack)
    order: int  # index of the notification (and of its order) in the run's bodies
    duplicate: bool


def plan_requests(orders: Sequence[int], *, duplicates: float, lag: int, rng: random.Random) -> list[Planned]:
    """Each notification once, in order, with ``duplicates`` (a share of all requests) re-sends mixed in."""
    if not orders:
        return []
    extra = round(len(orders) * duplicates / (1 - duplicates)) if duplicates > 0 else 0
    lag = max(0, min(lag, len(orders) // 2))
    positions = sorted(rng.choices(range(lag, len(orders)), k=extra)) if extra else []
    plan: list[Planned] = []
    p = 0
    for k, order in enumerate(orders):
        plan.append(Planned(len(plan), order, False))
        while p < len(positions) and positions[p] == k:
            plan.append(Planned(len(plan), orders[rng.randrange(0, k - lag + 1)], True))
            p += 1
    return plan


def resend_plan(orders: Sequence[int]) -> list[Planned]:
    """Every request a duplicate (the duplicate-cost phase)."""
    return [Planned(i, order, True) for i, order in enumerate(orders)]


def _main(argv: list[str]) -> None:
    """``python -m worker.devtools.bench.payloads IN OUT``: the private key on stdin, one body per line in IN."""
    private_key = sys.stdin.read().strip()
    with open(argv[0], "rb") as source, open(argv[1], "wb") as out:
        _sign_lines(private_key, (line.rstrip(b"\n") for line in source), out)


if __name__ == "__main__":
    _main(sys.argv[1:])
