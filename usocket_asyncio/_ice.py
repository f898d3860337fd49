"""The ICE agent (RFC 8445, full agent; RFC 7675 consent), sans-IO: one stream, one component.

Theory of operation
-------------------
An `IceAgent` runs ICE for one media stream with RTP and RTCP multiplexed (one component)
on one UDP socket that its caller owns. It owns no socket, no loop and no clock: every
call that depends on time takes `now` (seconds on the caller's clock: the loop's, or a
simulated one in the tests), and the agent says when it next wants to be woken
(`get_timer`, an absolute time, or None). It is driven like `_dtls_core.DtlsConnection`:

    agent = IceAgent(controlling)                  # local_ufrag / local_pwd for the SDP
    agent.set_role(controlling)                    # optional: the role, if known only later
    agent.add_host_candidate("192.0.2.1", port)    # each local address the socket serves
    agent.gather_srflx(server, base, now)          # optional: a STUN Binding to a server
    agent.set_remote(ufrag, pwd, candidates, lite=..., now=now)   # checks start
    agent.receive(data, addr, now)                 # each datagram of the socket: True if STUN
    agent.handle_timer(now)                        # once now >= agent.get_timer()
    for data, addr in agent.datagrams_to_send(now): send data to addr from the socket
    while (ev := agent.next_event()) is not None: handle ev
    agent.selected                                 # where media goes: (ip, port) or None

Events: `CandidateGathered` / `GatherFailed` (one per `gather_srflx`), `RoleChanged`
(a role conflict, or an ice-lite remote, made this side change role), `PairSelected`
(media may flow to `pair.remote`; on the controlled side it may come again when the
controlling agent nominates a better pair), then at most one of `IceFailed` or
`ConsentLost`. `IceFailed`: no pair was selected within `CONNECT_TIMEOUT` of
`set_remote`, or every pair failed and `FAIL_GRACE` has passed since `set_remote` (until
then the peer's checks may still bring peer-reflexive pairs). `ConsentLost`: the
selected remote stopped answering for `consent_timeout`. After either the agent is
finished: it answers nothing and sends nothing more, like after `close`. Candidates may
be added after `set_remote` (`add_remote_candidate`), but once the agent has failed they
come too late: a caller that trickles candidates gives them within `FAIL_GRACE` (the media
adapter gives them all at once).

Who owns each datagram. Incoming: `receive` looks at the datagram before it returns and
keeps nothing of it but what it learned (a candidate, a pair state). Outgoing: requests
and answers wait in the agent until the caller takes them (`datagrams_to_send`); a check
request's bytes are also kept in its transaction, for retransmission.

Pairs. The socket is one, so the agent sends every check from it whatever the local
candidate: a pair is (the base, a remote candidate), the base being the first host
candidate of the remote's address family; server-reflexive candidates are only
signalled (RFC 8445 §6.1.2.4 replaces them by their base). Pairs are keyed by the remote
address. Pair priority, foundation and the frozen rule are RFC 8445's (§6.1.2.3,
§6.1.2.6): a new pair is Frozen if a pair of its foundation is already Waiting or
In-Progress and none has succeeded, else Waiting; a success unfreezes its foundation;
when nothing is Waiting, the best Frozen pair is checked.

Checks. One new check transaction per `ta` seconds (triggered checks first, then the
best Waiting pair, then the best Frozen one); retransmissions are not paced. A check's
first RTO is max(500 ms, ta x (Waiting + In-Progress pairs)) (RFC 8445 §14.3), doubling
up to `CHECK_RTO_MAX` (or the first RTO, if larger), `CHECK_SENDS` sends in all (11.5 s
with the first RTO at 500 ms); no answer after the last wait means the pair failed. An
answer counts only with MESSAGE-INTEGRITY under the remote password and from the address
the check went to (§7.2.5.2.1). A request from the remote (USERNAME "local:remote", our
password) is answered with XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT; its
source, if unknown, becomes a peer-reflexive remote candidate (priority from PRIORITY),
and the pair gets a triggered check (§7.3.1.4). A request is answered before
`set_remote` too (only our password is needed); its pair waits for the remote password.

Nomination (regular, §8.1.1). The controlling side nominates the best succeeded pair once
no better pair is still to be checked, or `NOMINATION_DELAY` after the first success:
it checks that pair again with USE-CANDIDATE and selects it when that succeeds. The
controlled side selects a succeeded pair that the remote nominated (a USE-CANDIDATE
request; before its own check of the pair succeeded, the selection waits for it); a
better nominated pair replaces it (aggressive nominators). An ice-lite remote sends no
checks: `set_remote(lite=True)` makes this side controlling if it was not.

Role conflicts (§7.3.1.1, §7.2.5.1): a request whose role attribute claims our role is
answered with 487 or makes us switch, by the tie-breakers; a 487 answer to our check
makes us switch (if we still have the role we sent) and check the pair again.

Consent (RFC 7675): on the selected pair a Binding request goes every
`consent_interval` x U(0.8, 1.2) seconds, each a transaction of its own that is not
retransmitted; an authenticated answer from the selected address renews consent; none
for `consent_timeout` seconds ends the agent with `ConsentLost`.

Hostile input, bounded state. A datagram that is not STUN is the caller's (`receive`
returns False). A request that is malformed, lacks USERNAME or MESSAGE-INTEGRITY, names
another ufrag or fails integrity gets no answer and leaves no state; an answer that
matches no transaction or fails integrity is dropped. Each is counted in `stats`.
Remote candidates (`MAX_REMOTE_CANDIDATES` signalled, `MAX_PRFLX` peer-reflexive),
local peer-reflexive candidates (`MAX_LOCAL_PRFLX`) and transactions (`MAX_TRANSACTIONS`)
are capped: past a cap the candidate is dropped (counted), a check waits for a free
transaction slot (counted). The triggered-check queue holds each pair at most once, so
it is bounded by the pairs.
"""

