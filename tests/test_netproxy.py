"""FaultProxy: each fault on raw sockets against an echo server, then websocket-client to the
fake Live server through it. Waits on conditions; the only timed waits are the receive
timeouts that show a black hole forwards nothing."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from typing import Any

import pytest
import websocket
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent.sim.fake_live import LIVE_PATH, FakeLiveServer, Reply
from pi_agent.sim.netproxy import MODES, FaultProxy
from tests.conftest import TIMEOUT

QUIET = 0.3  # how long a black-holed socket must stay silent (a recv timeout, not a sleep)
KEY = "fake-key-for-tests-0123456789"


class EchoServer:
    """Echoes every byte; records how each connection ended ("eof" or "reset")."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.cond = threading.Condition()
        self.accepted = 0
        self.received = 0
        self.ends: list[str] = []
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            with self.cond:
                self.accepted += 1
                self.conns.append(conn)
                self.threads.append(thread)
                self.cond.notify_all()
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        end = "eof"
        try:
            while data := conn.recv(65536):
                with self.cond:
                    self.received += len(data)
                    self.cond.notify_all()
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)  # the client is done: so are we
        except ConnectionResetError:
            end = "reset"
        except OSError:
            end = "closed"
        with self.cond:
            self.ends.append(end)
            self.cond.notify_all()

    def hang_up_all(self) -> None:
        """Half-close every connection (FIN), as a server that gives up would."""
        with self.cond:
            for conn in self.conns:
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def wait_for(self, predicate: Any) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), TIMEOUT)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RD)  # Linux: wakes the blocked accept()
        self.sock.close()
        with self.cond:
            conns, threads = list(self.conns), list(self.threads)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(TIMEOUT)
        for conn in conns:
            conn.close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo):
    with FaultProxy(echo.address) as p:
        yield p


