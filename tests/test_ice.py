"""The sans-IO ICE agent (`_ice.py`) on a simulated clock: agents back to back through
`SimNet` (no loop, no socket), with loss, reordering, a NAT, an ice-lite peer, a STUN
server and strangers."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit.ice import LitePeer, SimNet, StunServerPeer, stun_requests

from usocket_asyncio._ice import (
    FAILED,
    FROZEN,
    IN_PROGRESS,
    MAX_LOCAL_PRFLX,
    MAX_PRFLX,
    MAX_REMOTE_CANDIDATES,
    MAX_TRANSACTIONS,
    WAITING,
    Candidate,
    CandidateGathered,
    ConsentLost,
    GatherFailed,
    IceAgent,
    IceEvent,
    IceFailed,
    PairSelected,
    RoleChanged,
    candidate_priority,
    normalize_ip,
    pair_priority,
)
from usocket_asyncio._ice import (
    SUCCEEDED as PAIR_SUCCEEDED,
)
from usocket_asyncio._stun import (
    BINDING,
    ERROR,
    REQUEST,
    SUCCESS,
    StunMessage,
    check_integrity,
    encode,
    parse,
)
from usocket_asyncio._types import SocketModeError

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)
NAT_A = ("198.51.100.7", 40000)
SERVER = ("192.0.2.100", 3478)

E = TypeVar("E", bound=IceEvent)

SETTINGS = settings(
    derandomize=True,  # seeded: the same examples on every run
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def make_pair(
    a_controlling: bool = True,
    b_controlling: bool = False,
    net: SimNet | None = None,
    a_tie: int | None = None,
    b_tie: int | None = None,
) -> tuple[SimNet, IceAgent, IceAgent]:
    """Two agents on `net`, each with one host candidate, not yet told of each other."""
    net = net if net is not None else SimNet()
    a = IceAgent(a_controlling, rng=random.Random(1), tie_breaker=a_tie)
    b = IceAgent(b_controlling, rng=random.Random(2), tie_breaker=b_tie)
    net.attach(a, a.add_host_candidate(*A).address)
    net.attach(b, b.add_host_candidate(*B).address)
    return net, a, b


def introduce(net: SimNet, a: IceAgent, b: IceAgent) -> None:
    """Each agent learns the other's credentials and candidates (the SDP exchange)."""
    a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates, now=net.now)
    b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates, now=net.now)


def both_selected(a: IceAgent, b: IceAgent) -> bool:
    return a.selected is not None and b.selected is not None


