"""Tools the model may call: YAML -> functionDeclarations -> validated GPIO verbs.

A tool is one device and one verb from an allow-list, so the model can never
name a Python attribute, a pin outside the config or a value outside the
tool's bounds (which only narrow the device's; the device layer enforces those
at the pin, see bounds.py). :class:`ToolBox` owns the declarations and argument checks
(built from :mod:`pi_agent.declarations`);
:class:`ToolRunner` runs calls on the ``pi-agent-tools`` thread with a time
limit, a per-tool rate limit, auto-off timers and cancellation/undo, and
always answers with a FunctionResponse (an error one rather than a crash).

Every result has one shape (the one :mod:`pi_agent.timers` uses, so the model
reads all tools alike and knows at once whether calling again could help;
3.8 calls a tool again when it cannot tell)::

    {"status": "ok", "device": "lamp", "on": true}        # the device's new state
    {"status": "ok", "device": "strip", "blinking": true, "count": 3, "duration_s": 3.0, ...}
    {"status": "error",
     "reason": "argument 'value' of dim is 0.9, outside the allowed 0 (off) or 0.1 to 0.8",
     "retryable": false,              # true only when the SAME call may succeed later
     "allowed_range": {"min": 0.1, "max": 0.8},        # a number: from the schema/bounds
     "valid_options": [true, false],  # one of a set: tools, argument names, booleans
     "retry_after_s": 42,             # rate limits (retryable)
     "hint": "0 switches it off"}     # optional

Behaviour (``tools[].behavior``/``scheduling``): instant verbs are BLOCKING
(the model waits a few ms); blink and pulse are NON_BLOCKING (it talks on). A
NON_BLOCKING result carries its ``scheduling`` (an error is never SILENT), and
a blink or pulse reports twice: ``willContinue`` with SILENT when it starts,
the final result with the tool's scheduling when it has finished. Which of
these fields a model takes is :mod:`pi_agent.models`' business; the runner
reports them all beside the result.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .config import ToolSettings
from .declarations import (
    SCHEMA_KEYS,
    Param,
    Refused,
    Tool,
    check_declaration,
    check_schema,
    error_from,
    params_for,
)
from .devices import Devices
from .errors import ClosedError, ConfigError, ToolError
from .models import capabilities
from .threads import Worker, call_logged
from .timers import error_result, ok_result

log = logging.getLogger(__name__)

BUILTIN_TIMEOUT_S = 10.0
FINISH_MARGIN_S = 0.05  # a blink's final report waits this much past its nominal end


@dataclass
class _Builtin:
    declaration: dict[str, Any]  # without ``behavior``: that is sent per model
    handler: Callable[[dict], dict]
    timeout_s: float
    behavior: str = "BLOCKING"


class ToolBox:
    """The model's tools: YAML tools on devices plus built-ins (e.g. the camera's ``look``).

    Not thread-safe by itself: :class:`ToolRunner` serialises every device
    action on its own lock.
    """

    def __init__(self, tools: Iterable[ToolSettings], devices: Devices):
        self.devices = devices
        self._tools: dict[str, Tool] = {}
        self._builtins: dict[str, _Builtin] = {}
        problems = []
        for t in tools:
            if t.device not in devices:
                problems.append(f"tool {t.name!r}: no device named {t.device!r}")
                continue
            settings = devices.settings(t.device)
            if t.name in self._tools:
                problems.append(f"tool {t.name!r} is declared twice")
                continue
            span = devices.bounds(t.device)
            if span is not None:
                span = span.narrow(t.min, t.max)
            tool = Tool(t, settings.kind, params_for(t, span, settings.description))
            try:
                check_declaration(tool.declaration())
            except ValueError as exc:
                problems.append(f"tool {t.name!r}: {exc}")
                continue
            self._tools[t.name] = tool
        if problems:
            raise ConfigError(problems)

    # -- declarations

    @property
    def names(self) -> list[str]:
        return [*self._tools, *self._builtins]

    def tool(self, name: str) -> Tool:
        return self._tools[name]

    def function_declarations(self, model: str | None = None) -> list[dict]:
        """What goes into ``setup.tools[0].functionDeclarations`` for ``model``.

        ``behavior`` is declared only to a model that takes it (pi_agent.models);
        3.8 treats a function without it as NON_BLOCKING, so there every tool
        says which it is.
        """
        out = [t.declaration() for t in self._tools.values()]
        out += [dict(b.declaration) for b in self._builtins.values()]
        if capabilities(model).non_blocking:
            for decl in out:
                decl["behavior"] = self.behavior(decl["name"])
        return out

    def behavior(self, name: str) -> str:
        """BLOCKING or NON_BLOCKING (an unknown name: BLOCKING)."""
        if name in self._builtins:
            return self._builtins[name].behavior
        tool = self._tools.get(name)
        return tool.behavior if tool is not None else "BLOCKING"

    def scheduling(self, name: str) -> str:
        """SILENT, WHEN_IDLE or INTERRUPT: how a NON_BLOCKING result enters the conversation."""
        tool = self._tools.get(name)
        return tool.settings.scheduling.upper() if tool is not None else "WHEN_IDLE"

    def add_builtin(
        self,
        declaration: dict,
        handler: Callable[[dict], dict],
        *,
        timeout_s: float = BUILTIN_TIMEOUT_S,
    ) -> None:
        """Register a Python tool; ``handler(args)`` checks its own args.

        It returns a result in the shape above (``{"status": ...}``, passed
        through), or the older ``{"result": ...}`` / ``{"error": ...}`` or a bare
        dict, which are put into that shape; it may raise to report an error.
        A ``behavior`` in the declaration is kept (default BLOCKING) and sent to
        the models that take it.
        """
        check_declaration(declaration)
        name = declaration["name"]
        if name in self._tools or name in self._builtins:
            raise ValueError(f"a tool named {name!r} already exists")
        decl = dict(declaration)
        behavior = decl.pop("behavior", "BLOCKING")
        self._builtins[name] = _Builtin(decl, handler, timeout_s, behavior)

    def is_builtin(self, name: str) -> bool:
        return name in self._builtins

    def timeout_s(self, name: str) -> float:
        if name in self._builtins:
            return self._builtins[name].timeout_s
        return self._tools[name].settings.timeout_s

    def auto_off_s(self, device: str) -> float | None:
        """Shortest ``auto_off_s`` of any tool on ``device``: it guards the device, not a tool."""
        values = [
            t.settings.auto_off_s
            for t in self._tools.values()
            if t.device == device and t.settings.auto_off_s is not None
        ]
        return min(values) if values else None

    # -- validation and execution

    def validate(self, name: str, args: Any) -> dict[str, Any]:
        """Checked, typed, defaulted args; ToolError says exactly what is allowed."""
        if name in self._builtins:
            if args is not None and not isinstance(args, dict):
                raise Refused(f"the arguments of {name} must be an object")
            return dict(args or {})
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self.names) or "none"
            raise Refused(
                f"unknown tool {name!r}; available tools: {known}", valid_options=self.names
            )
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise Refused(
                f"the arguments of {name} must be an object; {tool.signature()}",
                hint=tool.signature(),
            )
        allowed = [p.name for p in tool.params]
        extra = sorted(set(args) - set(allowed))
        if extra:
            raise Refused(
                f"unexpected argument {extra[0]!r} for {name}; {tool.signature()}",
                valid_options=allowed,
            )
        out: dict[str, Any] = {}
        for p in tool.params:
            if p.name not in args or args[p.name] is None:
                if p.required:
                    raise Refused(
                        f"missing argument {p.name!r} for {name}; {tool.signature()}",
                        hint=tool.signature(),
                    )
                out[p.name] = p.default
            else:
                out[p.name] = p.check(name, args[p.name])
        if tool.verb in ("blink", "pulse"):
            total = out["count"] * out["period_s"]
            limit = tool.settings.max_duration_s
            if total > limit + 1e-9:
                raise Refused(
                    f"count × period_s = {out['count']} × {out['period_s']:g} s = {total:g} s is "
                    f"longer than the {limit:g} s {name} allows",
                    allowed_range={"min": 0, "max": limit, "unit": "seconds"},
                    hint="ask for fewer times or a shorter period_s",
                )
        return out

    def execute(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Perform a validated call on its device and return the result object.

        The device layer (:meth:`Devices.apply`) does the work and enforces the
        device's bounds, narrowed by the tool's min/max; the result names the
        device and carries its new state, and a blink or pulse (on gpiozero's
        background thread) reports how long it will take.
        """
        tool = self._tools[name]
        s = tool.settings
        state = self.devices.apply(tool.device, tool.verb, args, limit=(s.min, s.max))
        return ok_result(device=tool.device, **state)

    def rate_limit_per_min(self, device: str) -> int | None:
        """Tightest ``rate_limit_per_min`` of any tool on ``device`` (None: no limit)."""
        values = [
            t.settings.rate_limit_per_min
            for t in self._tools.values()
            if t.device == device and t.settings.rate_limit_per_min is not None
        ]
        return min(values) if values else None

    def run_builtin(self, name: str, args: Any) -> dict[str, Any]:
        """Call a built-in handler and put its answer into the one result shape."""
        answer = self._builtins[name].handler(args)
        if isinstance(answer, dict) and set(answer) == {"result"}:
            answer = answer["result"]  # parts.py wraps the timers' results
            if not isinstance(answer, dict):
                return ok_result(value=answer)
        elif isinstance(answer, dict) and set(answer) == {"error"}:
            return error_result(str(answer["error"]))
        if not isinstance(answer, dict):
            return ok_result(value=answer)
        if "status" in answer:
            return answer
        return ok_result(**answer)