def dial(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
    assert proxy.wait_for(lambda p: p.counters["accepted"] >= 1, TIMEOUT)
    return sock


def roundtrip(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        assert chunk, "the proxy closed the connection"
        got += chunk
    return got


def silent(sock: socket.socket) -> bool:
    """True if nothing arrives within QUIET (recv times out) and the socket is still open."""
    sock.settimeout(QUIET)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return still_open(sock)
    finally:
        sock.settimeout(TIMEOUT)
    raise AssertionError(f"the black hole let {data!r} through")


def still_open(sock: socket.socket) -> bool:
    """Neither FIN nor RST has arrived (checked without reading)."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return poller.poll(0) == []


def expect_reset(sock: socket.socket) -> None:
    with pytest.raises(ConnectionResetError):
        while sock.recv(65536):
            pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- raw sockets --------------------------------------------------------------------------------


def test_forward_echoes_and_counts_bytes(proxy, echo):
    assert proxy.url == f"ws://127.0.0.1:{proxy.port}"
    with dial(proxy) as sock:
        assert roundtrip(sock, b"hello") == b"hello"
        assert roundtrip(sock, b"x" * 200_000) == b"x" * 200_000
    assert proxy.wait_for(
        lambda p: p.counters["bytes_up"] == p.counters["bytes_down"] == 200_005, TIMEOUT
    )
    assert proxy.wait_for(lambda p: p.connections == 0 and p.counters["closed"] == 1, TIMEOUT)
    assert echo.wait_for(lambda e: e.ends == ["eof"])  # the client's FIN went through


def test_refuse_refuses_new_connections_and_reopens_the_same_port(proxy, echo):
    port = proxy.port
    with dial(proxy) as old:
        proxy.set_mode("refuse")
        assert proxy.mode == "refuse"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        assert roundtrip(old) == b"ping"  # established connections are left alone
        proxy.set_mode("forward")
        assert proxy.port == port
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as new:
            assert roundtrip(new) == b"ping"
    assert proxy.counters["accepted"] == 2


def test_reset_aborts_established_connections_and_forwards_new_ones(proxy, echo):
    with dial(proxy) as a, dial(proxy) as b:
        assert roundtrip(a) == roundtrip(b) == b"ping"
        proxy.set_mode("reset")
        expect_reset(a)
        expect_reset(b)
        assert echo.wait_for(lambda e: e.ends == ["reset", "reset"])  # RST both ways
        assert proxy.counters["reset"] == 2
        with dial(proxy) as c:
            assert roundtrip(c) == b"ping"
            proxy.set_mode("forward")
            assert proxy.reset_all() == 1  # the one-shot
            expect_reset(c)


def test_blackhole_holds_sockets_open_and_forwards_nothing(proxy, echo):
    with dial(proxy) as old:
        assert roundtrip(old) == b"ping"
        proxy.set_mode("blackhole")
        up = proxy.counters["bytes_up"]
        old.sendall(b"lost")
        assert silent(old)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as new:
            new.sendall(b"lost too")  # the kernel accepted it, nothing is forwarded
            assert silent(new)
            assert proxy.wait_for(lambda p: p.counters["blackholed"] == 2, TIMEOUT)
            assert echo.accepted == 1  # the new one never reached the target
            proxy.set_mode("forward")
            assert silent(old)  # black-holed connections stay dead after the outage
            assert silent(new)
            with dial(proxy) as fresh:
                assert roundtrip(fresh) == b"ping"
        assert proxy.counters["bytes_up"] == up + 4  # only fresh's ping
        assert echo.received == 8


def test_blackholed_link_is_closed_quietly_once_both_ends_hang_up(proxy, echo):
    sock = dial(proxy)
    assert roundtrip(sock) == b"ping"
    proxy.set_mode("blackhole")
    sock.close()  # the agent gives up; the server has not noticed yet
    assert still_open_on_server(echo)
    echo.hang_up_all()  # the server's own timeout fires
    assert proxy.wait_for(lambda p: p.connections == 0, TIMEOUT)


def still_open_on_server(echo: EchoServer) -> bool:
    with echo.cond:
        return echo.ends == [] and still_open(echo.conns[0])


def test_delay_holds_each_chunk_in_both_directions_and_keeps_order(proxy):
    with dial(proxy) as sock:
        proxy.delay(0.1)
        started = time.monotonic()
        assert roundtrip(sock, b"late") == b"late"
        assert time.monotonic() - started >= 0.2  # 0.1 s each way
        payload = bytes(range(256)) * 64
        for i in range(0, len(payload), 1000):
            sock.sendall(payload[i : i + 1000])
            if i == 8000:
                proxy.delay(0)  # later chunks are due earlier, but order is kept
        got = b""
        while len(got) < len(payload):
            got += sock.recv(65536)
        assert got == payload


def test_a_target_that_is_down_resets_the_client(echo):
    with FaultProxy(("127.0.0.1", free_port())) as proxy:
        with (
            pytest.raises(ConnectionResetError),  # the RST may even beat connect()'s return
            socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as sock,
        ):
            while sock.recv(65536):
                pass
        assert proxy.wait_for(lambda p: p.counters["target_failed"] == 1, TIMEOUT)


def test_bad_arguments_name_the_thing(proxy):
    with pytest.raises(ValueError, match="mode 'flaky'"):
        proxy.set_mode("flaky")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delay"):
        proxy.delay(-1)
    with pytest.raises(ValueError, match="delay"):
        proxy.delay(float("nan"))
    with pytest.raises(RuntimeError, match="not started"):
        _ = FaultProxy(("127.0.0.1", 1)).port


def test_port_in_use_is_a_clear_error(proxy, echo):
    with pytest.raises(OSError, match=f"127.0.0.1:{proxy.port}"):
        FaultProxy(echo.address, port=proxy.port).start()


def test_stop_closes_everything_and_joins_its_threads(echo):
    proxy = FaultProxy(echo.address).start()
    live = dial(proxy)
    assert roundtrip(live) == b"ping"
    proxy.set_mode("blackhole")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as held:
        assert proxy.wait_for(lambda p: p.connections == 2, TIMEOUT)
        proxy.stop()
        assert live.recv(1) == b""
        assert held.recv(1) == b""
    live.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("netproxy")]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
    proxy.stop()  # idempotent


def test_modes_switch_from_other_threads(proxy):
    with dial(proxy) as sock:
        for mode in ("refuse", "forward", "delay", "forward"):
            switcher = threading.Thread(
                target=proxy.delay if mode == "delay" else proxy.set_mode,
                args=(0.05 if mode == "delay" else mode,),
            )
            switcher.start()
            switcher.join(TIMEOUT)
            assert roundtrip(sock) == b"ping"
        assert proxy.mode == "forward"


@settings(max_examples=12)
@given(st.lists(st.sampled_from(MODES), min_size=1, max_size=5))
def test_any_sequence_of_modes_behaves_like_the_model(modes):
    """After every switch: each connection is live, dead (black-holed) or reset as modelled,
    and a new connection is forwarded, refused or black-holed."""
    echo = EchoServer()
    try:
        with FaultProxy(echo.address) as proxy:
            conns: list[tuple[socket.socket, str]] = []  # (socket, "live" | "dead" | "reset")
            for mode in modes:
                proxy.set_mode(mode)
                conns = [
                    (s, "reset" if mode == "reset" and st_ != "reset" else st_) for s, st_ in conns
                ]
                conns = [
                    (s, "dead" if mode == "blackhole" and st_ == "live" else st_)
                    for s, st_ in conns
                ]
                for sock, state in conns:
                    if state == "live":
                        assert roundtrip(sock) == b"ping"
                    elif state == "dead":
                        assert still_open(sock)
                if mode == "refuse":
                    with pytest.raises(ConnectionRefusedError):
                        socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
                    continue
                accepted = proxy.counters["accepted"]
                sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
                assert proxy.wait_for(lambda p, n=accepted: p.counters["accepted"] > n, TIMEOUT)
                if mode == "blackhole":
                    conns.append((sock, "dead"))
                else:
                    assert roundtrip(sock) == b"ping"
                    conns.append((sock, "live"))
            for sock, state in conns:
                if state == "reset":
                    expect_reset(sock)
                sock.close()
    finally:
        echo.close()


# --- websocket-client to the fake Live server ---------------------------------------------------

SETUP: dict[str, Any] = {
    "model": "models/gemini-3.8-live",
    "generationConfig": {"responseModalities": ["AUDIO"]},
    "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
}


@pytest.fixture
def live():
    with (
        FakeLiveServer(api_key=KEY, default_reply=Reply("Hi.")) as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
    ):
        yield server, proxy


def ws_connect(proxy: FaultProxy) -> websocket.WebSocket:
    return websocket.create_connection(
        proxy.url + LIVE_PATH, header=[f"x-goog-api-key: {KEY}"], timeout=TIMEOUT
    )


def ws_setup(proxy: FaultProxy) -> websocket.WebSocket:
    ws = ws_connect(proxy)
    ws.send(json.dumps({"setup": SETUP}))
    assert json.loads(ws.recv()) == {"setupComplete": {}}
    return ws


def test_ws_setup_and_a_turn_go_through_forward(live):
    server, proxy = live
    ws = ws_setup(proxy)
    ws.send(json.dumps({"realtimeInput": {"activityStart": {}}}))
    ws.send(json.dumps({"realtimeInput": {"activityEnd": {}}}))
    messages = []
    while not messages or "turnComplete" not in messages[-1].get("serverContent", {}):
        messages.append(json.loads(ws.recv()))
    ws.close()
    assert server.wait_for(lambda s: s.counters["turns"] == 1, TIMEOUT)
    assert proxy.counters["bytes_up"] > 0 and proxy.counters["bytes_down"] > 0


def test_ws_refuse_is_connection_refused(live):
    server, proxy = live
    proxy.set_mode("refuse")
    with pytest.raises(ConnectionRefusedError):
        ws_connect(proxy)
    proxy.set_mode("forward")
    ws_setup(proxy).close()
    assert server.counters["setups"] == 1


def test_ws_reset_closes_the_client_and_the_server_sees_no_close_frame(live):
    server, proxy = live
    ws = ws_setup(proxy)
    proxy.set_mode("reset")
    with pytest.raises((ConnectionResetError, websocket.WebSocketConnectionClosedException)):
        ws.recv()
    assert server.wait_for(lambda s: s.connection(1).close_code == 1006, TIMEOUT)
    ws.close()


def test_ws_blackhole_times_out_with_the_socket_still_open(live):
    server, proxy = live
    ws = ws_setup(proxy)
    proxy.set_mode("blackhole")
    ws.send(json.dumps({"realtimeInput": {"activityStart": {}}}))  # sending still succeeds
    ws.settimeout(QUIET)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    assert ws.connected and still_open(ws.sock)
    assert server.messages(sub="activityStart") == []
    assert server.connection(1).closed_at is None
    proxy.reset_all()
    ws.close()


def test_ws_delay_adds_at_least_the_delay_each_way(live):
    _, proxy = live
    proxy.delay(0.1)
    ws = ws_connect(proxy)
    started = time.monotonic()
    ws.send(json.dumps({"setup": SETUP}))
    assert json.loads(ws.recv()) == {"setupComplete": {}}
    assert time.monotonic() - started >= 0.2
    ws.close()