def of_type(events: list[IceEvent], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def check_from(to: IceAgent, ufrag: str, *, pwd: str | None = None, **attrs: object) -> bytes:
    """A connectivity check to `to` as a peer with `ufrag` would send it (signed with
    `to`'s password unless `pwd` is given)."""
    msg = StunMessage(
        BINDING,
        REQUEST,
        random.Random(len(ufrag) + len(attrs)).randbytes(12),
        username=f"{to.local_ufrag}:{ufrag}",
        priority=candidate_priority("prflx"),
        ice_controlling=5,
    )
    for k, v in attrs.items():
        setattr(msg, k, v)
    return encode(msg, (pwd if pwd is not None else to.local_pwd).encode())


# --------------------------------------------------------------------------- basics


@pytest.mark.parametrize("a_controlling", [True, False])
def test_host_pair_selected_both_roles(a_controlling: bool) -> None:
    net, a, b = make_pair(a_controlling, not a_controlling)
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    assert a.selected == B and b.selected == A
    assert net.now < 0.1  # a check and its answer (20 ms), the nominating one: no waiting
    for me, other in ((a, B), (b, A)):
        (ev,) = of_type(net.events_of(me), PairSelected)
        assert isinstance(ev, PairSelected) and ev.remote.address == other
        assert ev.local.type == "host" and me.selected_pair == (ev.local, ev.remote)
        assert me.stats["retransmissions"] == 0
        assert not of_type(net.events_of(me), RoleChanged)
    assert a.controlling == a_controlling and b.controlling != a_controlling


def test_regular_nomination() -> None:
    """The controlling side checks first without USE-CANDIDATE, then nominates the pair that
    succeeded with a second check that carries it; the controlled side selects on that."""
    net, a, b = make_pair()
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    from_a = [parse(s.data) for s in stun_requests(net.log, A)]
    assert [m.use_candidate for m in from_a[:2]] == [False, True]
    assert all(m.ice_controlling == a.tie_breaker for m in from_a)
    assert all(m.ice_controlled == b.tie_breaker for m in map(parse, _datas(net, B)))
    use_at = next(s.at for s in stun_requests(net.log, A) if parse(s.data).use_candidate)
    ((b_at, _ev),) = [(t, e) for t, e in net.events[id(b)] if isinstance(e, PairSelected)]
    assert b_at == pytest.approx(use_at + net.latency)  # selected when the nomination came


def _datas(net: SimNet, src: tuple[str, int]) -> list[bytes]:
    return [s.data for s in stun_requests(net.log, src)]


def test_checks_and_answers_carry_the_ice_attributes() -> None:
    net, a, b = make_pair()
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    pwd = {A: a.local_pwd.encode(), B: b.local_pwd.encode()}
    ufrag = {A: a.local_ufrag, B: b.local_ufrag}
    answers = 0
    for s in net.log:
        m = parse(s.data)
        assert m.fingerprint
        if m.cls == REQUEST:
            # USERNAME "remote:local", signed with the receiver's password, PRIORITY
            assert m.username == f"{ufrag[s.dst]}:{ufrag[s.src]}"
            assert check_integrity(m, pwd[s.dst]) and not check_integrity(m, pwd[s.src])
            assert m.priority == candidate_priority("prflx")
        else:
            assert m.cls == SUCCESS
            assert m.xor_mapped_address == s.dst  # where the request came from
            assert check_integrity(m, pwd[s.src])  # the answerer's password
            answers += 1
    assert answers >= 3


def test_priorities() -> None:
    assert candidate_priority("host") == (126 << 24) | (65535 << 8) | 255
    assert candidate_priority("srflx", 10) == (100 << 24) | (10 << 8) | 255
    g, d = 1000, 2000
    assert pair_priority(g, d) == (1000 << 32) + 2 * 2000 + 0
    assert pair_priority(d, g) == (1000 << 32) + 2 * 2000 + 1
    a = IceAgent(True)
    first = a.add_host_candidate("192.0.2.1", 5)
    second = a.add_host_candidate("192.0.2.2", 5)
    assert (first.priority >> 8) & 0xFFFF == 65535 and (second.priority >> 8) & 0xFFFF == 65534
    assert first.foundation != second.foundation
    assert a.add_host_candidate("192.0.2.1", 5) is first  # the same address: the same one


def test_frozen_pairs_by_foundation() -> None:
    """One pair per foundation starts Waiting, the rest Frozen (RFC 8445 §6.1.2.6); they
    are still all checked, one new check per Ta, best first."""
    net = SimNet()
    a = IceAgent(True, rng=random.Random(1), ta=0.05)
    net.attach(a, a.add_host_candidate(*A).address)
    remotes = [Candidate(f"10.9.0.{i}", 9, "host", 1000 - i, "x") for i in range(1, 5)]
    remotes.append(Candidate("10.9.1.1", 9, "srflx", 500, "y"))
    a.set_remote("peer", "peer-password-0123456789", remotes, now=0.0)
    states = {p.remote.addr: p.state for p in a._pairs.values()}
    assert states == {
        "10.9.0.1": WAITING,
        "10.9.0.2": FROZEN,
        "10.9.0.3": FROZEN,
        "10.9.0.4": FROZEN,
        "10.9.1.1": WAITING,
    }
    net.run_for(1.0)
    firsts: dict[bytes, tuple[float, str]] = {}
    for s in stun_requests(net.log, A):
        firsts.setdefault(parse(s.data).transaction_id, (s.at, s.dst[0]))
    times = sorted(t for t, _ in firsts.values())
    assert len(times) == 5
    assert all(later - earlier >= 0.05 - 1e-9 for earlier, later in itertools.pairwise(times))
    order = [addr for _, addr in sorted(firsts.values())]
    assert order == ["10.9.0.1", "10.9.1.1", "10.9.0.2", "10.9.0.3", "10.9.0.4"]


# --------------------------------------------------------------------------- roles


@pytest.mark.parametrize("both_controlling", [True, False])
@pytest.mark.parametrize("a_wins", [True, False])
def test_role_conflict(both_controlling: bool, a_wins: bool) -> None:
    big, small = 2**63 + 7, 12345
    net, a, b = make_pair(
        both_controlling,
        both_controlling,
        a_tie=big if a_wins else small,
        b_tie=small if a_wins else big,
    )
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    assert a.selected == B and b.selected == A
    winner, loser = (a, b) if a_wins else (b, a)
    # the larger tie-breaker controls (RFC 8445 §7.3.1.1): one side changed role, once
    assert winner.controlling and not loser.controlling
    changed = winner if not both_controlling else loser
    unchanged = loser if changed is winner else winner
    assert of_type(net.events_of(changed), RoleChanged) == [RoleChanged(changed.controlling)]
    assert not of_type(net.events_of(unchanged), RoleChanged)
    # the role changed before the selection
    kinds = [type(e) for e in net.events_of(changed)]
    assert kinds == [RoleChanged, PairSelected]


@pytest.mark.parametrize("seed", range(5))
def test_role_conflict_with_loss(seed: int) -> None:
    rng = random.Random(seed)
    net = SimNet(jitter=0.03, seed=seed, drop=lambda s, d, data: rng.random() < 0.2)
    net, a, b = make_pair(True, True, net=net, a_tie=2**62, b_tie=2**61)
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 30.0)
    assert a.controlling and not b.controlling
    assert a.selected == B and b.selected == A


# --------------------------------------------------------------------------- loss


def test_lost_checks_are_retransmitted_on_the_rfc_schedule() -> None:
    lost: list[int] = []

    def drop(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
        # the controlling side's first three requests are lost
        if src == A and parse(data).cls == REQUEST and len(lost) < 3:
            lost.append(1)
            return True
        return False

    net, a, b = make_pair(net=SimNet(drop=drop))
    b.close()  # a silent peer besides: only a's own check can succeed
    del net.agents[B]
    answerer = LitePeer(b.local_ufrag, b.local_pwd)
    net.attach(answerer, B)
    a.set_remote(b.local_ufrag, b.local_pwd, [Candidate(*B, "host", 100, "1")], now=0.0)
    assert net.run_until(lambda: a.selected is not None, 10.0)
    sends = [(s.at, parse(s.data).transaction_id) for s in stun_requests(net.log, A)]
    first_tid = sends[0][1]
    # one transaction, resent after RTO 0.5 s, then 1 s, then 2 s (RFC 8445 §14.3, 8489)
    assert [t for t, tid in sends if tid == first_tid] == pytest.approx([0.0, 0.5, 1.5, 3.5])
    assert a.stats["retransmissions"] == 3
    assert net.now == pytest.approx(3.5 + 4 * net.latency)  # answer, nomination, its answer


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("a_controlling", [True, False])
def test_loss_and_reordering(seed: int, a_controlling: bool) -> None:
    rng = random.Random(seed)
    net = SimNet(jitter=0.05, seed=seed, drop=lambda s, d, data: rng.random() < 0.2)
    net, a, b = make_pair(a_controlling, not a_controlling, net=net)
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 30.0)
    assert a.selected == B and b.selected == A
    assert not of_type(net.events_of(a) + net.events_of(b), IceFailed)


