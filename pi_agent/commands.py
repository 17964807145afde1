"""Control requests (socket, MQTT, the demo) turned into agent operations.

A mixin of :class:`~pi_agent.agent.Agent`, on the agent thread. Every request
gets exactly one reply through ``respond``; ``say`` with ``wait`` is answered
when the model's answer is complete (or the turn is lost).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from . import events as ev
from .errors import ConfigError, PiAgentError
from .logs import escape
from .turns import PendingTurn

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("pi_agent.agent")

MAX_SAY_CHARS = 4000


class Commands:
    def _on_command(self: Agent, command: ev.Command) -> None:
        request, respond = command.request, command.respond
        cmd = request.get("cmd")
        try:
            reply = self._run_command(cmd, request, respond)
        except PiAgentError as exc:
            reply = {"ok": False, "error": str(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            reply = {"ok": False, "error": f"bad {cmd} request: {exc}"}
        if reply is not None:
            respond(reply)

    def _run_command(self: Agent, cmd: Any, request: dict[str, Any], respond: Any) -> Any:
        if cmd == "press":
            self._on_press(ev.Press("control"))
        elif cmd == "release":
            self._on_release(ev.Release("control"))
        elif cmd == "talk":
            if self.talking:
                self._on_release(ev.Release("control"))
            else:
                self._on_press(ev.Press("control"))
        elif cmd == "say":
            turn = self._say(str(request["text"]))
            if request.get("wait", True):
                self._say_waiters.append((turn, respond))
                return None
            return {"ok": True, "turn": turn}
        elif cmd in ("mute", "unmute"):
            self._set_muted(cmd == "mute")
        elif cmd == "volume":
            if self.parts.speaker.state == "off":
                raise PiAgentError("there is no speaker (audio.backend is none)")
            volume = float(request["value"])
            if not 0.0 <= volume <= 1.0:
                raise PiAgentError("volume must be between 0 and 1")
            self.parts.speaker.volume = volume
            self._publish({"event": "volume", "volume": self.parts.speaker.volume})
            return {"ok": True, "volume": self.parts.speaker.volume}
        elif cmd == "status":
            return {"ok": True, "status": self.status()}
        else:
            raise PiAgentError(f"unknown command {escape(cmd, 40)}")
        return {"ok": True}

    def _say(self: Agent, text: str, source: str = "typed") -> int:
        """A typed user turn (or a timer telling the model); returns its number."""
        if self.talking:
            raise PiAgentError("the user is talking; release first")
        if not text.strip() or len(text) > MAX_SAY_CHARS:
            raise PiAgentError(f"say needs 1 to {MAX_SAY_CHARS} characters")
        fatal = self.link.fatal
        if fatal is not None:
            raise PiAgentError(f"cannot talk: {fatal}")
        self._barge_in()
        self.turn += 1
        self.counters["user_requests"] += 1
        self._new_metrics()
        self._drop_previous_turn()
        now = self._release_t = self._clock()
        log.info("turn %d you (%s): %s", self.turn, source, escape(text, 2000))
        self._transcript["user"].append(text)
        turn = PendingTurn(self.turn, text=text, ended=True, ended_at=now, started_at=now)
        if self.uplink.say(turn):
            self._expect_answer(now)
        else:
            log.info("turn %d kept until the connection is back", self.turn)
            self.link.hurry()
        return self.turn

    def _on_reload(self: Agent, event: ev.Reload) -> None:
        """SIGHUP: validate the file first; apply what can be applied live.

        A bad file keeps the running config (and says why). Live settings take
        effect on a new connection (resumed, unless the model changed); agent
        settings, the volume and the log level at once; changes to hardware,
        tools, control or MQTT need a restart, which the log says.
        """
        notifier = self.parts.notifier
        if self.load_config is None:
            log.warning("reload: running on built-in defaults, there is no config file to reload")
            return
        notify = getattr(notifier, "notify", None)
        if notify is not None:
            notify(RELOADING=1)
        try:
            new = self.load_config()
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", "; ".join(exc.problems))
            self._publish({"event": "error", "part": "config", "detail": "; ".join(exc.problems)})
            if notify is not None:
                notify(READY=1)
            return
        old = self.config
        changed = [
            f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)
        ]
        audio = dataclasses.replace(old.audio, volume=new.audio.volume)
        later = [name for name in changed if name not in ("live", "agent", "audio")]
        if audio != new.audio:
            later.append("audio")
        self.config = dataclasses.replace(old, live=new.live, agent=new.agent, audio=audio)
        if new.audio.volume != old.audio.volume:
            self.parts.speaker.volume = new.audio.volume
        logging.getLogger().setLevel(new.agent.log_level.upper())
        if "live" in changed:
            if new.live.model != old.live.model:
                log.info("reload: the model changed; starting a fresh session")
                old_session = self.link.restart()
                self._connection_gone()
                if old_session is not None:
                    old_session.close()
            elif self._in_flight():
                self.link.rollover_pending = True
            else:
                self.link.schedule(0.0)  # a new connection with the new setup, resumed
        if later:
            log.warning(
                "reload: changes to %s take effect after a restart"
                " (sudo systemctl restart pi-agent)",
                ", ".join(sorted(later)),
            )
        log.info("config reloaded (%s)", ", ".join(changed) or "no changes")
        if notify is not None:
            notify(READY=1)
