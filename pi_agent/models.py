"""What each Live model accepts and does with tools: the one table both the agent and the fake use.

A field a model does not know closes the session with 1007 (docs/live-protocol.md), so
``behavior`` in function declarations and ``scheduling``/``willContinue`` in function
responses are sent only to the models listed here as taking them. An unknown model gets
none of them: it then behaves as its own default says, but the session stays up.

Sources: the model pages and the 2.5 to 3.8 migration guide (docs/live-protocol.md,
"Setup per model" and "Tools"), and python-genai's ``types.FunctionDeclaration.behavior``,
``types.FunctionResponse.scheduling``/``will_continue`` ("only applicable to NON_BLOCKING
function calls"). Google documents NON_BLOCKING for the 2.5 native-audio models as well;
pi-agent has not verified it there, so it sends those fields to the 3.8 models only (the
fake does not refuse them on 2.5 either).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BEHAVIORS = ("BLOCKING", "NON_BLOCKING")
SCHEDULINGS = ("SILENT", "WHEN_IDLE", "INTERRUPT")


@dataclass(frozen=True)
class ModelCaps:
    """How one model treats function calls."""

    non_blocking: bool = False
    """Takes ``behavior`` in declarations and ``scheduling``/``willContinue`` in responses."""
    default_non_blocking: bool = False
    """A function declared without ``behavior`` is NON_BLOCKING (3.8)."""
    refuses_non_blocking: bool = False
    """A NON_BLOCKING declaration closes the session with 1007 (3.1: synchronous calls only)."""
    interaction_status: bool = False
    """``turnComplete`` carries ``interactionStatus`` (IN_PROGRESS while work goes on, IDLE)."""
    recalls_uninformative: int = 0
    """Calls a tool again this many times when its result has no status or reason (3.8)."""


_3_8 = ModelCaps(non_blocking=True, default_non_blocking=True, recalls_uninformative=2)

MODELS: dict[str, ModelCaps] = {
    "gemini-3.8-live": _3_8,
    "gemini-3.8-live-extended-thinking": dataclasses.replace(_3_8, interaction_status=True),
    "gemini-3.1-flash-live-preview": ModelCaps(refuses_non_blocking=True),
    "gemini-2.5-flash-native-audio-preview-12-2025": ModelCaps(),
    "gemini-2.5-flash-native-audio-preview-09-2025": ModelCaps(),
}
"""The models docs/live-protocol.md documents, and what each accepts."""

UNKNOWN = ModelCaps()


def capabilities(model: str | None) -> ModelCaps:
    """The table's row for ``model`` (with or without ``models/``); an unknown model: none."""
    if not model:
        return UNKNOWN
    return MODELS.get(model.removeprefix("models/"), UNKNOWN)


def response_fields(model: str | None, response: Mapping[str, Any]) -> dict[str, Any]:
    """The ``scheduling``/``willContinue`` to send beside a result, if ``model`` takes them.

    ``response`` is what the tool runner reported (``behavior``, ``scheduling``,
    ``willContinue`` next to the result); both fields only mean something for a
    NON_BLOCKING call, so a BLOCKING one (or a model without NON_BLOCKING) gets none.
    """
    if not capabilities(model).non_blocking or response.get("behavior") != "NON_BLOCKING":
        return {}
    out: dict[str, Any] = {}
    if response.get("scheduling") in SCHEDULINGS:
        out["scheduling"] = response["scheduling"]
    if response.get("willContinue"):
        out["willContinue"] = True
    return out


def informative(result: Any) -> bool:
    """True if a result says whether it worked and, if not, why and whether to retry.

    The shape of pi_agent.tools (``status``; errors with ``reason`` and ``retryable``).
    3.8 is reported to call a tool again when a result lacks these.
    """
    if not isinstance(result, Mapping) or "status" not in result:
        return False
    return result["status"] != "error" or ("reason" in result and "retryable" in result)


__all__ = [
    "BEHAVIORS",
    "MODELS",
    "SCHEDULINGS",
    "ModelCaps",
    "capabilities",
    "informative",
    "response_fields",
]