def test_answers_lost_fail_both_sides() -> None:
    # b's answers are lost (its own checks go through, and are answered)
    net, a, b = make_pair(net=SimNet(drop=lambda s, d, data: s == B and parse(data).cls != 0))
    introduce(net, a, b)
    assert net.run_until(lambda: a.finished and b.finished, 60.0)
    ((a_at, a_ev),) = net.events[id(a)]
    ((b_at, b_ev),) = net.events[id(b)]
    # the controlling side's only pair failed after 7 sends (0.5, 1, 2, 2, 2, 2, 2 s)
    assert a_ev == IceFailed("all 1 candidate pairs failed") and a_at == pytest.approx(11.5)
    # the controlled side's check succeeded, but no nomination came: the deadline
    assert b_ev == IceFailed("no candidate pair selected within 30 s") and b_at == 30.0
    assert a.get_timer() is None and b.get_timer() is None
    assert a.selected is None and b.selected is None


# --------------------------------------------------------------------------- consent


def test_consent_is_kept_then_lost_when_the_peer_goes_silent() -> None:
    silent = [False]
    net, a, b = make_pair(net=SimNet(drop=lambda s, d, data: silent[0] and s == B))
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    start = net.now
    net.run_for(120.0)
    assert not of_type(net.events_of(a) + net.events_of(b), ConsentLost)
    for me, src in ((a, A), (b, B)):
        sent = [s.at for s in stun_requests(net.log, src) if s.at > start + 0.1]
        gaps = [y - x for x, y in itertools.pairwise(sent)]
        assert len(sent) >= 120 / 6 and all(4.0 - 1e-9 <= g <= 6.0 + 1e-9 for g in gaps), gaps
        assert me.stats["retransmissions"] == 0  # consent checks are never resent
    silent[0] = True
    went_silent = net.now
    assert net.run_until(lambda: a.finished, 60.0)
    last_answer = max(s.at for s in net.log if s.src == B and not s.lost) + net.latency
    (lost_at, ev), *_ = [(t, e) for t, e in net.events[id(a)] if isinstance(e, ConsentLost)]
    assert ev == ConsentLost(B)
    assert lost_at == pytest.approx(last_answer + 30.0)
    assert went_silent + 24.0 <= lost_at <= went_silent + 30.0 + 1e-9
    assert a.selected is None and a.get_timer() is None
    n = len([s for s in net.log if s.src == A])
    net.run_for(30.0)
    assert len([s for s in net.log if s.src == A]) == n  # nothing more from a


def test_consent_interval_and_timeout_are_the_callers() -> None:
    net = SimNet()
    a = IceAgent(True, rng=random.Random(1), consent_interval=1.0, consent_timeout=3.0)
    b = IceAgent(False, rng=random.Random(2))
    net.attach(a, a.add_host_candidate(*A).address)
    net.attach(b, b.add_host_candidate(*B).address)
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    selected_at = net.now
    del net.agents[B]  # the peer disappears
    assert net.run_until(lambda: a.finished, 10.0)
    assert of_type(net.events_of(a), ConsentLost) == [ConsentLost(B)]
    assert net.now == pytest.approx(selected_at + 3.0, abs=net.latency * 2)


# --------------------------------------------------------------------------- ice-lite


def test_ice_lite_remote() -> None:
    net = SimNet()
    a = IceAgent(False, rng=random.Random(1))  # told it is controlled: lite makes it control
    net.attach(a, a.add_host_candidate(*A).address)
    lite = LitePeer()
    net.attach(lite, B)
    a.set_remote(lite.ufrag, lite.pwd, [Candidate(*B, "host", 2130706431, "1")], lite=True, now=0)
    assert net.run_until(lambda: a.selected is not None and lite.selected is not None, 5.0)
    assert a.controlling and a.selected == B and lite.selected == A
    assert [type(e) for e in net.events_of(a)] == [RoleChanged, PairSelected]
    assert net.events_of(a)[0] == RoleChanged(True)
    assert all(m.ice_controlling == a.tie_breaker for m in lite.requests)
    assert [m.use_candidate for m in lite.requests[:2]] == [False, True]
    assert not stun_requests(net.log, B)  # the lite peer sent no check


# --------------------------------------------------------------------------- peer-reflexive


def test_peer_reflexive_candidates_through_a_nat() -> None:
    """a is behind a NAT: b sees its checks come from NAT_A (a peer-reflexive remote
    candidate), a learns NAT_A from b's answers (a peer-reflexive local candidate); a's
    host address is unreachable, so only the learned pair works."""
    net = SimNet(drop=lambda s, d, data: d == A)
    net.nat[A] = NAT_A
    net, a, b = make_pair(net=net)
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    assert a.selected == B and b.selected == NAT_A
    (prflx,) = [c for c in b.remote_candidates if c.type == "prflx"]
    assert prflx.address == NAT_A and prflx.priority == candidate_priority("prflx")
    (mine,) = [c for c in a.local_candidates if c.type == "prflx"]
    assert mine.address == NAT_A and (mine.related_addr, mine.related_port) == A
    # the signalled host pair fails on its own; it does not fail the agent
    net.run_for(15.0)
    assert b.selected == NAT_A and not of_type(net.events_of(b), IceFailed)


def test_checks_before_the_answer_is_known() -> None:
    """b learns a's credentials 2 s late: a's checks are answered meanwhile (b's password
    is all that needs), their source is remembered, and b's own triggered check goes as
    soon as it can."""
    net, a, b = make_pair()
    a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates, now=0.0)
    net.run_for(2.0)
    assert b.stats["requests_answered"] >= 2 and b.selected is None
    assert [c.type for c in b.remote_candidates] == ["prflx"]
    assert not stun_requests(net.log, B)  # no check without the remote password
    b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates, now=net.now)
    t = net.now
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    assert net.now - t <= 2 * net.latency + 1e-9
    assert [c.type for c in b.remote_candidates] == ["host"]  # signalled: replaces prflx


