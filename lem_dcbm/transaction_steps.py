"""The steps of a transaction and which may follow which: written once, read by all.

The journal writes a step's value to disk (``"start_confirmed"``, ...): the values are
the on-disk format and never change. The controller and the record book name steps by
this enum; the journal refuses a step that may not follow the ones a transaction passed.

A step may be recorded again (that only adds facts: a repeated start, a resumed one, a
deferred stop). A new step moves forward only, and may skip steps: each skip in
``TRANSITIONS`` is a road the module really takes, named beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

from lem_dcbm.errors import LemDcbmError


class Step(str, Enum):
    """One step of a transaction; the value is what the journal writes."""

    START_REQUESTED = "start_requested"
    START_CONFIRMED = "start_confirmed"
    STOP_REQUESTED = "stop_requested"
    STOP_CONFIRMED = "stop_confirmed"
    OCMF_FETCHED = "ocmf_fetched"

    def __str__(self) -> str:
        return self.value

    # Equal to its value, so hashed like it: a set of steps read back as text still matches.
    __hash__ = str.__hash__


#: Every step, in the order they normally happen.
STEPS: tuple[Step, ...] = tuple(Step)

#: The new steps that may follow a transaction's furthest step (None: it has none yet).
TRANSITIONS: Mapping[Step | None, frozenset[Step]] = {
    # A start; a stop of a transaction the book never saw (a dangling one, stopped before
    # a start); a record the meter holds for an id the book never saw (``stop`` of it);
    # a start confirmed whose request the book lost (the meter already runs it).
    None: frozenset(Step),
    Step.START_REQUESTED: frozenset(
        {
            Step.START_CONFIRMED,
            # Started before a restart, stopped or refused while away: the record settles.
            Step.STOP_REQUESTED,
            Step.STOP_CONFIRMED,
            Step.OCMF_FETCHED,
        }
    ),
    Step.START_CONFIRMED: frozenset(
        {
            Step.STOP_REQUESTED,
            # Found stopped at start-up: the meter stopped it while the module was away.
            Step.STOP_CONFIRMED,
            Step.OCMF_FETCHED,
        }
    ),
    Step.STOP_REQUESTED: frozenset({Step.STOP_CONFIRMED, Step.OCMF_FETCHED}),
    Step.STOP_CONFIRMED: frozenset({Step.OCMF_FETCHED}),
    Step.OCMF_FETCHED: frozenset(),
}


class UnknownStep(LemDcbmError, ValueError):
    """A name that is no step of a transaction."""


class IllegalStep(LemDcbmError, ValueError):
    """A step that may not follow the steps a transaction passed."""


def as_step(name: str) -> Step:
    """The step named ``name``; ``UnknownStep`` when there is none."""
    try:
        return Step(name)
    except ValueError:
        raise UnknownStep(
            f"unknown journal step {name!r}; expected one of {[s.value for s in STEPS]}"
        ) from None


def furthest(passed: Iterable[str]) -> Step | None:
    """The furthest step of ``passed`` in the normal order (None when it is empty)."""
    known = [as_step(name) for name in passed]
    return max(known, key=STEPS.index, default=None)


def check_next(passed: Iterable[str], step: str) -> Step:
    """``step`` as a ``Step`` if it may be recorded after ``passed``; ``IllegalStep`` if not."""
    new = as_step(step)
    done = tuple(passed)
    if new in done:
        return new  # recorded again: facts only
    last = furthest(done)
    if new not in TRANSITIONS[last]:
        raise IllegalStep(
            f"step {new.value} may not follow {last.value if last else 'nothing'} "
            f"(steps passed: {', '.join(done) or 'none'})"
        )
    return new
