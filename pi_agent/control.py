"""The local control socket: a UNIX stream socket speaking JSON lines.

Other software (a second button, Home Assistant, a test) drives the agent with
one request per line and gets one JSON reply per line::

    {"cmd": "press"}            {"cmd": "say", "text": "what time is it"}
    {"cmd": "volume", "value": 0.5}                      {"cmd": "status"}

Plain words work too (``press``, ``say hello``, ``volume 0.5``), so ``socat``
or ``nc -U`` are enough by hand. Replies are ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. It is a UNIX socket with file permissions,
never a TCP port: who may talk to the agent is decided by the file mode.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import PiAgentError
from .threads import Worker

log = logging.getLogger(__name__)

COMMANDS = ("press", "release", "say", "mute", "unmute", "volume", "status")
MAX_LINE = 64 * 1024


def parse_command(line: str) -> dict[str, Any]:
    """Turn one request line (JSON or plain words) into a validated command dict."""
    line = line.strip()
    if not line:
        raise ValueError("empty command")
    if line.startswith(("{", "[")):
        try:
            request = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
        if not isinstance(request, dict):
            raise ValueError("a request must be a JSON object")
    else:
        word, _, rest = line.partition(" ")
        request = {"cmd": word.lower()}
        if word.lower() == "say":
            request["text"] = rest
        elif word.lower() == "volume":
            try:
                request["value"] = float(rest)
            except ValueError:
                raise ValueError(f"volume needs a number from 0 to 1, not {rest!r}") from None
        elif rest.strip():
            raise ValueError(f"{word} takes no argument")
    cmd = request.get("cmd")
    if cmd not in COMMANDS:
        shown = repr(cmd) if len(repr(cmd)) <= 40 else repr(cmd)[:37] + "..."
        raise ValueError(f"unknown command {shown}; known: {', '.join(COMMANDS)}")
    if cmd == "say":
        text = request.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("say needs some text")
        if len(text) > 4000:
            raise ValueError("say text is longer than 4000 characters")
    if cmd == "volume":
        value = request.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"volume needs a number from 0 to 1, not {value!r}")
    return request


class ControlServer(Worker):
    """Accepts connections on a UNIX socket; each request goes to ``handler``.

    ``handler(request) -> reply`` is the agent's thread-safe entry point (it
    enqueues to the agent and waits for its answer). One short-lived thread
    serves each client, so a slow client cannot block another.
    """

    name = "pi-agent-control"

    def __init__(self, path: str, mode: int, handler: Callable[[dict[str, Any]], dict[str, Any]]):
        super().__init__()
        self.path = Path(path)
        self.mode = mode
        self._handler = handler
        self._sock: socket.socket | None = None

    def start(self) -> None:
        """Bind (replacing a stale socket file, never a regular file) and start serving."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() or self.path.is_symlink():
                if not stat.S_ISSOCK(self.path.lstat().st_mode):
                    raise PiAgentError(f"control.socket {self.path} exists and is not a socket")
                self.path.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o177)  # never world-accessible, even for a moment
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old_umask)
            os.chmod(self.path, self.mode)
            sock.listen(8)
            sock.settimeout(0.5)
        except OSError as exc:
            raise PiAgentError(
                f"cannot open control.socket {self.path}: {exc.strerror or exc}"
            ) from None
        self._sock = sock
        super().start()

    def _run(self) -> None:
        assert self._sock is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    return
                raise
            threading.Thread(
                target=self._serve, args=(conn,), name="pi-agent-control-client", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            reader = conn.makefile("rb")
            while not self.stopping.is_set():
                try:
                    raw = reader.readline(MAX_LINE + 1)
                except OSError:
                    return
                if not raw:
                    return
                if len(raw) > MAX_LINE:
                    while raw and not raw.endswith(b"\n"):  # skip the rest of the line
                        raw = reader.readline(MAX_LINE)
                    reply = {"ok": False, "error": "request line too long"}
                else:
                    reply = self._answer(raw.decode("utf-8", "replace"))
                try:
                    conn.sendall((json.dumps(reply) + "\n").encode())
                except OSError:
                    return

    def _answer(self, line: str) -> dict[str, Any]:
        try:
            request = parse_command(line)
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        try:
            return self._handler(request)
        except Exception as exc:
            log.exception("control command %r failed", request.get("cmd"))
            return {"ok": False, "error": f"internal error: {exc}"}

    def _wake(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        try:
            if self.path.exists() and stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()
        except OSError:
            pass


def send_command(path: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Client side: send one request, return the agent's reply (raises OSError if unreachable)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall((json.dumps(request) + "\n").encode())
        with sock.makefile("rb") as reader:
            line = reader.readline(MAX_LINE)
    if not line:
        raise ConnectionError("the agent closed the control connection without answering")
    return json.loads(line)