# --------------------------------------------------------------------------- hostile input


def test_bad_credentials_flood_leaves_no_state() -> None:
    net, a, b = make_pair()
    strangers = [(f"203.0.113.{i % 250 + 1}", 10000 + i) for i in range(4000)]
    for i, src in enumerate(strangers):
        kind = i % 4
        if kind == 0:
            data = check_from(b, "anyone", pwd="not-the-password-0123456789")
        elif kind == 1:
            data = check_from(b.__class__(False), "anyone")  # another agent's ufrag
        elif kind == 2:
            data = encode(StunMessage(BINDING, REQUEST, bytes(12), username=f"{b.local_ufrag}:x"))
        else:
            data = encode(StunMessage(BINDING, SUCCESS, i.to_bytes(12, "big")))
        net.inject(src, B, data)
    for src in strangers[:100]:
        net.inject(src, B, b"\x80" + bytes(40))  # RTP: not the agent's
    net.run_for(1.0)
    assert b.stats["bad_integrity"] == 1000
    assert b.stats["unknown_username"] == 1000
    assert b.stats["bad_request"] == 1000
    assert b.stats["unmatched_response"] == 1000
    assert b.stats["requests_answered"] == 0
    assert not [s for s in net.log if s.src == B]  # no answer, no 401: nothing at all
    assert b.remote_candidates == [] and b._pairs == {} and b.get_timer() is None
    # and it still connects
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    assert [c.type for c in b.remote_candidates] == ["host"]


def test_authenticated_flood_is_bounded() -> None:
    """Someone who has the credentials (they travel in the SDP) checks from many
    addresses: each is answered, but prflx candidates, pairs and transactions are capped."""
    net, a, b = make_pair()
    introduce(net, a, b)
    strangers = [(f"203.0.113.{i % 250 + 1}", 20000 + i) for i in range(500)]
    for src in strangers:
        net.inject(src, B, check_from(b, a.local_ufrag))
    peak = 0
    for _ in range(5000):
        if not net.step():
            break
        peak = max(peak, len(b._transactions))
        if both_selected(a, b) and net.now > 1.0:
            break
    assert both_selected(a, b) and b.selected == A
    assert b.stats["requests_answered"] >= 500
    prflx = [c for c in b.remote_candidates if c.type == "prflx"]
    assert len(prflx) == MAX_PRFLX and b.stats["prflx_dropped"] == 500 - MAX_PRFLX
    assert len(b._pairs) == MAX_PRFLX + 1
    assert peak <= MAX_TRANSACTIONS


def test_remote_candidates_are_capped() -> None:
    a = IceAgent(True)
    a.add_host_candidate(*A)
    many = [Candidate(f"10.1.{i // 250}.{i % 250 + 1}", 9, "host", 100, "f") for i in range(100)]
    a.set_remote("peer", "peer-password-0123456789", many, now=0.0)
    assert len(a.remote_candidates) == MAX_REMOTE_CANDIDATES
    assert a.stats["remote_candidates_dropped"] == 100 - MAX_REMOTE_CANDIDATES


def signed_with_extra(to: IceAgent, extra: bytes) -> bytes:
    """A check to `to` with the raw attribute `extra` before MESSAGE-INTEGRITY, signed by
    hand (the encoder writes only the attributes it knows)."""
    msg = StunMessage(BINDING, REQUEST, bytes(range(12)), username=f"{to.local_ufrag}:x")
    raw = encode(msg, fingerprint=False) + extra
    header = raw[:2] + (len(raw) - 20 + 24).to_bytes(2, "big") + raw[4:20]
    mac = hmac.new(to.local_pwd.encode(), header + raw[20:], hashlib.sha1).digest()
    return header + raw[20:] + b"\x00\x08\x00\x14" + mac


def test_unknown_required_attribute_gets_420() -> None:
    net, _a, b = make_pair()
    request = signed_with_extra(b, b"\x00\x42\x00\x00")  # 0x0042: required, unknown
    assert check_integrity(parse(request), b.local_pwd.encode())
    net.inject(("203.0.113.9", 5), B, request)
    net.run_for(0.1)
    (answer,) = [parse(s.data) for s in net.log if s.src == B]
    assert answer.cls == ERROR and answer.error_code == (420, "Unknown Attribute")
    assert answer.unknown_attributes == (0x0042,)
    assert check_integrity(answer, b.local_pwd.encode())
    assert b.remote_candidates == [] and b.stats["unknown_attribute"] == 1
    # an optional one (0x8042) is ignored: the check is answered
    net.inject(("203.0.113.9", 5), B, signed_with_extra(b, b"\x80\x42\x00\x00"))
    net.run_for(0.1)
    assert parse(net.log[-1].data).cls == SUCCESS


@SETTINGS
@given(
    data=st.binary(max_size=120), flips=st.dictionaries(st.integers(0, 100), st.integers(1, 255))
)
def test_receive_takes_any_bytes(data: bytes, flips: dict[int, int]) -> None:
    b = IceAgent(False, rng=random.Random(2))
    b.add_host_candidate(*B)
    b.set_remote("peer", "peer-password-0123456789", [], now=0.0)
    valid = check_from(b, "peer")
    mutated = bytes(x ^ flips.get(i, 0) for i, x in enumerate(valid))
    for d in (data, mutated, b"\0\1" + data):
        taken = b.receive(d, ("203.0.113.1", 7), 1.0)
        assert taken == (len(d) >= 20 and d[0] < 4 and d[4:8] == b"\x21\x12\xa4\x42")
    b.handle_timer(2.0)
    b.datagrams_to_send(2.0)
    assert len(b.remote_candidates) <= 1