from __future__ import annotations

import functools
import ipaddress
import random
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Final

from ._stun import (
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
from ._types import SocketModeError

HOST: Final = "host"
SRFLX: Final = "srflx"
PRFLX: Final = "prflx"
RELAY: Final = "relay"
TYPE_PREFERENCE: Final = {HOST: 126, PRFLX: 110, SRFLX: 100, RELAY: 0}
"""RFC 8445 §5.1.2.2's recommended type preferences."""

CHECK_RTO_MIN: Final = 0.5
"""The smallest first RTO of a connectivity check (RFC 8445 §14.3), seconds."""
CHECK_RTO_MAX: Final = 2.0
"""The longest wait between two sends of a check, seconds."""
CHECK_SENDS: Final = 7
"""Sends of a check before its pair fails (RFC 8489's Rc): about 11.5 s with the RTOs above."""
GATHER_RTO: Final = 0.5
"""The first RTO of a Binding request to a STUN server (RFC 8489 §6.2.1), seconds."""
GATHER_SENDS: Final = 7
"""Sends of a Binding request to a STUN server (Rc)."""
GATHER_LAST_WAIT: Final = 16 * GATHER_RTO
"""The wait after the last send to a STUN server (Rm x RTO): 39.5 s in all."""
NOMINATION_DELAY: Final = 1.0
"""Seconds after the first succeeded pair after which the controlling side nominates the
best succeeded pair even if better pairs are still being checked."""
CONNECT_TIMEOUT: Final = 30.0
"""Seconds after `set_remote` within which a pair must be selected, else `IceFailed`."""
FAIL_GRACE: Final = 11.5
"""Seconds after `set_remote` before "every pair failed" ends the agent: the peer's own
checks (which bring new, peer-reflexive pairs) have had a check's lifetime to arrive."""
MAX_REMOTE_CANDIDATES: Final = 64
"""Signalled remote candidates kept; more are dropped (counted)."""
MAX_PRFLX: Final = 16
"""Peer-reflexive remote candidates kept; more are dropped (counted)."""
MAX_LOCAL_PRFLX: Final = 8
"""Peer-reflexive local candidates kept; more are dropped (counted)."""
MAX_TRANSACTIONS: Final = 64
"""STUN transactions in flight; a check waits for a slot, a gather fails."""

_ICE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

SOURCE_CACHE: Final = 256
"""Addresses whose normalized form `normalize_ip` keeps (the least recently used go)."""

# pair states (RFC 8445 §6.1.2.6)
FROZEN: Final = 0
WAITING: Final = 1
IN_PROGRESS: Final = 2
SUCCEEDED: Final = 3
FAILED: Final = 4

# transaction kinds
_CHECK: Final = 0
_CONSENT: Final = 1
_GATHER: Final = 2

# agent states
_RUNNING: Final = 0
_DONE: Final = 1  # closed, failed or consent lost: nothing more

STATS_KEYS: Final = (
    "not_stun_parsed",
    "bad_request",
    "unknown_username",
    "bad_integrity",
    "unknown_attribute",
    "role_conflict_487",
    "unmatched_response",
    "bad_response",
    "remote_candidates_dropped",
    "prflx_dropped",
    "local_prflx_dropped",
    "checks_deferred",
    "checks_sent",
    "retransmissions",
    "requests_answered",
)
"""The counters of `IceAgent.stats`, all present from the start:

- dropped input: `not_stun_parsed` (looked like STUN, did not parse), `bad_request` (a
  request without USERNAME or MESSAGE-INTEGRITY, or not a Binding), `unknown_username`,
  `bad_integrity` (a request or an answer), `unknown_attribute` (a request answered
  with 420), `role_conflict_487` (a request answered with 487), `unmatched_response`
  (no such transaction), `bad_response` (from another address than the request went
  to, an unknown required attribute, or an error other than 487: the pair failed);
- caps: `remote_candidates_dropped`, `prflx_dropped`, `local_prflx_dropped`,
  `checks_deferred` (a check or consent check waited for a transaction slot);
- activity: `checks_sent`, `retransmissions`, `requests_answered`.
"""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ICE candidate (component 1: RTP and RTCP multiplexed)."""

    addr: str
    port: int
    type: str
    priority: int
    foundation: str
    related_addr: str | None = None
    related_port: int = 0
    component: int = 1

    @property
    def address(self) -> tuple[str, int]:
        """(addr, port)."""
        return self.addr, self.port


class IceEvent:
    """Something the caller learns from `IceAgent.next_event`."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PairSelected(IceEvent):
    """Media may flow: to `remote`, from the socket of `local` (a host candidate)."""

    local: Candidate
    remote: Candidate


@dataclass(frozen=True, slots=True)
class IceFailed(IceEvent):
    """No pair could be selected: the agent is finished."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConsentLost(IceEvent):
    """The selected remote stopped answering consent checks: stop sending to it."""

    remote: tuple[str, int]


@dataclass(frozen=True, slots=True)
class RoleChanged(IceEvent):
    """This side's role changed (role conflict, or an ice-lite remote)."""

    controlling: bool


@dataclass(frozen=True, slots=True)
class CandidateGathered(IceEvent):
    """A STUN server told this side its server-reflexive address."""

    candidate: Candidate


@dataclass(frozen=True, slots=True)
class GatherFailed(IceEvent):
    """A STUN server gave no usable answer."""

    server: tuple[str, int]
    reason: str


# --------------------------------------------------------------------------- helpers


def candidate_priority(ctype: str, local_pref: int = 65535, component: int = 1) -> int:
    """RFC 8445 §5.1.2.1: 2^24 x type preference + 2^8 x local preference + 256 - component."""
    return (TYPE_PREFERENCE[ctype] << 24) | (local_pref << 8) | (256 - component)


def pair_priority(controlling: int, controlled: int) -> int:
    """RFC 8445 §6.1.2.3, from the controlling and the controlled agent's candidate
    priorities."""
    g, d = controlling, controlled
    return (min(g, d) << 32) + 2 * max(g, d) + (1 if g > d else 0)


@functools.lru_cache(maxsize=SOURCE_CACHE)
def normalize_ip(addr: str) -> str:
    """`addr` in `ipaddress`'s compressed form; an IPv4-mapped IPv6 address as IPv4.

    Every STUN datagram's source goes through here (consent: one answer per stream every
    5 s), and a source is nearly always one seen before: the last `SOURCE_CACHE` answers
    are kept, the parsing (about a third of a consent answer's handling) is done once.

    Raises:
        ValueError: `addr` is not an IP literal.
    """
    ip = ipaddress.ip_address(addr.strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _family(addr: str) -> int:
    return 6 if ":" in addr else 4


def _ice_string(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_ICE_CHARS) for _ in range(n))


def _check_ice_string(value: str, what: str, least: int) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not least <= len(value) <= 256 or any(c not in _ICE_CHARS for c in value):
        raise ValueError(
            f"{what} must be {least} to 256 characters of A-Z a-z 0-9 + / (RFC 8839), not {value!r}"
        )


class _Pair:
    __slots__ = (
        "foundation",
        "local",
        "nominated",
        "nominating",
        "priority",
        "remote",
        "state",
        "triggered",
        "tx",
    )

    def __init__(self, local: Candidate, remote: Candidate, controlling: bool) -> None:
        self.local = local
        self.remote = remote
        self.foundation = f"{local.foundation}:{remote.foundation}"
        self.state = FROZEN
        self.priority = 0
        self.nominated = False  # the remote nominated it (we are controlled)
        self.nominating = False  # we nominate it (we are controlling)
        self.triggered = False  # in the triggered-check queue
        self.tx: bytes | None = None  # the check in flight
        self.set_priority(controlling)

    def set_priority(self, controlling: bool) -> None:
        lp, rp = self.local.priority, self.remote.priority
        self.priority = pair_priority(lp, rp) if controlling else pair_priority(rp, lp)


class _Transaction:
    __slots__ = (
        "base",
        "controlling",
        "data",
        "dest",
        "interval",
        "kind",
        "last_wait",
        "next_at",
        "pair",
        "rto_max",
        "sends_left",
        "started",
        "use_candidate",
    )

    def __init__(self, kind: int, data: bytes, dest: tuple[str, int], now: float) -> None:
        self.kind = kind
        self.data = data
        self.dest = dest
        self.started = now
        self.next_at = now
        self.interval = 0.0
        self.rto_max = 1e9
        self.last_wait = 0.0
        self.sends_left = 0
        self.pair: _Pair | None = None
        self.base: Candidate | None = None
        self.controlling = False
        self.use_candidate = False


# --------------------------------------------------------------------------- the agent


class IceAgent:
    """A full ICE agent for one component, sans-IO (see the module's theory of operation).

    Args:
        controlling: start as the controlling agent (the offerer, usually).
        ufrag: the local username fragment (4-256 ice-chars); random (8) if None.
        pwd: the local password (22-256 ice-chars); random (24) if None.
        tie_breaker: the 64-bit role tie-breaker; random if None.
        rng: the randomness (ufrag, pwd, tie-breaker, transaction ids, consent jitter);
            `secrets.SystemRandom()` if None; a seeded `random.Random` in tests.
        ta: seconds between two new check transactions (RFC 8445's Ta).
        consent_interval: mean seconds between two consent checks (RFC 7675).
        consent_timeout: seconds without an answer after which consent is lost.
    """

    __slots__ = (
        "_connect_deadline",
        "_consent_next",
        "_consent_ok",
        "_events",
        "_first_valid",
        "_foundations",
        "_hosts",
        "_last_check",
        "_local",
        "_local_key",
        "_n_prflx",
        "_n_signalled",
        "_out",
        "_pairs",
        "_remote",
        "_remote_at",
        "_remote_key",
        "_remote_pwd",
        "_remote_ufrag",
        "_rng",
        "_selected",
        "_state",
        "_transactions",
        "_triggered",
        "consent_interval",
        "consent_timeout",
        "controlling",
        "local_pwd",
        "local_ufrag",
        "stats",
        "ta",
        "tie_breaker",
    )

    def __init__(
        self,
        controlling: bool,
        *,
        ufrag: str | None = None,
        pwd: str | None = None,
        tie_breaker: int | None = None,
        rng: random.Random | None = None,
        ta: float = 0.05,
        consent_interval: float = 5.0,
        consent_timeout: float = 30.0,
    ) -> None:
        self._rng = rng if rng is not None else secrets.SystemRandom()
        if ufrag is None:
            ufrag = _ice_string(self._rng, 8)
        if pwd is None:
            pwd = _ice_string(self._rng, 24)
        _check_ice_string(ufrag, "ufrag", 4)
        _check_ice_string(pwd, "pwd", 22)
        if tie_breaker is None:
            tie_breaker = self._rng.getrandbits(64)
        if not 0 <= tie_breaker < 1 << 64:
            raise ValueError(f"tie_breaker must be a 64-bit unsigned integer, not {tie_breaker}")
        if not ta > 0 or not consent_interval > 0 or not consent_timeout > 0:
            raise ValueError("ta, consent_interval and consent_timeout must be positive seconds")
        self.controlling = bool(controlling)
        self.local_ufrag = ufrag
        self.local_pwd = pwd
        self.tie_breaker = tie_breaker
        self.ta = ta
        self.consent_interval = consent_interval
        self.consent_timeout = consent_timeout
        self.stats: dict[str, int] = dict.fromkeys(STATS_KEYS, 0)
        self._local_key = pwd.encode()
        self._remote_ufrag: str | None = None
        self._remote_pwd: str | None = None
        self._remote_key = b""
        self._local: list[Candidate] = []
        self._hosts: list[Candidate] = []
        self._foundations: dict[tuple[str, str, str], str] = {}
        self._remote: dict[tuple[str, int], Candidate] = {}
        self._n_signalled = 0
        self._n_prflx = 0
        self._pairs: dict[tuple[str, int], _Pair] = {}
        self._triggered: deque[_Pair] = deque()
        self._transactions: dict[bytes, _Transaction] = {}
        self._out: list[tuple[bytes, tuple[str, int]]] = []
        self._events: deque[IceEvent] = deque()
        self._selected: _Pair | None = None
        self._state = _RUNNING
        self._last_check = 0.0
        self._first_valid: float | None = None
        self._connect_deadline: float | None = None
        self._remote_at = 0.0
        self._consent_next = 0.0
        self._consent_ok = 0.0

    # ------------------------------------------------------------------ public: local side

    @property
    def local_candidates(self) -> list[Candidate]:
        """The local candidates: host, then server- and peer-reflexive as learned."""
        return list(self._local)

    @property
    def remote_candidates(self) -> list[Candidate]:
        """The remote candidates kept: signalled, then peer-reflexive as learned."""
        return list(self._remote.values())

    @property
    def selected(self) -> tuple[str, int] | None:
        """The remote address media goes to, once a pair is selected; else None."""
        return self._selected.remote.address if self._selected is not None else None

    @property
    def selected_pair(self) -> tuple[Candidate, Candidate] | None:
        """(local, remote) of the selected pair, or None."""
        p = self._selected
        return (p.local, p.remote) if p is not None else None

    @property
    def finished(self) -> bool:
        """Closed, failed or consent lost: the agent does nothing more."""
        return self._state == _DONE

    def add_host_candidate(self, addr: str, port: int) -> Candidate:
        """Add a host candidate: a local address the caller's socket receives on.

        The first host candidate of an address family is the base its pairs are checked
        from. Local preference falls by one per host candidate, in the order added.

        Raises:
            ValueError: `addr` is not an IP literal, or `port` is not 1..65535.
        """
        ip = self._ip_arg(addr, "addr")
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, not {port}")
        for c in self._hosts:
            if c.address == (ip, port):
                return c
        prio = candidate_priority(HOST, 65535 - len(self._hosts))
        cand = Candidate(ip, port, HOST, prio, self._foundation(HOST, ip, ""))
        self._hosts.append(cand)
        self._local.append(cand)
        for remote in list(self._remote.values()):
            self._ensure_pair(remote)
        return cand

    def gather_srflx(self, server: tuple[str, int], base: tuple[str, int], now: float) -> None:
        """Ask a STUN server (an IP literal and port) for `base`'s server-reflexive address.

        `base` is a host candidate's (addr, port). Leads to exactly one `CandidateGathered`
        (the candidate is also added to `local_candidates` unless it equals its base, as on
        loopback) or `GatherFailed` (an error answer, or none after 39.5 s of RFC 8489
        retransmissions), unless the agent is finished first (closed, failed: then
        nothing). Not paced by `ta`: a few servers, once.

        Raises:
            ValueError: `base` is not a host candidate, or `server` not an IP literal.
        """
        srv = (self._ip_arg(server[0], "server"), int(server[1]))
        bip = self._ip_arg(base[0], "base")
        host = next((c for c in self._hosts if c.address == (bip, base[1])), None)
        if host is None:
            raise ValueError(
                f"base {base} is not a host candidate: add it with add_host_candidate first"
            )
        if self._state == _DONE:
            return
        if len(self._transactions) >= MAX_TRANSACTIONS:
            self._events.append(GatherFailed(srv, "too many STUN transactions in flight"))
            return
        tid = self._tid()
        data = encode(StunMessage(BINDING, REQUEST, tid))
        tx = _Transaction(_GATHER, data, srv, now)
        tx.base = host
        tx.interval = GATHER_RTO
        tx.sends_left = GATHER_SENDS
        tx.last_wait = GATHER_LAST_WAIT
        self._transactions[tid] = tx
        self._send_tx(tx, now)

    def set_role(self, controlling: bool) -> None:
        """Set this side's role before `set_remote` (an app that gathers first and learns
        its role at connect time). No event: `RoleChanged` reports only the changes the
        agent makes itself (a role conflict, an ice-lite remote).

        Raises:
            SocketModeError: after `set_remote`, when checks may have started: the role is
                then the agent's to change (by the tie-breakers).
        """
        if self._remote_ufrag is not None:
            raise SocketModeError(
                "set_role after set_remote: give the role before the remote description "
                "(or at construction); afterwards role conflicts are resolved by the agent"
            )
        self._set_role(bool(controlling), event=False)

    # ------------------------------------------------------------------ public: remote side

    def set_remote(
        self,
        ufrag: str,
        pwd: str,
        candidates: list[Candidate],
        *,
        lite: bool = False,
        now: float,
    ) -> None:
        """Give the remote's credentials and candidates: connectivity checks start.

        An ice-lite remote (`lite`) sends no checks, so this side becomes controlling
        (`RoleChanged`) if it was not. Leads to `PairSelected` (maybe `RoleChanged` first),
        or `IceFailed`.

        Raises:
            ValueError: empty credentials, or new ones after the first call (an ICE
                restart, which this agent does not do: make a new agent).
        """
        if not ufrag or not pwd:
            raise ValueError("the remote ufrag and pwd must be non-empty (a=ice-ufrag, a=ice-pwd)")
        if self._remote_ufrag is not None and (ufrag, pwd) != (
            self._remote_ufrag,
            self._remote_pwd,
        ):
            raise ValueError("new remote credentials mean an ICE restart: make a new IceAgent")
        first = self._remote_ufrag is None
        self._remote_ufrag = ufrag
        self._remote_pwd = pwd
        self._remote_key = pwd.encode()
        if self._state == _DONE:
            return
        if first:
            self._connect_deadline = now + CONNECT_TIMEOUT
            self._remote_at = now
            self._last_check = now - self.ta  # the first check may go at once
        if lite and not self.controlling:
            self._set_role(True)
        for c in sorted(candidates, key=lambda c: -c.priority):
            self._add_remote(c)

    def add_remote_candidate(self, candidate: Candidate, now: float) -> None:
        """Add one remote candidate (trickled, or learned late); checks it in turn."""
        if self._state != _DONE:
            self._add_remote(candidate)

    # ------------------------------------------------------------------ public: I/O

    def receive(
        self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int], now: float
    ) -> bool:
        """Take one datagram the socket received from `addr`.

        Returns:
            True if it was STUN (RFC 7983 first byte 0..3 and the magic cookie): the
            agent consumed it, whatever it made of it; False otherwise (the caller's).
        """
        if not is_stun(data):
            return False
        if self._state == _DONE:
            return True
        try:
            msg = parse(data)
            src = (normalize_ip(addr[0]), int(addr[1]))
        except (StunError, ValueError):
            self.stats["not_stun_parsed"] += 1
            return True
        if msg.method != BINDING:
            self.stats["bad_request"] += 1
        elif msg.cls == REQUEST:
            self._on_request(msg, src, now)
        elif msg.cls in (SUCCESS, ERROR):
            self._on_response(msg, src, now)
        # a Binding indication is a keepalive: nothing to do
        return True

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        """The datagrams to send now, each with its destination; runs what is due at
        `now` first (as `handle_timer`), so a check that may go now goes."""
        t = self.get_timer()
        if t is not None and t <= now:
            self.handle_timer(now)
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """When the agent next wants `handle_timer` (absolute, the caller's clock), or None."""
        if self._state == _DONE:
            return None
        sel = self._selected
        if sel is not None and not self._triggered:  # connected: consent and its answers
            at = min(self._consent_next, self._consent_ok + self.consent_timeout)
            for tx in self._transactions.values():
                if tx.next_at < at:
                    at = tx.next_at
            return at
        times: list[float] = [tx.next_at for tx in self._transactions.values()]
        if self._remote_pwd is not None and self._check_work():
            times.append(self._last_check + self.ta)
        if sel is not None:
            times.append(self._consent_next)
            times.append(self._consent_ok + self.consent_timeout)
        else:
            if self._connect_deadline is not None:
                times.append(self._connect_deadline)
            nominate_at = self._nomination_at()
            if nominate_at is not None:
                times.append(nominate_at)
            if self._all_failed():
                times.append(self._remote_at + FAIL_GRACE)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Do what is due at `now`: retransmissions, timeouts, the next paced check,
        nomination, consent checks and their expiry, the connect deadline."""
        if self._state == _DONE:
            return
        for tid, tx in list(self._transactions.items()):
            if tx.next_at <= now and tid in self._transactions:
                self._tx_timer(tid, tx, now)
                if self._state == _DONE:
                    return
        self._maybe_nominate(now)
        if self._remote_pwd is not None and self._last_check + self.ta <= now:
            self._pace(now)
        sel = self._selected
        if sel is not None:
            if now >= self._consent_ok + self.consent_timeout:
                self._finish(ConsentLost(sel.remote.address))
                return
            if now >= self._consent_next:
                self._send_consent(sel, now)
        elif self._connect_deadline is not None and now >= self._connect_deadline:
            self._finish(IceFailed(f"no candidate pair selected within {CONNECT_TIMEOUT:g} s"))
        else:
            self._check_failed(now)

    def next_event(self) -> IceEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def close(self) -> None:
        """Stop: nothing more is sent (queued datagrams are dropped), no timer, no event."""
        self._state = _DONE
        self._out.clear()
        self._transactions.clear()
        self._triggered.clear()

    # ------------------------------------------------------------------ candidates, pairs

    def _ip_arg(self, addr: str, what: str) -> str:
        if not isinstance(addr, str):
            raise TypeError(f"{what} must be an IP literal str, not {type(addr).__name__}")
        try:
            return normalize_ip(addr)
        except ValueError:
            raise ValueError(
                f"{what} {addr!r} is not an IP literal: resolve names (and skip mDNS "
                "candidates) before giving them to the ICE agent"
            ) from None

    def _foundation(self, ctype: str, base_ip: str, server: str) -> str:
        key = (ctype, base_ip, server)
        f = self._foundations.get(key)
        if f is None:
            f = self._foundations[key] = str(len(self._foundations) + 1)
        return f

    def _base_for(self, addr: str) -> Candidate | None:
        fam = _family(addr)
        return next((c for c in self._hosts if _family(c.addr) == fam), None)

    def _add_remote(self, cand: Candidate) -> None:
        if cand.component != 1:
            return  # RTP and RTCP multiplexed: component 1 only
        ip = self._ip_arg(cand.addr, "remote candidate addr")
        if ip != cand.addr:
            cand = Candidate(
                ip,
                cand.port,
                cand.type,
                cand.priority,
                cand.foundation,
                cand.related_addr,
                cand.related_port,
            )
        old = self._remote.get(cand.address)
        if old is not None:
            if old.type == PRFLX and cand.type != PRFLX:
                # signalled after its checks taught it: the signalled one replaces it
                self._remote[cand.address] = cand
                self._n_prflx -= 1
                self._n_signalled += 1
                pair = self._pairs.get(cand.address)
                if pair is not None:
                    pair.remote = cand
                    pair.foundation = f"{pair.local.foundation}:{cand.foundation}"
                    pair.set_priority(self.controlling)
            return
        if self._n_signalled >= MAX_REMOTE_CANDIDATES:
            self.stats["remote_candidates_dropped"] += 1
            return
        self._n_signalled += 1
        self._remote[cand.address] = cand
        self._ensure_pair(cand)

    def _ensure_pair(self, remote: Candidate) -> _Pair | None:
        pair = self._pairs.get(remote.address)
        if pair is not None:
            return pair
        base = self._base_for(remote.addr)
        if base is None:
            return None
        pair = _Pair(base, remote, self.controlling)
        kin = [p.state for p in self._pairs.values() if p.foundation == pair.foundation]
        busy = WAITING in kin or IN_PROGRESS in kin
        pair.state = WAITING if SUCCEEDED in kin or not busy else FROZEN
        self._pairs[remote.address] = pair
        return pair

    def _learn_local_prflx(self, mapped: tuple[str, int], pair: _Pair) -> None:
        if any(c.address == mapped for c in self._local):
            return
        if sum(1 for c in self._local if c.type == PRFLX) >= MAX_LOCAL_PRFLX:
            self.stats["local_prflx_dropped"] += 1
            return
        base = pair.local
        self._local.append(
            Candidate(
                mapped[0],
                mapped[1],
                PRFLX,
                self._prflx_priority(base),  # what the check said in PRIORITY
                self._foundation(PRFLX, base.addr, ""),
                base.addr,
                base.port,
            )
        )

    # ------------------------------------------------------------------ incoming

    def _on_request(self, msg: StunMessage, src: tuple[str, int], now: float) -> None:
        user = msg.username
        if user is None or msg.integrity_at < 0:
            self.stats["bad_request"] += 1
            return
        left, sep, right = user.partition(":")
        if (
            not sep
            or left != self.local_ufrag
            or (self._remote_ufrag is not None and right != self._remote_ufrag)
        ):
            self.stats["unknown_username"] += 1
            return
        if not check_integrity(msg, self._local_key):
            self.stats["bad_integrity"] += 1
            return
        if msg.unknown_required:
            self.stats["unknown_attribute"] += 1
            self._answer(msg, src, error=(420, "Unknown Attribute"))
            return
        # role conflict, RFC 8445 §7.3.1.1
        if self.controlling and msg.ice_controlling is not None:
            if self.tie_breaker >= msg.ice_controlling:
                self.stats["role_conflict_487"] += 1
                self._answer(msg, src, error=(487, "Role Conflict"))
                return
            self._set_role(False)
        elif not self.controlling and msg.ice_controlled is not None:
            if self.tie_breaker >= msg.ice_controlled:
                self._set_role(True)
            else:
                self.stats["role_conflict_487"] += 1
                self._answer(msg, src, error=(487, "Role Conflict"))
                return
        self._answer(msg, src)
        remote = self._remote.get(src)
        if remote is None:
            if self._n_prflx >= MAX_PRFLX:
                self.stats["prflx_dropped"] += 1
                return
            self._n_prflx += 1
            prio = msg.priority if msg.priority is not None else candidate_priority(PRFLX)
            remote = Candidate(src[0], src[1], PRFLX, prio, f"prflx#{self._n_prflx}")
            self._remote[src] = remote
        pair = self._ensure_pair(remote)
        if pair is None:
            return
        if pair.state in (FROZEN, WAITING, FAILED):
            pair.state = WAITING
            self._trigger(pair)
        if msg.use_candidate and not self.controlling:
            pair.nominated = True
            if pair.state == SUCCEEDED:
                self._select(pair, now)

    def _answer(
        self, req: StunMessage, src: tuple[str, int], error: tuple[int, str] | None = None
    ) -> None:
        if error is None:
            resp = StunMessage(BINDING, SUCCESS, req.transaction_id, xor_mapped_address=src)
        else:
            resp = StunMessage(BINDING, ERROR, req.transaction_id, error_code=error)
            if error[0] == 420:
                resp.unknown_attributes = req.unknown_required[:16]
        self._out.append((encode(resp, self._local_key), src))
        self.stats["requests_answered"] += 1

    def _on_response(self, msg: StunMessage, src: tuple[str, int], now: float) -> None:
        tx = self._transactions.get(msg.transaction_id)
        if tx is None:
            self.stats["unmatched_response"] += 1
            return
        if tx.kind == _GATHER:
            self._on_gather_response(msg, src, tx)
            return
        if not check_integrity(msg, self._remote_key):
            self.stats["bad_integrity"] += 1
            return
        del self._transactions[msg.transaction_id]
        pair = tx.pair
        assert pair is not None
        if tx.kind == _CONSENT:
            if msg.cls == SUCCESS and src == tx.dest and pair is self._selected:
                self._consent_ok = max(self._consent_ok, now)
            return
        if pair.tx == msg.transaction_id:
            pair.tx = None
        if src != tx.dest or msg.unknown_required:
            self.stats["bad_response"] += 1
            self._pair_failed(pair, now)
            return
        if msg.cls == ERROR:
            code = msg.error_code[0] if msg.error_code is not None else 0
            if code == 487:
                if self.controlling == tx.controlling:
                    self._set_role(not tx.controlling)
                pair.state = WAITING
                self._trigger(pair)
            else:
                self.stats["bad_response"] += 1
                self._pair_failed(pair, now)
            return
        # success
        if msg.xor_mapped_address is not None:
            self._learn_local_prflx(msg.xor_mapped_address, pair)
        pair.state = SUCCEEDED
        if self._first_valid is None:
            self._first_valid = now
        for p in self._pairs.values():
            if p.state == FROZEN and p.foundation == pair.foundation:
                p.state = WAITING
        if tx.use_candidate and self.controlling:
            pair.nominating = False
            self._select(pair, now)
        elif pair.nominated and not self.controlling:
            self._select(pair, now)
        elif pair is self._selected:
            self._consent_ok = max(self._consent_ok, now)
        self._maybe_nominate(now)

    def _on_gather_response(self, msg: StunMessage, src: tuple[str, int], tx: _Transaction) -> None:
        if src != tx.dest:
            self.stats["bad_response"] += 1
            return
        del self._transactions[msg.transaction_id]
        server = tx.dest
        if msg.unknown_required:
            self._events.append(GatherFailed(server, "an answer with unknown attributes"))
            return
        if msg.cls == ERROR:
            code, reason = msg.error_code if msg.error_code is not None else (0, "")
            self._events.append(GatherFailed(server, f"error {code} {reason}".rstrip()))
            return
        mapped = msg.xor_mapped_address or msg.mapped_address
        if mapped is None:
            self._events.append(GatherFailed(server, "an answer without XOR-MAPPED-ADDRESS"))
            return
        base = tx.base
        assert base is not None
        cand = Candidate(
            mapped[0],
            mapped[1],
            SRFLX,
            candidate_priority(SRFLX, (base.priority >> 8) & 0xFFFF),
            self._foundation(SRFLX, base.addr, server[0]),
            base.addr,
            base.port,
        )
        if mapped != base.address and all(
            c.address != mapped or c.type != SRFLX for c in self._local
        ):
            self._local.append(cand)
        self._events.append(CandidateGathered(cand))

    # ------------------------------------------------------------------ checks

    def _check_work(self) -> bool:
        if self._triggered:
            return True
        if self._selected is not None:
            return False
        return any(p.state in (WAITING, FROZEN) for p in self._pairs.values())

    def _trigger(self, pair: _Pair, first: bool = False) -> None:
        if pair.triggered:
            if first:
                self._triggered.remove(pair)
                self._triggered.appendleft(pair)
            return
        pair.triggered = True
        if first:
            self._triggered.appendleft(pair)
        else:
            self._triggered.append(pair)

    def _pace(self, now: float) -> None:
        pair: _Pair | None = None
        while self._triggered:
            p = self._triggered[0]
            if p.state in (IN_PROGRESS, SUCCEEDED) and not p.nominating:
                self._triggered.popleft()
                p.triggered = False
                continue
            pair = p
            break
        if pair is None and self._selected is None:
            ready = [p for p in self._pairs.values() if p.state == WAITING]
            if not ready:
                ready = [p for p in self._pairs.values() if p.state == FROZEN]
            if ready:
                pair = max(ready, key=lambda p: p.priority)
        if pair is None:
            return
        if len(self._transactions) >= MAX_TRANSACTIONS:
            self.stats["checks_deferred"] += 1
            self._last_check = now
            return
        if pair.triggered:
            self._triggered.popleft()
            pair.triggered = False
        self._start_check(pair, now)

    def _start_check(self, pair: _Pair, now: float) -> None:
        if pair.tx is not None:
            self._transactions.pop(pair.tx, None)
        tid = self._tid()
        use = pair.nominating and self.controlling
        data = self._request(tid, pair, use)
        tx = _Transaction(_CHECK, data, pair.remote.address, now)
        tx.pair = pair
        tx.controlling = self.controlling
        tx.use_candidate = use
        busy = sum(1 for p in self._pairs.values() if p.state in (WAITING, IN_PROGRESS))
        tx.interval = max(CHECK_RTO_MIN, self.ta * busy)
        tx.rto_max = max(CHECK_RTO_MAX, tx.interval)
        tx.sends_left = CHECK_SENDS
        tx.last_wait = 0.0
        self._transactions[tid] = tx
        pair.tx = tid
        pair.state = IN_PROGRESS
        self._last_check = now
        self.stats["checks_sent"] += 1
        self._send_tx(tx, now)

    def _request(self, tid: bytes, pair: _Pair, use_candidate: bool) -> bytes:
        req = StunMessage(
            BINDING,
            REQUEST,
            tid,
            username=f"{self._remote_ufrag}:{self.local_ufrag}",
            priority=self._prflx_priority(pair.local),
            use_candidate=use_candidate,
        )
        if self.controlling:
            req.ice_controlling = self.tie_breaker
        else:
            req.ice_controlled = self.tie_breaker
        return encode(req, self._remote_key)

    @staticmethod
    def _prflx_priority(base: Candidate) -> int:
        """The PRIORITY of a check from `base`: a peer-reflexive candidate's priority with
        the base's local preference (RFC 8445 §7.1.1)."""
        return candidate_priority(PRFLX, (base.priority >> 8) & 0xFFFF)

    def _send_tx(self, tx: _Transaction, now: float) -> None:
        self._out.append((tx.data, tx.dest))
        tx.sends_left -= 1
        if tx.sends_left > 0:
            tx.next_at = now + tx.interval
            tx.interval = min(tx.interval * 2, tx.rto_max)
        else:
            tx.next_at = now + (tx.last_wait or tx.interval)

    def _tx_timer(self, tid: bytes, tx: _Transaction, now: float) -> None:
        if tx.sends_left > 0:
            self.stats["retransmissions"] += 1
            self._send_tx(tx, now)
            return
        del self._transactions[tid]
        if tx.kind == _GATHER:
            waited = now - tx.started
            self._events.append(GatherFailed(tx.dest, f"no answer in {waited:.1f} s"))
        elif tx.kind == _CHECK and tx.pair is not None and tx.pair.tx == tid:
            tx.pair.tx = None
            self._pair_failed(tx.pair, now)

    def _pair_failed(self, pair: _Pair, now: float) -> None:
        pair.state = FAILED
        pair.nominating = False
        if pair is not self._selected:  # (a late check of the selected pair: consent decides)
            self._check_failed(now)

    def _all_failed(self) -> bool:
        return (
            self._selected is None
            and bool(self._pairs)
            and not self._triggered
            and all(p.state == FAILED for p in self._pairs.values())
        )

    def _check_failed(self, now: float) -> None:
        if self._all_failed() and now >= self._remote_at + FAIL_GRACE:
            self._finish(IceFailed(f"all {len(self._pairs)} candidate pairs failed"))

    # ------------------------------------------------------------------ roles, nomination

    def _set_role(self, controlling: bool, event: bool = True) -> None:
        if controlling == self.controlling:
            return
        self.controlling = controlling
        for p in self._pairs.values():
            p.set_priority(controlling)
            p.nominating = False
            p.nominated = False
        if event:
            self._events.append(RoleChanged(controlling))

    def _nominating(self) -> bool:
        return any(p.nominating for p in self._pairs.values())

    def _nomination_at(self) -> float | None:
        """When the controlling side nominates at the latest, if it has a pair to nominate
        and is not nominating one already."""
        if not self.controlling or self._selected is not None or self._first_valid is None:
            return None
        if self._nominating() or all(p.state != SUCCEEDED for p in self._pairs.values()):
            return None
        return self._first_valid + NOMINATION_DELAY

    def _maybe_nominate(self, now: float) -> None:
        deadline = self._nomination_at()
        if deadline is None:
            return
        best = max(
            (p for p in self._pairs.values() if p.state == SUCCEEDED), key=lambda p: p.priority
        )
        better_pending = any(
            p.state in (FROZEN, WAITING, IN_PROGRESS) and p.priority > best.priority
            for p in self._pairs.values()
        )
        if better_pending and now < deadline:
            return
        best.nominating = True
        self._trigger(best, first=True)

    def _select(self, pair: _Pair, now: float) -> None:
        old = self._selected
        if old is pair:
            return
        if old is not None and (self.controlling or pair.priority <= old.priority):
            return
        self._selected = pair
        self._consent_ok = now
        if old is None:
            self._consent_next = now + self._consent_wait()
        self._events.append(PairSelected(pair.local, pair.remote))

    # ------------------------------------------------------------------ consent

    def _consent_wait(self) -> float:
        return self.consent_interval * self._rng.uniform(0.8, 1.2)

    def _send_consent(self, pair: _Pair, now: float) -> None:
        self._consent_next = now + self._consent_wait()
        if len(self._transactions) >= MAX_TRANSACTIONS:
            self.stats["checks_deferred"] += 1
            return
        tid = self._tid()
        tx = _Transaction(_CONSENT, self._request(tid, pair, False), pair.remote.address, now)
        tx.pair = pair
        tx.controlling = self.controlling
        tx.sends_left = 1
        tx.last_wait = self.consent_timeout
        self._transactions[tid] = tx
        self._send_tx(tx, now)

    # ------------------------------------------------------------------ misc

    def _tid(self) -> bytes:
        while True:
            tid = self._rng.getrandbits(96).to_bytes(12, "big")
            if tid not in self._transactions:
                return tid

    def _finish(self, event: IceEvent) -> None:
        self._events.append(event)
        self._selected = None
        self._state = _DONE
        self._transactions.clear()
        self._triggered.clear()
