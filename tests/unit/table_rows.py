"""A transition table's reading rule, written out apart from the engine, for the machine tests.

The order and refund tests check ``decide``/``decide_refund`` row by row against this oracle:
for a trigger, a state and a source, the first row from the top that matches is the one that fires.
"""

from __future__ import annotations

from collections.abc import Sequence

from statemachine.common import Row, S, Source


def first_row(table: Sequence[Row[S]], trigger: str, state: S, source: Source) -> Row[S]:
    """The row the table's top-to-bottom rule picks."""
    return next(r for r in table if r.trigger == trigger and state in r.sources and r.via in (None, source))


def reachable(table: Sequence[Row[S]]) -> list[tuple[int, S, Source]]:
    """Every (row, state, source) where the row is the one that fires."""
    cases: list[tuple[int, S, Source]] = []
    for index, row in enumerate(table):
        source = row.via or Source.POLL
        cases.extend((index, s, source) for s in row.sources if first_row(table, row.trigger, s, source) is row)
    return cases
