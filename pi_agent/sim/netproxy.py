"""A loopback TCP proxy that plays bad Wi-Fi between the agent and the fake Live server.

Tests and ``scripts/soak`` point the agent at :attr:`FaultProxy.url` and switch faults on and
off from any thread while a conversation runs; every mode acts on real sockets, so the agent
sees exactly what the kernel would show it on a flaky link:

``"forward"``
    Bytes go through (after :meth:`FaultProxy.delay`, if set).
``"refuse"``
    The listener stops listening, so new connects fail with ECONNREFUSED; established
    connections are left alone. Back in another mode it listens again on the same port (the
    socket keeps its port while refusing, so nothing else can take it).
``"reset"``
    Every established connection is aborted with an RST, both ways (SO_LINGER 0, then close);
    new connections are forwarded. :meth:`FaultProxy.reset_all` does the same as a one-shot.
``"blackhole"``
    A dead link: every socket stays open, nothing is forwarded either way, no FIN, no RST. The
    proxy stops reading, so the sender's buffers fill and its writes stall as they would. New
    connections complete the TCP handshake (the kernel does that) and are held the same way.

A black-holed connection stays dead when the mode changes back: after a real outage the old
TCP connection is gone too, so only new connections are forwarded. Its sockets are closed
quietly once both ends have hung up (seen without reading), or by :meth:`reset_all` and
:meth:`stop`.

Threads: one accept thread and one thread per connection, each blocked in ``poll()`` on its
sockets and a wake-up socket, so mode changes take effect at once. All state sits behind one
condition, notified on every change, so tests wait with :meth:`FaultProxy.wait_for` instead of
sleeping. Linux only (it un-listens with ``shutdown()`` and watches for ``POLLRDHUP``).
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import math
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["MODES", "FaultProxy", "Mode"]

log = logging.getLogger("pi_agent.sim.netproxy")

Mode = Literal["forward", "refuse", "reset", "blackhole"]
MODES: tuple[str, ...] = ("forward", "refuse", "reset", "blackhole")

_CHUNK = 65536
_QUEUE_LIMIT = 256 * 1024  # bytes held per direction (delay) before the proxy stops reading
_HUP = select.POLLHUP | select.POLLERR | select.POLLNVAL
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST and drops unsent data


def _abort(sock: socket.socket | None, reset: bool) -> None:
    if sock is None:
        return
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    except OSError:
        pass
    sock.close()


class _Direction:
    """One way through a connection: bytes read from ``src``, queued until due, sent to ``dst``."""

    def __init__(self, name: str, src: socket.socket, dst: socket.socket) -> None:
        self.name = name  # "up" (client -> target) or "down"
        self.src = src
        self.dst = dst
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.eof = False  # src sent FIN
        self.shut = False  # FIN forwarded to dst


class _Link:
    """One client connection and its connection to the target, pumped by one thread."""

    def __init__(self, proxy: FaultProxy, link_id: int, client: socket.socket, dead: bool) -> None:
        self.proxy = proxy
        self.id = link_id
        self.client = client
        self.target: socket.socket | None = None
        self.dead = dead  # black-holed: never forwards again
        self.abort: str | None = None  # "reset" or "close", asked for by another thread
        self.epoch = -1  # the proxy epoch this link has acted on
        self.done = False
        self.hung: set[int] = set()  # fds whose peer hung up while dead
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.thread = threading.Thread(target=self._run, name=f"netproxy-link-{link_id}")
        self.thread.daemon = True

    def wake(self) -> None:
        with self.proxy._cond:
            if self.done:
                return
            try:
                self.wake_w.send(b"x")
            except OSError:
                pass  # the buffer is full: a wake-up is pending anyway

    # the link thread

    def _run(self) -> None:
        reset = False
        try:
            if self.dead or self._connect():
                reset = self._pump()
            else:
                reset = True  # the target cannot be reached: the client sees a reset
        except Exception:  # a bug here must not leave the sockets open
            log.exception("link %d failed", self.id)
            reset = True
        finally:
            with self.proxy._cond:
                reset = reset or self.abort == "reset"
            _abort(self.client, reset)
            _abort(self.target, reset)
            self.proxy._finished(self)

    def _connect(self) -> bool:
        """Connect to the target, still answering wake-ups; False if that failed.

        True also when an abort or a black hole came meanwhile: :meth:`_pump` handles those.
        """
        family, kind, proto, _, address = self.proxy._target_info
        target = socket.socket(family, kind, proto)
        target.setblocking(False)
        self.target = target
        code = target.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            return self._connect_failed(code)
        poller = select.poll()
        poller.register(target, select.POLLOUT)
        poller.register(self.wake_r, select.POLLIN)
        deadline = time.monotonic() + self.proxy.connect_timeout
        while True:
            with self.proxy._cond:
                if self.abort or self.dead:
                    return True
                if self.epoch != self.proxy._epoch:
                    self.epoch = self.proxy._epoch
                    self.proxy._cond.notify_all()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._connect_failed(errno.ETIMEDOUT)
            events = dict(poller.poll(math.ceil(remaining * 1000)))
            if self.wake_r.fileno() in events:
                self._drain_wake()
            if target.fileno() in events:
                code = target.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                return code == 0 or self._connect_failed(code)

    def _connect_failed(self, code: int) -> bool:
        log.info("link %d: cannot reach the target: %s", self.id, errno.errorcode.get(code, code))
        with self.proxy._cond:
            self.proxy.counters["target_failed"] += 1
            self.proxy._cond.notify_all()
        return False

    def _drain_wake(self) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _pump(self) -> bool:
        """Forward until both sides closed (False) or a side reset (True) or abort."""
        assert self.target is not None or self.dead
        self.client.setblocking(False)
        dirs: list[_Direction] = []
        if self.target is not None:
            dirs = [
                _Direction("up", self.client, self.target),
                _Direction("down", self.target, self.client),
            ]
        proxy = self.proxy
        while True:
            with proxy._cond:
                if self.abort:
                    return self.abort == "reset"
                dead = self.dead
                if self.epoch != proxy._epoch:
                    self.epoch = proxy._epoch
                    proxy._cond.notify_all()
            if dead:
                if self._watch_dead():
                    return False
                continue
            masks: dict[int, int] = collections.defaultdict(int)
            now = time.monotonic()
            timeout: float | None = None
            for d in dirs:
                if not d.eof and d.queued < _QUEUE_LIMIT:
                    masks[d.src.fileno()] |= select.POLLIN
                if d.queue:
                    due = d.queue[0][0]
                    if due <= now:
                        masks[d.dst.fileno()] |= select.POLLOUT
                    else:
                        timeout = due - now if timeout is None else min(timeout, due - now)
            poller = select.poll()
            poller.register(self.wake_r, select.POLLIN)
            for fd, mask in masks.items():
                poller.register(fd, mask)
            events = dict(poller.poll(None if timeout is None else math.ceil(timeout * 1000)))
            if self.wake_r.fileno() in events:
                self._drain_wake()
            with proxy._cond:
                if self.abort or self.dead:
                    continue  # the new state wins over whatever arrived meanwhile
            try:
                for d in dirs:
                    self._read(d, events.get(d.src.fileno(), 0))
                    self._write(d, events.get(d.dst.fileno(), 0))
            except OSError as exc:  # ECONNRESET, EPIPE, ...: pass the reset on
                log.info("link %d: %s; resetting the other side", self.id, exc)
                return True
            if all(d.shut for d in dirs):
                return False

    def _read(self, d: _Direction, src_events: int) -> None:
        """Read what ``d.src`` has (stamped with the delay), or note its FIN."""
        if d.eof or not src_events & (select.POLLIN | _HUP):
            return
        try:
            data = d.src.recv(_CHUNK)
        except BlockingIOError:
            return
        if data:
            with self.proxy._cond:
                due = time.monotonic() + self.proxy._delay
            d.queue.append((due, data))
            d.queued += len(data)
        else:
            d.eof = True

    def _write(self, d: _Direction, dst_events: int) -> None:
        """Send the due head of the queue; forward the FIN once it is empty."""
        # On an error or hang-up, send anyway: it raises, and the caller passes the reset on.
        if d.queue and d.queue[0][0] <= time.monotonic() and dst_events & (select.POLLOUT | _HUP):
            due, data = d.queue[0]
            try:
                sent = d.dst.send(data)
            except BlockingIOError:
                sent = 0
            if sent:
                d.queued -= sent
                if sent == len(data):
                    d.queue.popleft()
                else:
                    d.queue[0] = (due, data[sent:])
                with self.proxy._cond:
                    self.proxy.counters[f"bytes_{d.name}"] += sent
                    self.proxy._cond.notify_all()
        if d.eof and not d.queue and not d.shut:
            try:
                d.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            d.shut = True

    def _watch_dead(self) -> bool:
        """Wait, without reading, until a peer hangs up; True once every peer has."""
        socks = [s for s in (self.client, self.target) if s is not None]
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        for sock in socks:
            if sock.fileno() not in self.hung:
                poller.register(sock, select.POLLRDHUP)
        for fd, events in poller.poll():
            if fd == self.wake_r.fileno():
                self._drain_wake()
            elif events & (select.POLLRDHUP | _HUP):
                self.hung.add(fd)
        return all(s.fileno() in self.hung for s in socks)


class FaultProxy:
    """A TCP proxy on loopback whose faults tests switch at any time, from any thread.

    ``counters`` (a Counter, read it under :meth:`wait_for` or as a snapshot): ``accepted``
    connections, ``refused`` (connections queued in the backlog when refusing began, reset by
    the proxy; connects the kernel refuses while the listener is down cannot be seen from user
    space), ``reset`` (connections aborted by reset), ``blackholed`` (connections killed by a
    black hole, old and new), ``target_failed`` (the target could not be reached: the client is
    reset), ``bytes_up`` (client to target) and ``bytes_down``, ``closed`` (connections ended).

    ``target`` is (host, port) of the real server; ``host`` (an IPv4 address) and ``port`` (0:
    any free one) are where the proxy listens.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
        backlog: int = 64,
    ) -> None:
        self.target = target
        self.host = host
        self.connect_timeout = connect_timeout
        self.counters: collections.Counter[str] = collections.Counter()
        self._requested_port = port
        self._backlog = backlog
        self._target_info = socket.getaddrinfo(*target, type=socket.SOCK_STREAM)[0]
        self._cond = threading.Condition(threading.RLock())
        self._mode: str = "forward"
        self._delay = 0.0
        self._epoch = 0
        self._links: dict[int, _Link] = {}
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._listening = False
        self._port = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._accept_thread: threading.Thread | None = None
        self._started = False
        self._stopped = False

    # lifecycle

    def start(self) -> FaultProxy:
        """Listen and accept in a background thread; returns self."""
        if self._started:
            raise RuntimeError("FaultProxy already started")
        self._started = True
        self._listener = self._bind()
        self._listener.listen(self._backlog)
        self._listening = True
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="netproxy-accept", daemon=True
        )
        self._accept_thread.start()
        log.info("proxy %s -> %s:%d", self.url, *self.target)
        return self

    def _bind(self) -> socket.socket:
        """Bind to an explicit port (found first if 0): then it survives ``shutdown()``."""
        port = self._requested_port
        probe = None
        if port == 0:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((self.host, 0))
            port = probe.getsockname()[1]
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, port))
        except OSError as exc:
            listener.close()
            raise OSError(exc.errno, f"FaultProxy cannot listen on {self.host}:{port}") from exc
        finally:
            if probe is not None:
                probe.close()
        listener.setblocking(False)
        self._port = port
        return listener

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, join the threads. Idempotent."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            links = list(self._links.values())
            for link in links:
                link.abort = link.abort or "close"
            self._cond.notify_all()
        for link in links:
            link.wake()
        self._wake_accept()
        deadline = time.monotonic() + timeout
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        for link in links:
            link.thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._started:
            raise RuntimeError("FaultProxy not started")
        return self._port

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``: the base endpoint to give the agent instead of the server's."""
        return f"ws://{self.host}:{self.port}"

    @property
    def mode(self) -> str:
        with self._cond:
            return self._mode

    @property
    def connections(self) -> int:
        """Connections open through the proxy now (black-holed ones included)."""
        with self._cond:
            return len(self._links)

    # controls

    def set_mode(self, mode: Mode, timeout: float = 5.0) -> None:
        """Switch faults; when it returns, every connection acts on the new mode.

        Raises ValueError for an unknown mode, OSError if the port cannot listen again.
        """
        if mode not in MODES:
            raise ValueError(f"FaultProxy mode {mode!r} is not one of {', '.join(MODES)}")
        with self._cond:
            if self._stopped or not self._started:
                raise RuntimeError("FaultProxy is not running")
            old, self._mode = self._mode, mode
            if mode == "refuse" and self._listening:
                self._unlisten()
            elif mode != "refuse" and not self._listening:
                assert self._listener is not None
                self._listener.listen(self._backlog)
                self._listening = True
            if mode == "blackhole":
                for link in self._links.values():
                    if not link.dead:
                        link.dead = True
                        self.counters["blackholed"] += 1
            self._cond.notify_all()
        log.info("proxy %d: %s -> %s", self._port, old, mode)
        self._wake_accept()
        if mode == "reset":
            self.reset_all(timeout)
        else:
            self._sync(timeout)

    def reset_all(self, timeout: float = 5.0) -> int:
        """Abort every open connection with an RST both ways; returns how many it reset.

        Returns once their sockets are closed (or after ``timeout``).
        """
        with self._cond:
            links = [link for link in self._links.values() if not link.abort]
            for link in links:
                link.abort = "reset"
            self.counters["reset"] += len(links)
            self._cond.notify_all()
        for link in links:
            link.wake()
        with self._cond:
            self._cond.wait_for(lambda: all(link.done for link in links), timeout)
        return len(links)

    def delay(self, seconds: float) -> None:
        """Hold every chunk read from now on ``seconds`` before forwarding it (order kept)."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"FaultProxy delay must be a finite number >= 0, not {seconds!r}")
        with self._cond:
            self._delay = float(seconds)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[FaultProxy], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds; re-checked on every change of state."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    # internals

    def _wake_accept(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # a wake-up is pending anyway

    def _unlisten(self) -> None:
        """Reset what waits in the backlog, then stop listening but keep the port (held lock)."""
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                break
            _abort(sock, reset=True)
            self.counters["refused"] += 1
        # Linux: shutdown() takes a listening socket back to CLOSE with its port still bound,
        # so connects get ECONNREFUSED and listen() works again on the same port.
        self._listener.shutdown(socket.SHUT_RD)
        self._listening = False

    def _sync(self, timeout: float) -> None:
        """Wait until every live link has looked at the state as of now."""
        with self._cond:
            self._epoch += 1
            epoch = self._epoch
            links = list(self._links.values())
        for link in links:
            link.wake()
        with self._cond:
            self._cond.wait_for(
                lambda: all(link.done or link.epoch >= epoch for link in links), timeout
            )

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            with self._cond:
                if self._stopped:
                    return
                listening = self._listening
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            if listening:
                poller.register(self._listener, select.POLLIN)
            events = dict(poller.poll())
            if self._wake_r.fileno() in events:
                try:
                    self._wake_r.recv(4096)
                except OSError:
                    pass
            if self._listener.fileno() not in events:
                continue
            with self._cond:
                if self._stopped or not self._listening:
                    continue
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    continue  # taken by _unlisten, or refused meanwhile
                dead = self._mode == "blackhole"
                link = _Link(self, next(self._ids), client, dead)
                self._links[link.id] = link
                self.counters["accepted"] += 1
                if dead:
                    self.counters["blackholed"] += 1
                link.thread.start()  # under the lock, so stop() never sees it unstarted
                self._cond.notify_all()
            log.debug("link %d: accepted%s", link.id, " into the black hole" if dead else "")

    def _finished(self, link: _Link) -> None:
        with self._cond:
            link.done = True
            link.wake_r.close()
            link.wake_w.close()
            self._links.pop(link.id, None)
            self.counters["closed"] += 1
            self._cond.notify_all()