# --------------------------------------------------------------------------- runner

_NOTHING = object()


@dataclass(eq=False)
class _Call:
    id: str
    name: str
    args: Any
    cancelled: bool = False
    responded: bool = False
    device: str | None = None
    before: Any = _NOTHING  # snapshot for undo
    undo: bool = False
    generation: int = -1  # the device's change count right after this call
    background_until: float | None = None  # a blink/pulse ends then (time.monotonic)
    continues: bool = False  # its final result is still to be reported (willContinue)


class ToolRunner(Worker):
    """Runs tool calls one at a time on the ``pi-agent-tools`` thread.

    ``submit`` and ``cancel`` are called from the agent thread and never
    block. Each call executes in a short-lived helper thread that the tool
    thread waits on for at most the tool's ``timeout_s``, so a hung handler
    (a camera, say) costs an error response, not the runner. ``on_response``
    gets exactly one FunctionResponse per call that was not cancelled, on the
    tool thread (a NON_BLOCKING blink or pulse: one with ``willContinue`` when
    it starts and the final one when it has finished, unless cancelled). Every
    device action, auto-off and undo holds one lock, so they never interleave.

    What ``on_response`` gets: ``{"id", "name", "response": <result>,
    "behavior": "BLOCKING" | "NON_BLOCKING"}``, plus ``"scheduling"`` for a
    NON_BLOCKING call and ``"willContinue": True`` on a first report.

    Auto-off is a timer per device (the shortest ``auto_off_s`` of its tools),
    restarted by every call that leaves the device on; it fires whether or not
    a session exists. ``stop()`` switches those devices off before it
    cancels their timers.
    """

    name = "pi-agent-tools"

    def __init__(
        self,
        toolbox: ToolBox,
        on_response: Callable[[dict], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        history: int = 32,
    ):
        super().__init__()
        self.toolbox = toolbox
        self.devices = toolbox.devices
        self._on_response = on_response
        self._clock = clock
        self._history = history
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()  # bookkeeping below
        self._gpio = threading.RLock()  # every device action
        self._queued: dict[str, _Call] = {}
        self._running: _Call | None = None
        self._done: OrderedDict[str, _Call] = OrderedDict()
        self._rates: dict[str, deque[float]] = {}
        self._generation: dict[str, int] = {}
        self._auto_off: dict[str, threading.Timer] = {}
        self._finishing: dict[str, threading.Timer] = {}  # call id -> its final report
        self._closed = False

    # -- agent thread

    @property
    def busy(self) -> bool:
        """True while a call is queued or running."""
        with self._lock:
            return bool(self._queued) or self._running is not None

    def submit(self, call_id: str, name: str, args: dict) -> None:
        """Queue one function call; its response comes later through ``on_response``."""
        call = _Call(str(call_id), str(name), args)
        with self._lock:
            if self._closed:
                raise ClosedError("the tool runner is stopped")
            self._queued[call.id] = call
        self._jobs.put(("call", call))

    def cancel(self, ids: list[str]) -> list[str]:
        """Handle ``toolCallCancellation``: return the ids acted on.

        A queued or running call is dropped and its response is never sent. A
        finished call that is still blinking is stopped, and one whose tool
        declares ``undo`` has its device restored (only if nothing changed
        the device since). Unknown ids are ignored.
        """
        acted: list[str] = []
        reverts: list[_Call] = []
        now = time.monotonic()
        with self._lock:
            for call_id in ids:
                call = self._queued.pop(call_id, None)
                if call is not None:
                    call.cancelled = True
                    acted.append(call_id)
                elif self._running is not None and self._running.id == call_id:
                    self._running.cancelled = True  # reverted once it returns
                    acted.append(call_id)
                else:
                    call = self._done.get(call_id)
                    if call is None or call.device is None:
                        continue
                    running = call.background_until is not None and now < call.background_until
                    if (call.undo and call.before is not _NOTHING) or running:
                        call.cancelled = True
                        acted.append(call_id)
                        reverts.append(call)
        for call in reverts:
            self._jobs.put(("revert", call))
        return acted

    def command(self, device: str, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one device verb now, on the caller's thread, and return the device's new state.

        For callers other than the model (the MQTT bridge, timers): it holds the
        GPIO lock like a tool call, goes through :meth:`Devices.apply` (the
        device's bounds), counts against a per-device rate limit (the tightest
        ``rate_limit_per_min`` of the device's tools; a read is never limited),
        and arms auto-off. Raises ToolError (BoundsError for a value out of
        range); nothing moves then.
        """
        with self._lock:
            if self._closed:
                raise ToolError("the tool runner is stopped")
        with self._gpio:
            limit = self.toolbox.rate_limit_per_min(device) if verb != "read" else None
            recent = self._rates.setdefault(f"device:{device}", deque())
            now = self._clock()
            while recent and now - recent[0] >= 60:
                recent.popleft()
            if limit is not None and len(recent) >= limit:
                wait = math.ceil(60 - (now - recent[0]))
                raise Refused(
                    f"rate limit: {device} may be commanded at most {limit} times a minute; "
                    f"try again in {wait} s",
                    retry_after_s=wait,
                )
            state = self.devices.apply(device, verb, args)
            if verb == "read":
                return state
            if limit is not None:
                recent.append(now)
            self._bump(device)
            self._arm_auto_off(device, blinking="duration_s" in state)
            return state

    # -- lifecycle

    def start(self) -> None:
        super().start()
        self._jobs.put(("arm", None))  # outputs already on at start-up get their timer too

    def _wake(self) -> None:
        self._jobs.put(("stop", None))

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the thread, then switch auto-off devices off and cancel their timers."""
        with self._lock:
            self._closed = True
            finishing, self._finishing = self._finishing, {}
        for timer in finishing.values():
            timer.cancel()
        try:
            super().stop(timeout)
        finally:
            self._shutdown_auto_off()

    # -- tool thread

    def _run(self) -> None:
        while not self.stopping.is_set():
            kind, item = self._jobs.get()  # asleep until a job or the stop sentinel
            if kind == "stop":
                break
            try:
                if kind == "call":
                    self._handle(item)
                elif kind == "finish":
                    self._finish(item)
                elif kind == "revert":
                    self._revert(item)
                elif kind == "arm":
                    with self._gpio:
                        for name in self.devices:
                            self._arm_auto_off(name)
            except Exception:
                log.exception("tool job %s failed", kind)
        # Calls still queued get no answer: the session they belong to is ending.

    def _handle(self, call: _Call) -> None:
        with self._lock:
            if call.cancelled:
                return
            if self._queued.get(call.id) is call:
                del self._queued[call.id]
            self._running = call
        response: dict[str, Any]
        try:
            response = self._execute(call)
        except Exception as exc:  # a bug must still produce an answer
            log.exception("tool %s crashed", call.name)
            response = error_result(f"{call.name} failed: {exc}")
        with self._lock:
            self._running = None
            cancelled = call.cancelled
            call.responded = not cancelled
            self._done[call.id] = call
            while len(self._done) > self._history:
                self._done.popitem(last=False)
        if cancelled:
            log.info("tool call %s (%s) cancelled; no response sent", call.id, call.name)
            self._revert(call)
            return
        report = self._report(call, response)
        if report.get("willContinue"):
            self._finish_later(call)
        call_logged(self._on_response, report)

    def _report(self, call: _Call, result: dict[str, Any], *, final: bool = False) -> dict:
        """What ``on_response`` gets: the result and how the model should take it."""
        behavior = self.toolbox.behavior(call.name)
        report = {"id": call.id, "name": call.name, "response": result, "behavior": behavior}
        if behavior != "NON_BLOCKING":
            return report
        scheduling = self.toolbox.scheduling(call.name)
        if result.get("status") == "error" and scheduling == "SILENT":
            scheduling = "WHEN_IDLE"  # a failure is never kept from the user
        report["scheduling"] = scheduling
        running = call.background_until is not None and result.get("status") == "ok"
        if running and not final:
            call.continues = True
            report.update(scheduling="SILENT", willContinue=True)  # nothing to say yet
        return report

    def _finish_later(self, call: _Call) -> None:
        """Report the end of a NON_BLOCKING blink or pulse once its time is up."""
        delay = max(0.0, (call.background_until or 0.0) - time.monotonic()) + FINISH_MARGIN_S
        timer = threading.Timer(delay, lambda: self._jobs.put(("finish", call)))
        timer.name = "pi-agent-tool-done"
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            self._finishing[call.id] = timer
        timer.start()

    def _finish(self, call: _Call) -> None:
        """The final report of a call that said ``willContinue`` (not if it was cancelled)."""
        device = call.device
        with self._lock:
            self._finishing.pop(call.id, None)
            if call.cancelled or not call.continues or device is None:
                return
            call.continues = False
        with self._gpio:
            try:
                state = self.devices.state(device)
            except Exception as exc:  # the devices are closing
                result = error_result(f"{call.name} could not read {device}: {exc}")
            else:
                result = ok_result(device=device, finished=True, **state)
                if self._generation.get(device, 0) != call.generation:
                    result["finished"] = False
                    result["note"] = f"{device} was changed by a later command before this ended"
        call_logged(self._on_response, self._report(call, result, final=True))

    def _execute(self, call: _Call) -> dict[str, Any]:
        box = self.toolbox
        name = call.name
        try:
            args = box.validate(name, call.args)
        except ToolError as exc:
            return error_from(exc)
        if box.is_builtin(name):
            return self._with_timeout(call, lambda: box.run_builtin(name, args), name)
        tool = box.tool(name)
        refusal = self._rate_limited(tool)
        if refusal is not None:
            return refusal.result()
        return self._with_timeout(call, lambda: self._act(call, tool, args), name)

    def _rate_limited(self, tool: Tool) -> Refused | None:
        limit = tool.settings.rate_limit_per_min
        if limit is None:
            return None
        now = self._clock()
        recent = self._rates.setdefault(tool.name, deque())
        while recent and now - recent[0] >= 60:
            recent.popleft()
        if len(recent) >= limit:
            wait = math.ceil(60 - (now - recent[0]))
            return Refused(
                f"rate limit: {tool.name} may run at most {limit} times a minute; "
                f"try again in {wait} s",
                retry_after_s=wait,
                hint="tell the user it will work again shortly",
            )
        recent.append(now)
        return None

    def _with_timeout(self, call: _Call, work: Callable[[], dict], name: str) -> dict[str, Any]:
        timeout = self.toolbox.timeout_s(name)
        done = threading.Event()
        box: dict[str, Any] = {}

        def helper() -> None:
            try:
                box["value"] = work()
            except ToolError as exc:
                box["value"] = error_from(exc)
            except Exception as exc:
                log.warning("tool %s failed: %s", name, exc, exc_info=True)
                box["value"] = error_result(f"{name} failed: {exc}")
            finally:
                done.set()

        threading.Thread(target=helper, name="pi-agent-tool-call", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not done.wait(min(0.05, max(deadline - time.monotonic(), 0.001))):
            if self.stopping.is_set():
                return error_result(
                    f"{name} was interrupted: the agent is stopping", retryable=True
                )
            if time.monotonic() >= deadline:
                log.error("tool %s timed out after %.1f s", name, timeout)
                return error_result(
                    f"{name} timed out after {timeout:g} s",
                    retryable=True,
                    hint="try once more; if it times out again, tell the user",
                )
        return box["value"]

    def _act(self, call: _Call, tool: Tool, args: dict[str, Any]) -> dict[str, Any]:
        """Runs on the helper thread, under the device lock."""
        with self._gpio:
            call.device = tool.device
            call.undo = tool.settings.undo
            if call.undo:
                call.before = self.devices.snapshot(tool.device)
            result = self.toolbox.execute(tool.name, args)
            if "duration_s" in result:
                call.background_until = time.monotonic() + result["duration_s"]
            call.generation = self._bump(tool.device)
            self._arm_auto_off(tool.device, blinking=call.background_until is not None)
            return result

    def _revert(self, call: _Call) -> None:
        """Undo (or at least stop) a cancelled call, unless its device moved on since."""
        if call.device is None:
            return
        with self._gpio:
            if self._generation.get(call.device, 0) != call.generation:
                log.info("cancelled call %s not undone: %s changed since", call.id, call.device)
                return
            try:
                if call.undo and call.before is not _NOTHING:
                    self.devices.restore(call.device, call.before)
                    log.info("undid %s (%s) on %s", call.id, call.name, call.device)
                elif call.background_until is not None and time.monotonic() < call.background_until:
                    self.devices.apply(call.device, "off")
                    log.info("stopped %s (%s) on %s", call.id, call.name, call.device)
                else:
                    return
            except Exception:
                log.exception("could not revert %s on %s", call.id, call.device)
                return
            self._bump(call.device)
            self._arm_auto_off(call.device)

    def _bump(self, device: str) -> int:
        self._generation[device] = self._generation.get(device, 0) + 1
        return self._generation[device]

    # -- auto-off (device lock held)

    def _arm_auto_off(self, device: str, *, blinking: bool = False) -> None:
        delay = self.toolbox.auto_off_s(device)
        if delay is None:
            return
        old = self._auto_off.pop(device, None)
        if old is not None:
            old.cancel()
        if not blinking and not self.devices.get(device).is_active:
            return
        timer = threading.Timer(delay, self._auto_off_fire, args=(device,))
        timer.name = "pi-agent-auto-off"
        timer.daemon = True
        self._auto_off[device] = timer
        timer.start()

    def _auto_off_fire(self, device: str) -> None:
        with self._gpio:
            if self._auto_off.get(device) is not threading.current_thread():
                return  # replaced or cancelled meanwhile
            del self._auto_off[device]
            try:
                self.devices.apply(device, "off")
                self._bump(device)
                log.warning(
                    "auto-off: %s switched off after %g s", device, self.toolbox.auto_off_s(device)
                )
            except Exception:
                log.exception("auto-off of %s failed", device)

    def _shutdown_auto_off(self) -> None:
        with self._gpio:
            timers, self._auto_off = self._auto_off, {}
            for device, timer in timers.items():
                timer.cancel()
                try:
                    self.devices.apply(device, "off")
                    log.info("auto-off: %s switched off at shutdown", device)
                except Exception:
                    log.exception("could not switch %s off at shutdown", device)


__all__ = [
    "SCHEMA_KEYS",
    "Param",
    "Refused",
    "Tool",
    "ToolBox",
    "ToolRunner",
    "check_declaration",
    "check_schema",
    "error_from",
]
