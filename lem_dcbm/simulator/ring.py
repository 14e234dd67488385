"""The meter's transaction memory: a ring of records, the oldest overwritten.

The LEM manual (7.2 to 7.8) gives the meter 20 399 transaction slots; transaction number
``n`` (its ``paginationCounter``, from 1) lives in slot ``(n - 1) % capacity`` until a
later one overwrites it. ``GET /ocmf?transactionId=ID`` searches only the last
``window`` (840) transactions; by slot (``GET /ocmf/{index}``) every stored one answers.

A meter can start with a history (``prefilled`` transactions made before): those are
made on demand by ``make_history``, so a full ring costs nothing until it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

#: Transaction slots of a LEM DCBM (operation manual).
RING_CAPACITY = 20_399
#: How far back ``GET /ocmf?transactionId=ID`` searches (operation manual).
LOOKUP_WINDOW = 840


class TransactionRing(Generic[T]):
    """Slots of transactions; ``make_history(pagination, index)`` makes prefilled ones."""

    def __init__(
        self,
        capacity: int,
        window: int,
        *,
        prefilled: int = 0,
        make_history: Callable[[int, int], T] | None = None,
    ) -> None:
        if capacity < 1 or window < 1 or prefilled < 0:
            raise ValueError("capacity and window must be positive, prefilled not negative")
        if prefilled and make_history is None:
            raise ValueError("a prefilled ring needs make_history")
        self.capacity = capacity
        self.window = window
        #: Transactions ever made (the latest one's pagination counter).
        self.count = prefilled
        self._prefilled = prefilled
        self._make = make_history
        self._slots: dict[int, T] = {}

    @property
    def stored(self) -> int:
        """Transactions the ring holds now."""
        return min(self.count, self.capacity)

    @property
    def next_index(self) -> int:
        """The slot the next transaction takes (overwriting its record when full)."""
        return self.count % self.capacity

    @property
    def last_index(self) -> int:
        """The slot of the latest transaction (0 when there is none)."""
        return (self.count - 1) % self.capacity if self.count else 0

    def add(self, transaction: T) -> int:
        """Store the next transaction; return its slot."""
        index = self.next_index
        self._slots[index] = transaction
        self.count += 1
        return index

    def pagination_at(self, index: int) -> int | None:
        """The pagination counter of the transaction in slot ``index``, None if empty."""
        if not 0 <= index < self.capacity or self.count == 0:
            return None
        pagination = self.count - (self.last_index - index) % self.capacity
        return pagination if pagination >= 1 else None

    def at(self, index: int) -> T | None:
        """The transaction in slot ``index``, None when the slot is empty."""
        pagination = self.pagination_at(index)
        if pagination is None:
            return None
        found = self._slots.get(index)
        if found is None and pagination <= self._prefilled and self._make is not None:
            found = self._make(pagination, index)
            self._slots[index] = found
        return found

    def latest(self) -> T | None:
        """The latest transaction, None before the first."""
        return self.at(self.last_index) if self.count else None

    def back(self, steps: int) -> T | None:
        """The transaction ``steps`` back from the latest (1: the latest)."""
        if not 1 <= steps <= self.stored:
            return None
        return self.at((self.count - steps) % self.capacity)

    def searched(self) -> Iterator[T]:
        """The transactions a lookup by id searches, latest first."""
        for steps in range(1, min(self.stored, self.window) + 1):
            found = self.back(steps)
            if found is not None:
                yield found

    def made_here(self) -> list[T]:
        """Stored transactions made since power-on of the simulation (not history), oldest first."""
        first = max(self._prefilled, self.count - self.capacity) + 1
        made = (self._slots.get((p - 1) % self.capacity) for p in range(first, self.count + 1))
        return [t for t in made if t is not None]
