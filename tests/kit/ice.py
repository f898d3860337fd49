"""ICE test scaffolding: a simulated network for sans-IO agents, and a UDP driver.

`SimNet` moves datagrams between `IceAgent`s on a simulated clock, with no loop and no
socket: each datagram arrives `latency` (+ up to `jitter`, which reorders) seconds after
it was sent, unless `drop(src, dst, data)` says to lose it; a `nat` table rewrites the
source of what an address sends (and routes the answers back), so the peer sees a
peer-reflexive address. `run_until(cond)` advances the clock from wake-up to wake-up
(the agents' timers and the next arrival) until `cond()` holds or the time is up.

Besides agents, `SimNet` drives the small peers here: `LitePeer` (an ice-lite peer that
answers checks and sends none) and `StunServerPeer` (a STUN server that answers, fails
or stays silent); `stun_requests` picks the requests out of the log.

`UdpIce` drives an `IceAgent` over a real UDP socket on the running asyncio loop (a plain
`DatagramProtocol` and one `call_at` timer), for the interop tests against aioice and a
STUN server; it records the agent's events and wakes the tests' waits.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from usocket_asyncio._ice import IceAgent, IceEvent
from usocket_asyncio._stun import (
    BINDING,
    ERROR,
    REQUEST,
    SUCCESS,
    StunError,
    StunMessage,
    check_integrity,
    encode,
    is_stun,
    parse,
)

from .loop import wake

Addr = tuple[str, int]


class Endpoint(Protocol):
    """What `SimNet` drives: an `IceAgent`, or one of the small peers below."""

    def receive(self, data: bytes, addr: Addr, now: float) -> bool: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_event(self) -> IceEvent | None: ...


class _AnsweringPeer:
    """A peer that only answers: what it sends waits in `_out` for `SimNet`; it has no
    timer and no events."""

    _out: list[tuple[bytes, Addr]]

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> IceEvent | None:
        return None


class LitePeer(_AnsweringPeer):
    """An ice-lite peer (RFC 8445 §2.5): it answers the checks that carry its credentials
    and sends none; a USE-CANDIDATE check selects the pair. Records what it saw."""

    def __init__(self, ufrag: str = "lite", pwd: str = "lite-password-0123456789") -> None:
        self.ufrag = ufrag
        self.pwd = pwd
        self.requests: list[StunMessage] = []
        self.selected: Addr | None = None
        self._out: list[tuple[bytes, Addr]] = []

    def receive(self, data: bytes, addr: Addr, now: float) -> bool:
        if not is_stun(data):
            return False
        try:
            msg = parse(data)
        except StunError:
            return True
        if msg.cls != REQUEST or not (msg.username or "").startswith(self.ufrag + ":"):
            return True
        if not check_integrity(msg, self.pwd.encode()):
            return True
        self.requests.append(msg)
        if msg.use_candidate:
            self.selected = addr
        answer = StunMessage(BINDING, SUCCESS, msg.transaction_id, xor_mapped_address=addr)
        self._out.append((encode(answer, self.pwd.encode()), addr))
        return True


class StunServerPeer(_AnsweringPeer):
    """A STUN server: answers each Binding request with the source address it saw, or
    with `error` (code, reason), or not at all (`silent`)."""

    def __init__(self, error: tuple[int, str] | None = None, silent: bool = False) -> None:
        self.error = error
        self.silent = silent
        self.requests: list[tuple[float, Addr]] = []
        self._out: list[tuple[bytes, Addr]] = []

    def receive(self, data: bytes, addr: Addr, now: float) -> bool:
        msg = parse(data)
        self.requests.append((now, addr))
        if self.silent:
            return True
        if self.error is not None:
            answer = StunMessage(BINDING, ERROR, msg.transaction_id, error_code=self.error)
        else:
            answer = StunMessage(BINDING, SUCCESS, msg.transaction_id, xor_mapped_address=addr)
        self._out.append((encode(answer), addr))
        return True


@dataclass
class Sent:
    """One datagram the network carried (or lost)."""

    at: float
    src: Addr
    dst: Addr
    data: bytes
    lost: bool


@dataclass
class SimNet:
    """A simulated network between ICE agents (see the module docstring)."""

    latency: float = 0.01
    jitter: float = 0.0
    seed: int = 0
    drop: Callable[[Addr, Addr, bytes], bool] | None = None
    now: float = 0.0
    agents: dict[Addr, Endpoint] = field(default_factory=dict)
    nat: dict[Addr, Addr] = field(default_factory=dict)
    log: list[Sent] = field(default_factory=list)
    events: dict[int, list[tuple[float, IceEvent]]] = field(default_factory=dict)
    _queue: list[tuple[float, int, Addr, Addr, bytes]] = field(default_factory=list)
    _seq: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def attach(self, agent: Endpoint, addr: Addr) -> None:
        """`agent` receives what is sent to `addr` (its host candidate's address)."""
        self.agents[addr] = agent
        self.events.setdefault(id(agent), [])

    def events_of(self, agent: Endpoint) -> list[IceEvent]:
        """The events `agent` gave so far, in order."""
        return [e for _, e in self.events[id(agent)]]

    def inject(self, src: Addr, dst: Addr, data: bytes) -> None:
        """Deliver `data` from `src` to `dst` after the latency (a stranger's datagram)."""
        self._push(src, dst, data)

    def _push(self, src: Addr, dst: Addr, data: bytes) -> None:
        lost = self.drop is not None and self.drop(src, dst, data)
        self.log.append(Sent(self.now, src, dst, data, lost))
        if lost:
            return
        delay = self.latency + (self._rng.uniform(0, self.jitter) if self.jitter else 0.0)
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, src, dst, data))

    def flush(self) -> None:
        """Collect what every agent wants to send now, and its events."""
        seen: set[int] = set()
        for addr, agent in list(self.agents.items()):
            if id(agent) in seen:
                continue
            seen.add(id(agent))
            for data, dst in agent.datagrams_to_send(self.now):
                src = self.nat.get(addr, addr)
                self._push(src, dst, data)
            while (ev := agent.next_event()) is not None:
                self.events[id(agent)].append((self.now, ev))

    def _deliver(self, src: Addr, dst: Addr, data: bytes) -> None:
        for inside, outside in self.nat.items():
            if outside == dst:
                dst = inside
                break
        agent = self.agents.get(dst)
        if agent is not None:
            agent.receive(data, src, self.now)

    def step(self) -> bool:
        """Advance to the next wake-up and handle it; False if nothing is left to do."""
        self.flush()
        times = [t for a in set(self.agents.values()) if (t := a.get_timer()) is not None]
        if self._queue:
            times.append(self._queue[0][0])
        if not times:
            return False
        self.now = max(self.now, min(times))
        while self._queue and self._queue[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self._queue)
            self._deliver(src, dst, data)
        for agent in set(self.agents.values()):
            t = agent.get_timer()
            if t is not None and t <= self.now:
                agent.handle_timer(self.now)
                # what was due is done: a timer still due now would spin the caller's loop
                t = agent.get_timer()
                assert t is None or t > self.now, f"{agent} wants a timer at {t} <= {self.now}"
        self.flush()
        return True

    def run_until(self, cond: Callable[[], bool], timeout: float, max_steps: int = 200000) -> bool:
        """Step until `cond()` or `timeout` simulated seconds from now; returns `cond()`."""
        end = self.now + timeout
        for _ in range(max_steps):
            if cond():
                return True
            if not self.step() or self.now > end:
                break
        return cond()

    def run_for(self, seconds: float) -> None:
        """Step for `seconds` of simulated time."""
        end = self.now + seconds
        while self.now < end:
            times = [t for a in set(self.agents.values()) if (t := a.get_timer()) is not None]
            if self._queue:
                times.append(self._queue[0][0])
            if not times or min(times) > end:
                self.now = end
                break
            self.step()


