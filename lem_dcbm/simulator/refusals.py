"""Why the simulated meter refuses a request; the server turns each into an HTTP answer."""

from __future__ import annotations

from lem_dcbm.errors import LemDcbmError
from lem_dcbm.json_types import JsonObject


class Refusal(LemDcbmError):
    """A request the meter does not carry out; ``status`` and ``body`` form the answer."""

    status = 400

    def __init__(self, message: str, **detail: str) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    @property
    def body(self) -> JsonObject:
        """The JSON body of the answer: ``{"error": message, **detail}``."""
        return {"error": self.message, **self.detail}


class FieldError(Refusal):
    """A request field breaks a limit or has the wrong type: 400 naming the ``field``."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)
        self.field = field


class ConditionError(Refusal):
    """The meter's state forbids the request (a start precondition, the minimum duration): 409."""

    status = 409

    def __init__(self, condition: str, message: str) -> None:
        super().__init__(message, condition=condition)
        self.condition = condition


class NotFound(Refusal):
    """Nothing is stored under the asked key: 404."""

    status = 404