# --------------------------------------------------------------------------- gathering


def test_gather_srflx_through_a_nat() -> None:
    net = SimNet()
    net.nat[A] = NAT_A
    a = IceAgent(True, rng=random.Random(1))
    host = a.add_host_candidate(*A)
    net.attach(a, A)
    server = StunServerPeer()
    net.attach(server, SERVER)
    a.gather_srflx(SERVER, A, 0.0)
    assert net.run_until(lambda: bool(net.events_of(a)), 5.0)
    (ev,) = net.events_of(a)
    assert isinstance(ev, CandidateGathered)
    c = ev.candidate
    assert (c.addr, c.port, c.type) == (*NAT_A, "srflx")
    assert (c.related_addr, c.related_port) == A
    assert c.priority == candidate_priority("srflx") and c.foundation != host.foundation
    assert a.local_candidates == [host, c]
    assert a.get_timer() is None


def test_gather_srflx_error_answer() -> None:
    net = SimNet()
    a = IceAgent(True, rng=random.Random(1))
    net.attach(a, a.add_host_candidate(*A).address)
    net.attach(StunServerPeer(error=(401, "Unauthorized")), SERVER)
    a.gather_srflx(SERVER, A, 0.0)
    assert net.run_until(lambda: bool(net.events_of(a)), 5.0)
    assert net.events_of(a) == [GatherFailed(SERVER, "error 401 Unauthorized")]
    assert [c.type for c in a.local_candidates] == ["host"]


