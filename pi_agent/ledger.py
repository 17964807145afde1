"""Tool calls across resends: never run a call twice, answer only the connection that asked.

A turn resent after a drop makes the model ask again for what it already asked
(with a new call id, on a new connection). Running the tool again would switch
a relay twice; sending a result to a connection that did not ask for it hangs
3.x sessions (docs/live-protocol.md, tool responses). So the agent keeps this
small ledger for the pending turn:

* every call id remembers the connection that asked and the call's key (name
  plus arguments);
* a key already run for this turn is answered with the result it got; a key
  still running collects the new id and all of them are answered when it ends;
* results are kept until the turn is safe (``new_turn``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def call_key(name: str, args: Any) -> str:
    return name + json.dumps(args, sort_keys=True, default=str)


@dataclass
class Asker:
    """Who to answer: the call id, the tool's name and the connection that asked."""

    id: str
    name: str
    session: Any
    key: str


@dataclass
class ToolLedger:
    _askers: dict[str, Asker] = field(default_factory=dict)  # id -> asker
    _results: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # key -> result
    _waiting: dict[str, list[str]] = field(default_factory=dict)  # key -> ids asked meanwhile

    def ask(self, session: Any, call_id: str, name: str, args: Any) -> tuple[str, Any]:
        """Record a call and say what to do: ``run``, ``answer`` (with the result) or ``wait``."""
        key = call_key(name, args)
        self._askers[call_id] = Asker(call_id, name, session, key)
        if key in self._results:
            result = self._results[key]
            if result is not None:
                return "answer", result
            self._waiting.setdefault(key, []).append(call_id)
            return "wait", None
        self._results[key] = None  # running
        return "run", None

    def finished(self, call_id: str, result: dict[str, Any], *, more: bool = False) -> list[Asker]:
        """A call's result: every asker to answer with it (the caller checks the connection).

        ``more``: a first report (``willContinue``); the asker stays for the final one.
        """
        if more:
            asker = self._askers.get(call_id)
            return [asker] if asker is not None else []
        asker = self._askers.pop(call_id, None)
        if asker is None:
            return []
        self._results[asker.key] = result
        out = [asker]
        for other in self._waiting.pop(asker.key, []):
            waiting = self._askers.pop(other, None)
            if waiting is not None:
                out.append(waiting)
        return out

    def answered(self, call_id: str) -> Asker | None:
        """Forget an id answered from memory (``ask`` returned ``answer``)."""
        return self._askers.pop(call_id, None)

    def cancel(self, ids: Iterable[str]) -> None:
        """The server cancelled these calls: nobody waits for their answers any more."""
        for call_id in ids:
            asker = self._askers.pop(call_id, None)
            if asker is not None and self._results.get(asker.key, 0) is None:
                if not self._waiting.get(asker.key):
                    self._results.pop(asker.key, None)

    def name_of(self, call_id: str) -> str | None:
        asker = self._askers.get(call_id)
        return asker.name if asker is not None else None

    def new_turn(self) -> None:
        """The pending turn is safe or dropped: its results are no longer needed."""
        self._results = {k: v for k, v in self._results.items() if v is None}
        self._waiting.clear()

    @property
    def running(self) -> int:
        return sum(1 for v in self._results.values() if v is None)
