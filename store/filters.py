"""The WHERE clause of a list's statement, naming only the filters a request gives.

One statement for every combination (``$1 IS NULL OR status = $1`` and so on) is planned, from its sixth
execution on a connection, once for any arguments (PostgreSQL's generic plan), and that plan can use no index
on a filter it may have to ignore: listing one customer's orders, or the FAILED sagas, would walk the whole
table in creation order or read and sort all of it (docs/benchmarks.md, twenty-second round). With a statement per combination of the filters
given, a filter with an index of its own can use it in any plan the server keeps."""

from __future__ import annotations


class Where:
    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.arguments: list[object] = []

    def given(self, condition: str, value: object) -> Where:
        """The condition when its filter is given (``value`` not None), its ``{}`` the value's place, or the
        places of a tuple's values in order. The condition is SQL written in the code, never text from a
        request: what a request gives goes in ``value``."""
        if value is not None:
            values = value if isinstance(value, tuple) else (value,)
            first = len(self.arguments) + 1
            self.conditions.append(condition.format(*(f"${n}" for n in range(first, first + len(values)))))
            self.arguments.extend(values)
        return self

    def clause(self) -> str:
        return f"WHERE {' AND '.join(self.conditions)}" if self.conditions else ""

    def then(self, value: object) -> str:
        """The place of one more argument after the conditions' (a LIMIT's)."""
        self.arguments.append(value)
        return f"${len(self.arguments)}"