def test_gather_srflx_silent_server_rfc8489_schedule() -> None:
    net = SimNet()
    a = IceAgent(True, rng=random.Random(1))
    net.attach(a, a.add_host_candidate(*A).address)
    server = StunServerPeer(silent=True)
    net.attach(server, SERVER)
    a.gather_srflx(SERVER, A, 0.0)
    assert net.run_until(lambda: bool(net.events_of(a)), 60.0)
    sent = [s.at for s in net.log if s.src == A]
    assert sent == pytest.approx([0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    assert len({s.data for s in net.log}) == 1  # one transaction, resent as it was
    assert net.events_of(a) == [GatherFailed(SERVER, "no answer in 39.5 s")]
    assert net.now == pytest.approx(39.5)


# --------------------------------------------------------------------------- the caller


def test_close_stops_everything() -> None:
    net, a, b = make_pair()
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    b.close()
    assert b.finished and b.get_timer() is None and b.datagrams_to_send(net.now) == []
    assert b.receive(check_from(b, a.local_ufrag), A, net.now)  # STUN: taken, not answered
    assert b.datagrams_to_send(net.now) == [] and b.next_event() is None


def test_callers_mistakes_raise() -> None:
    with pytest.raises(ValueError, match="ufrag must be 4 to 256"):
        IceAgent(True, ufrag="abc")
    with pytest.raises(ValueError, match="pwd must be 22 to 256"):
        IceAgent(True, pwd="short-password")
    with pytest.raises(ValueError, match="ufrag must be"):
        IceAgent(True, ufrag="has space")
    with pytest.raises(ValueError, match="64-bit"):
        IceAgent(True, tie_breaker=2**64)
    with pytest.raises(ValueError, match="positive"):
        IceAgent(True, ta=0)
    a = IceAgent(True)
    with pytest.raises(ValueError, match="resolve names"):
        a.add_host_candidate("host.example", 5)
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        a.add_host_candidate("127.0.0.1", 0)
    with pytest.raises(ValueError, match="add_host_candidate first"):
        a.gather_srflx(SERVER, ("127.0.0.1", 5), 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        a.set_remote("", "x", [], now=0.0)
    a.set_remote("peer", "peer-password-0123456789", [], now=0.0)
    with pytest.raises(ValueError, match="ICE restart"):
        a.set_remote("other", "peer-password-0123456789", [], now=0.0)
    with pytest.raises(ValueError, match="resolve names"):
        a.add_remote_candidate(Candidate("abc.local", 5, "host", 1, "1"), 0.0)


def test_generated_credentials() -> None:
    a = IceAgent(True, rng=random.Random(7))
    b = IceAgent(True, rng=random.Random(8))
    assert len(a.local_ufrag) >= 4 and len(a.local_pwd) >= 22
    assert (a.local_ufrag, a.local_pwd, a.tie_breaker) != (
        b.local_ufrag,
        b.local_pwd,
        b.tie_breaker,
    )
    again = IceAgent(True, rng=random.Random(7))
    assert (again.local_ufrag, again.local_pwd) == (a.local_ufrag, a.local_pwd)
    c = IceAgent(True, ufrag="abcd", pwd="p" * 22)
    assert (c.local_ufrag, c.local_pwd) == ("abcd", "p" * 22)


def test_ipv4_mapped_source_is_normalized() -> None:
    net, a, b = make_pair()
    introduce(net, a, b)
    data = check_from(b, a.local_ufrag)
    assert b.receive(data, ("::ffff:10.0.0.1", 1000, 0, 0), 0.0)
    (answer,) = [(d, to) for d, to in b.datagrams_to_send(0.0) if parse(d).cls == SUCCESS]
    assert answer[1] == A and parse(answer[0]).xor_mapped_address == A
    assert [c.address for c in b.remote_candidates] == [A]  # the signalled one, no prflx


def test_consent_parses_each_source_address_once() -> None:
    """A consent answer's source is one the agent has seen: its normalized form is kept,
    not parsed again every 5 s (a third of the answer's handling); the forms stay exact,
    an IPv4-mapped source included."""
    normalize_ip.cache_clear()
    net, a, b = make_pair()
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    parsed = normalize_ip.cache_info().misses
    net.run_for(60.0)
    answers = [s for s in net.log if s.src == B and parse(s.data).cls == SUCCESS]
    assert len(answers) >= 10  # consent answers went to a all along
    assert normalize_ip.cache_info().misses == parsed  # none of them parsed again
    assert not of_type(net.events_of(a), ConsentLost) and a.selected == B
    assert [
        normalize_ip(x) for x in ("::ffff:10.0.0.1", "[::1]", "10.0.0.1", "::ffff:10.0.0.1")
    ] == [
        "10.0.0.1",
        "::1",
        "10.0.0.1",
        "10.0.0.1",
    ]
    with pytest.raises(ValueError):
        normalize_ip("not an address")


@pytest.mark.parametrize("answers_lost", [False, True])
def test_connected_agent_wakes_only_for_its_consent_checks(answers_lost: bool) -> None:
    """Once a pair is selected the agent asks to be woken for its next consent check and
    for nothing else, whether the answers come or not (an unanswered check waits for
    expiry, 30 s, not for a retransmission): every wake-up sends one check."""
    lose = [False]
    net = SimNet(drop=lambda s, d, data: lose[0] and s == B)
    net, a, b = make_pair(net=net)
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    net.run_for(1.0)  # the nomination's last answers
    lose[0] = answers_lost
    wakes: list[float] = []

    class Counted:
        """`a`, its wake-ups noted."""

        def handle_timer(self, now: float) -> None:
            wakes.append(now)
            a.handle_timer(now)

        def __getattr__(self, name: str) -> object:
            return getattr(a, name)

    counted = Counted()
    net.attach(counted, A)  # type: ignore[arg-type]
    start = net.now
    net.run_for(25.0)  # under the 30 s expiry even with every answer lost
    checks = [s.at for s in stun_requests(net.log, A) if s.at > start]
    assert len(checks) >= 4 and wakes == checks
    assert a.selected == B and not of_type(net.events_of(counted), ConsentLost)  # type: ignore[arg-type]
    pending = a.get_timer()
    assert pending is not None and pending > net.now


def test_role_conflict_answer_alone_switches_the_role() -> None:
    """Both controlling; the winner's checks are lost for a while, so the loser learns of
    the conflict only from the 487 answers to its own checks: it switches at once."""
    net = SimNet(drop=lambda s, d, data: s == B and parse(data).cls == REQUEST and net.now < 1.0)
    net, a, b = make_pair(True, True, net=net, a_tie=1, b_tie=2**63)
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 10.0)
    ((at, ev),) = [(t, e) for t, e in net.events[id(a)] if isinstance(e, RoleChanged)]
    assert ev == RoleChanged(False) and at == pytest.approx(2 * net.latency)
    assert b.stats["role_conflict_487"] >= 1 and b.controlling and not a.controlling


def test_a_check_from_the_peer_triggers_one_back_at_once() -> None:
    """b has ten better (unreachable) candidates of a's before a's real one; a's check
    makes b check that pair next (a triggered check), not after the other ten."""
    net, a, b = make_pair()
    decoys = [Candidate(f"10.8.0.{i}", 9, "host", 2**31 - i, f"d{i}") for i in range(1, 11)]
    a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates, now=0.0)
    b.set_remote(a.local_ufrag, a.local_pwd, [*decoys, *a.local_candidates], now=0.0)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    first_to_a = min(s.at for s in stun_requests(net.log, B) if s.dst == A)
    assert first_to_a <= net.latency + b.ta + 1e-9
    assert net.now < 0.2


def test_an_answer_from_another_address_fails_the_pair() -> None:
    """a's answers leave through a NAT: b's check to a's host address is answered from
    NAT_A, which is not where it went (RFC 8445 §7.2.5.2.1): that pair fails; the
    peer-reflexive one works."""
    net = SimNet()
    net.nat[A] = NAT_A
    net, a, b = make_pair(net=net)
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    net.run_for(1.0)
    assert b.selected == NAT_A
    assert b._pairs[A].state == FAILED and b.stats["bad_response"] >= 1


def test_a_forged_answer_does_not_count() -> None:
    """An answer with the right transaction id from the right address, but not signed with
    the peer's password, changes nothing; the genuine one does."""
    net = SimNet()
    a = IceAgent(True, rng=random.Random(1))
    net.attach(a, a.add_host_candidate(*A).address)
    pwd = "peer-password-0123456789"
    a.set_remote("peer", pwd, [Candidate(*B, "host", 100, "1")], now=0.0)
    net.run_for(0.01)
    (req,) = stun_requests(net.log, A)
    tid = parse(req.data).transaction_id
    answer = StunMessage(BINDING, SUCCESS, tid, xor_mapped_address=A)
    net.inject(B, A, encode(answer, b"forged-password-0123456789"))
    net.run_for(0.1)
    assert a.stats["bad_integrity"] == 1 and a._pairs[B].state == IN_PROGRESS
    net.inject(B, A, encode(answer, pwd.encode()))
    net.run_for(0.1)
    assert a._pairs[B].state in (PAIR_SUCCEEDED, IN_PROGRESS)  # succeeded, now nominating
    assert a._pairs[B].nominating


def test_a_lost_nomination_fails_the_pair_and_never_spins() -> None:
    """The peer answers a's first check but never gets the nominating one: that pair fails
    after its retransmissions; with the other pair still being checked, a's timer must not
    stay due (SimNet fails a timer that is due right after `handle_timer`)."""
    net = SimNet(drop=lambda s, d, data: s == A and parse(data).use_candidate)
    a = IceAgent(True, rng=random.Random(1))
    net.attach(a, a.add_host_candidate(*A).address)
    lite = LitePeer()
    net.attach(lite, B)
    silent = Candidate("10.0.0.3", 3000, "host", 50, "2")
    a.set_remote(lite.ufrag, lite.pwd, [Candidate(*B, "host", 100, "1"), silent], now=0.0)
    assert net.run_until(lambda: a.finished, 60.0)
    assert net.events_of(a) == [IceFailed("all 2 candidate pairs failed")]
    nominations = [s for s in stun_requests(net.log, A) if parse(s.data).use_candidate]
    assert len(nominations) == 7  # one transaction, all its sends lost
    assert lite.selected is None


def test_controlled_side_moves_to_a_better_nominated_pair() -> None:
    """An aggressive controlling peer nominates a worse pair first, then a better one: the
    controlled side selects each in turn if better (never a worse one afterwards)."""
    net = SimNet()
    b = IceAgent(False, rng=random.Random(2))
    net.attach(b, b.add_host_candidate(*B).address)
    low, high = ("10.0.0.5", 5000), ("10.0.0.6", 6000)
    peer_ufrag, peer_pwd = "peer", "peer-password-0123456789"
    for addr in (low, high):  # the peer's two addresses answer b's checks
        net.attach(LitePeer(peer_ufrag, peer_pwd), addr)
    remotes = [Candidate(*low, "host", 100, "1"), Candidate(*high, "host", 200, "2")]
    b.set_remote(peer_ufrag, peer_pwd, remotes, now=0.0)
    net.run_for(0.5)  # b's checks of both pairs succeeded

    def nominate(src: tuple[str, int]) -> None:
        net.inject(src, B, check_from(b, peer_ufrag, use_candidate=True))
        net.run_for(0.1)

    nominate(low)
    assert b.selected == low
    nominate(high)
    assert b.selected == high
    nominate(low)
    assert b.selected == high
    selected = [e.remote.address for e in of_type(net.events_of(b), PairSelected)]
    assert selected == [low, high]


def test_ipv6_host_pair() -> None:
    net = SimNet()
    a = IceAgent(True, rng=random.Random(1))
    b = IceAgent(False, rng=random.Random(2))
    net.attach(a, a.add_host_candidate("2001:db8:0:0::1", 1000).address)
    net.attach(b, b.add_host_candidate("2001:db8::2", 2000).address)
    b.add_host_candidate("10.0.0.2", 2000)  # an IPv4 one: no pair with a's IPv6 candidate
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    assert a.selected == ("2001:db8::2", 2000) and b.selected == ("2001:db8::1", 1000)
    assert len(a._pairs) == 1
    assert all(parse(s.data).fingerprint for s in net.log)


def test_set_role_before_the_remote_description() -> None:
    """An app gathers first and learns its role at connect time: `set_role` sets it without
    an event; after `set_remote` the role is the agent's to change."""
    net, a, b = make_pair(False, True)
    a.set_role(True)
    b.set_role(False)
    introduce(net, a, b)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    assert a.controlling and not b.controlling
    assert not of_type(net.events_of(a) + net.events_of(b), RoleChanged)
    assert [m.use_candidate for m in map(parse, _datas(net, A))][:2] == [False, True]
    with pytest.raises(SocketModeError, match="before the remote description"):
        a.set_role(False)


def test_transactions_are_capped() -> None:
    """80 pairs that never answer: at most MAX_TRANSACTIONS checks are in flight; the rest
    wait their turn (counted) and are all checked; then the agent fails."""
    net = SimNet()
    a = IceAgent(True, rng=random.Random(1))
    net.attach(a, a.add_host_candidate(*A).address)
    many = [
        Candidate(f"10.2.{i // 200}.{i % 200 + 1}", 9, "host", 1000 + i, f"f{i}") for i in range(64)
    ]
    a.set_remote("peer", "peer-password-0123456789", many, now=0.0)
    for i in range(16):  # and 16 peer-reflexive ones, from checks of the peer's
        check = check_from(a, "peer", ice_controlling=None, ice_controlled=5)
        net.inject((f"10.3.0.{i + 1}", 9), A, check)
    peak = 0
    while not a.finished and net.now < 600.0:
        assert net.step()
        peak = max(peak, len(a._transactions))
    assert peak == MAX_TRANSACTIONS and a.stats["checks_deferred"] > 0
    checked = {s.dst for s in stun_requests(net.log, A)}
    assert len(checked) == 80
    # the RTO grows with the pairs (4 s here): the connect deadline comes first
    assert net.events_of(a) == [IceFailed("no candidate pair selected within 30 s")]
    assert net.now == 30.0


@settings(
    derandomize=True,
    database=None,
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    a_controlling=st.booleans(),
    b_controlling=st.booleans(),
    ties=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)).filter(
        lambda t: t[0] != t[1]
    ),
    a_late=st.floats(0.0, 3.0),
    b_late=st.floats(0.0, 3.0),
    loss=st.floats(0.0, 0.6),
    jitter=st.floats(0.0, 0.1),
    nat=st.booleans(),
    seed=st.integers(0, 2**32),
    junk=st.lists(st.binary(min_size=20, max_size=80), max_size=10),
)
def test_any_start_converges(
    a_controlling: bool,
    b_controlling: bool,
    ties: tuple[int, int],
    a_late: float,
    b_late: float,
    loss: float,
    jitter: float,
    nat: bool,
    seed: int,
    junk: list[bytes],
) -> None:
    """Whatever the roles (conflicting or not), the order and delay of the descriptions,
    the loss and reordering of the first 2 s, a NAT, and junk that looks like STUN from
    the peers' own addresses: both sides select the same pair within 30 s, with opposite
    roles, and no timer is ever left due (SimNet checks)."""
    rng = random.Random(seed)
    net = SimNet(jitter=jitter, seed=seed)
    net.drop = lambda s, d, data: net.now < 2.0 and rng.random() < loss
    if nat:
        net.nat[A] = NAT_A
    net, a, b = make_pair(a_controlling, b_controlling, net=net, a_tie=ties[0], b_tie=ties[1])
    for i, data in enumerate(junk):  # STUN-looking, unauthenticated, spoofed sources
        data = b"\x00\x01" + data[2:4] + b"\x21\x12\xa4\x42" + data[8:]
        net.inject(B if i % 2 else A, A if i % 2 else B, data)
    pending = {a: (a_late, b), b: (b_late, a)}
    while pending:
        me = min(pending, key=lambda x: pending[x][0])
        at, other = pending.pop(me)
        if at > net.now:
            net.run_for(at - net.now)
        me.set_remote(other.local_ufrag, other.local_pwd, other.local_candidates, now=net.now)
    assert net.run_until(lambda: both_selected(a, b), 30.0)
    assert a.selected == B and b.selected == (NAT_A if nat else A)
    assert a.controlling != b.controlling
    assert a.controlling == (ties[0] > ties[1]) or a_controlling != b_controlling
    assert not of_type(net.events_of(a) + net.events_of(b), IceFailed)


