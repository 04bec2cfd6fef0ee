"""The table runner: first matching row wins, source conditions, and a gap in a table is loud."""

from __future__ import annotations

from enum import StrEnum

import pytest
from transitions import MachineError

from statemachine.common import Outcome, Row, Source
from statemachine.engine import Table


class Light(StrEnum):
    """A two-state toy."""

    OFF = "OFF"
    ON = "ON"


TOY = Table(
    "toy",
    Light,
    (
        Row("flip", (Light.OFF,), Light.ON, Outcome.APPLIED),
        Row("flip", (Light.OFF,), None, Outcome.NOOP),
        Row("poke", (Light.ON,), None, Outcome.CONFIRM, via=Source.NOTIFICATION),
        Row("poke", (Light.ON,), None, Outcome.ANOMALY),
        Row("only_notified", (Light.ON,), None, Outcome.NOOP, via=Source.NOTIFICATION),
    ),
)


def test_the_first_matching_row_fires() -> None:
    """Rows are read top to bottom; a later row for the same case never fires."""
    row, state = TOY.fire(Light.OFF, "flip")
    assert (row.outcome, state) == (Outcome.APPLIED, Light.ON)


@pytest.mark.parametrize(
    ("source", "outcome"), [(Source.NOTIFICATION, Outcome.CONFIRM), (Source.POLL, Outcome.ANOMALY)]
)
def test_a_via_row_matches_only_its_source(source: Source, outcome: Outcome) -> None:
    """A row with ``via`` is skipped for facts from elsewhere."""
    row, state = TOY.fire(Light.ON, "poke", source)
    assert (row.outcome, state) == (outcome, Light.ON)


def test_a_trigger_undefined_for_the_state_raises() -> None:
    """ignore_invalid_triggers=False: a gap in the table is a bug, not a silent no-op."""
    with pytest.raises(MachineError):
        TOY.fire(Light.ON, "flip")


def test_no_matching_row_raises() -> None:
    """When every row's condition fails the table has a gap."""
    with pytest.raises(LookupError):
        TOY.fire(Light.ON, "only_notified", Source.POLL)


def test_edges_and_triggers() -> None:
    """The table lists its moving edges and its trigger names."""
    assert TOY.edges == {(Light.OFF, Light.ON)}
    assert TOY.triggers == {"flip", "poke", "only_notified"}