def stun_requests(log: list[Sent], src: Addr | None = None) -> list[Sent]:
    """The STUN requests in `log` (from `src` if given)."""
    out = []
    for s in log:
        if is_stun(s.data) and (src is None or s.src == src):
            msg = parse(s.data)
            if msg.cls == 0:
                out.append(s)
    return out


class UdpIce(asyncio.DatagramProtocol):
    """An `IceAgent` on a real UDP socket of the running loop (see the module docstring)."""

    def __init__(self, agent: IceAgent) -> None:
        self.agent = agent
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.events: list[IceEvent] = []
        self.other: list[tuple[bytes, Any]] = []
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, agent: IceAgent, host: str = "127.0.0.1") -> UdpIce:
        """Bind a socket on `host` (a free port) for `agent` and add the host candidate."""
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: cls(agent), local_addr=(host, 0))
        assert proto.transport is not None
        port = proto.transport.get_extra_info("sockname")[1]
        agent.add_host_candidate(host, port)
        return proto

    @property
    def address(self) -> Addr:
        """The socket's (ip, port)."""
        assert self.transport is not None
        sockname = self.transport.get_extra_info("sockname")
        return sockname[0], sockname[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.agent.receive(data, addr, self.loop.time()):
            self.other.append((data, addr))
        self.pump()

    def pump(self) -> None:
        """Send what the agent has, collect its events, re-arm its timer."""
        now = self.loop.time()
        if self.transport is not None and not self.transport.is_closing():
            for data, dst in self.agent.datagrams_to_send(now):
                self.transport.sendto(data, dst)
        while (ev := self.agent.next_event()) is not None:
            self.events.append(ev)
            wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        t = self.agent.get_timer()
        if t is not None:
            self._timer = self.loop.call_at(t, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.agent.handle_timer(self.loop.time())
        self.pump()

    def close(self) -> None:
        """Close the agent and the socket; cancel the timer."""
        self.agent.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()