@pytest.mark.parametrize("a_controlling", [True, False])
def test_remote_without_usable_candidates(a_controlling: bool) -> None:
    """A browser hides its host addresses behind mDNS names, which the caller skips: a
    knows no remote candidate at all, but b's checks teach it b's address (prflx)."""
    net, a, b = make_pair(a_controlling, not a_controlling)
    a.set_remote(b.local_ufrag, b.local_pwd, [], now=0.0)
    b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates, now=0.0)
    assert net.run_until(lambda: both_selected(a, b), 5.0)
    assert a.selected == B and b.selected == A
    assert [c.type for c in a.remote_candidates] == ["prflx"]
    assert net.now < 0.2


def test_a_success_unfreezes_its_foundation() -> None:
    """A pair succeeds: the Frozen pairs of its foundation become Waiting, and so does a
    pair of that foundation added later (RFC 8445 §7.2.5.3.3)."""
    net = SimNet()
    a = IceAgent(True, rng=random.Random(1))
    net.attach(a, a.add_host_candidate(*A).address)
    lite = LitePeer()
    net.attach(lite, B)
    first = Candidate(*B, "host", 300, "f")
    frozen = Candidate("10.0.0.7", 7000, "host", 200, "f")
    a.set_remote(lite.ufrag, lite.pwd, [first, frozen], now=0.0)
    assert a._pairs[frozen.address].state == FROZEN
    net.run_for(0.03)  # the first check and its answer; nothing else yet
    assert a._pairs[B].state == PAIR_SUCCEEDED
    assert a._pairs[frozen.address].state == WAITING
    late = Candidate("10.0.0.8", 8000, "host", 100, "f")
    a.add_remote_candidate(late, net.now)
    assert a._pairs[late.address].state == WAITING


@settings(
    derandomize=True,
    database=None,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    controlling=st.booleans(),
    moves=st.lists(
        st.tuples(
            st.integers(0, 40),  # source address
            st.sampled_from(["check", "answer", "error", "wait"]),
            st.booleans(),  # USE-CANDIDATE
            st.sampled_from([None, "controlling", "controlled"]),
            st.integers(0, 2**64 - 1),  # tie-breaker, or error code
        ),
        max_size=60,
    ),
)
def test_authenticated_peer_any_sequence_stays_bounded(
    controlling: bool, moves: list[tuple[int, str, bool, str | None, int]]
) -> None:
    """Someone with the credentials sends any sequence of checks (any role, tie-breaker,
    USE-CANDIDATE, from any of 41 addresses), answers to the agent's own transactions
    (success or any error) and waits: nothing raises, every table stays within its cap,
    and no timer is left due (SimNet checks)."""
    net = SimNet()
    a = IceAgent(controlling, rng=random.Random(1))
    net.attach(a, a.add_host_candidate(*A).address)
    pwd = "peer-password-0123456789"
    a.set_remote("peer", pwd, [Candidate("10.0.0.9", 9, "host", 100, "1")], now=0.0)
    for i, (src_i, kind, use, role, number) in enumerate(moves):
        src = (f"10.7.0.{src_i}", 7000 + src_i)
        if kind == "check":
            attrs: dict[str, object] = {"use_candidate": use, "ice_controlling": None}
            if role is not None:
                attrs[f"ice_{role}"] = number
            msg = StunMessage(BINDING, REQUEST, i.to_bytes(12, "big"))
            msg.username, msg.priority = f"{a.local_ufrag}:peer", number >> 40
            for k, v in attrs.items():
                setattr(msg, k, v)
            net.inject(src, A, encode(msg, a.local_pwd.encode()))
        elif kind in ("answer", "error"):
            mine = [(parse(s.data), s.dst) for s in net.log if s.src == A]
            mine = [(m, dst) for m, dst in mine if m.cls == REQUEST]
            if mine:
                req, dst = mine[number % len(mine)]
                tid = req.transaction_id
                reply = StunMessage(BINDING, SUCCESS, tid, xor_mapped_address=src)
                if kind == "error":
                    reply = StunMessage(BINDING, ERROR, tid, error_code=(300 + number % 400, ""))
                # from where the request went (a valid answer), or from elsewhere
                net.inject(dst if use else src, A, encode(reply, pwd.encode()))
        net.run_for(0.2 if kind == "wait" else 0.02)
        assert len(a.remote_candidates) <= MAX_REMOTE_CANDIDATES + MAX_PRFLX
        assert len(a._transactions) <= MAX_TRANSACTIONS
        assert len(a._triggered) <= len(a._pairs) <= MAX_REMOTE_CANDIDATES + MAX_PRFLX
        assert len([c for c in a.local_candidates if c.type == "prflx"]) <= MAX_LOCAL_PRFLX
    net.run_for(60.0)
    assert a.finished or a.selected is not None
