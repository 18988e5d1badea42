"""Which rule decided each packet, checked against the kernel's own counters: three real rule sets
(examples/edge_firewall.nft, Arch Linux's default nftables.conf, Debian's workstation.nft), each rule
made countable without changing what it decides, a seeded mix of a few thousand packets, and then

1. for every rule and chain policy on the way in: the packets pktassert says it decided (``.rule``,
   or ``.accepted_by`` for one conntrack dropped after the rule accepted it) = its nft counter's delta,
   in packets and in bytes (payloads of random length: the bytes say *which* packets it counted); a
   rule that only counts is never named; the decider's verdict agrees with the packet's fate;
2. the packets netfilter dropped (``Fate.NETFILTER_DROPPED``) = what the drop and reject rules and
   the drop policies counted + what conntrack itself dropped (its ``drop`` statistic; ``insert_failed``
   = those ``dropped_by`` conntrack); "ct state invalid drop" = conntrack's ``invalid`` + ``icmp_error``;
3. each answer the peer received (ICMP errors, resets, echo replies), tied to the packet it answers,
   = the packets pktassert says were answered so (or CONSUMED echo requests), and in sum the DUT
   namespace's SNMP counters; UDP NoPorts and RcvbufErrors = NO_SOCKET and SOCKET_RCVBUFF UDP drops.

Making a rule countable: ``counter`` goes right before its verdict (``... limit rate 10/second
counter accept`` counts what the rule accepted, not what it looked at), through ``replace rule`` with
the rule's own text as nft prints it; a counting rule at each base chain's end counts what reached its
policy. That this changes nothing else is checked on the kernel's bytecode (nft --debug=netlink): each
rule is the expressions it was, with a counter right before its verdict (anonymous sets compared by
their elements)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
)
from scapy.packet import Packet

from pktassert import Fate
from pktassert.kernel.conntrack_stats import conntrack_stats
from pktassert.programs.nft_ruleset import OURS

HERE = Path(__file__).parent
EDGE = HERE.parent / "examples/edge_firewall.nft"
ARCH = HERE / "third_party/archlinux-packages/nftables/trunk/nftables.conf"
WORKSTATION = Path("/usr/share/doc/nftables/examples/workstation.nft")  # Debian's nftables package (CI installs it)

SEED = 20250611
PACKETS = 2400  # per rule set, before the bursts of identical packets
ADMIN, OUTSIDE, LINK = "198.51.100", "203.0.113", "192.0.2"  # edge_firewall.nft's admin net; the rest; the DUT's link
RESOLVER, RESOLVER6 = "198.51.100.53", "2001:db8::53"  # where the DUT's own queries go (its replies: established)
OPEN_Q, CLOSED_Q = 5353, 5354  # the DUT's query sockets: one stays open, one is closed before the replies come
LISTEN_TCP, LISTEN_UDP = [22, 443, 8080], [53, 123]
TCP_PORTS = [22, 443, 80, 8080, 25, 3306, 53]
UDP_PORTS = [53, 123, 5353, 161, 9999]
POLICY_MARK = "pktassert rule oracle: reached the policy"
INBOUND = {"prerouting", "input", "ingress"}  # the hooks an injected packet for the DUT passes


# --- the rule set, made countable ---------------------------------------------------------------------------------

def _context(dut: Any) -> Any:
    """A libnftables context of our own, bound to the DUT namespace (made inside it)."""
    import nftables

    with dut.topology.dut.ns.entered():
        return nftables.Nftables()


def _run(ctx: Any, command: str) -> str:
    rc, out, err = ctx.cmd(command)
    assert rc == 0, f"nft {command!r}: {err}"
    return str(out)


def _listing(dut: Any) -> list[dict[str, Any]]:
    ctx = _context(dut)
    ctx.set_json_output(True)
    ctx.set_handle_output(True)
    return list(json.loads(_run(ctx, "list ruleset"))["nftables"])


def _bytecode(dut: Any) -> dict[tuple[str, str, str, int], list[str]]:
    """Every rule's expressions as the kernel holds them (nft --debug=netlink), a counter without its
    numbers and an anonymous set written as its elements (a replaced rule gets a new one)."""
    ctx = _context(dut)
    ctx.set_debug(["netlink"])
    text = _run(ctx, "list ruleset")
    sets: dict[tuple[str, str, str], list[str]] = {}
    rules: dict[tuple[str, str, str, int], list[str]] = {}
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("table "):  # the listing itself follows the bytecode
            break
        if not line.strip():
            continue
        if line[0].isspace():
            if not line.strip().startswith("userdata"):  # a comment: decides nothing
                body.append(line.strip())
            continue
        head = line.split()
        body = []
        if head[2].startswith("@"):
            sets[(head[0], head[1], head[2][1:])] = body
        else:
            rules[(head[0], head[1], head[2], int(head[3]))] = body

    def plain(key: tuple[str, str, str, int], expr: str) -> str:
        m = re.search(r" set (\S+)", expr)
        if m and m[1].startswith("__"):
            elements = sorted(sets.get((key[0], key[1], m[1]), []))
            expr = expr.replace(f" set {m[1]}", " set {" + "; ".join(elements) + "}")
        return expr

    return {key: [re.sub(r"^\[ counter pkts \d+ bytes \d+ \]$", "[ counter ]", plain(key, e)) for e in body]
            for key, body in rules.items() if key[1] not in OURS}


VERDICT = re.compile(r"(?:^|\s)(accept|drop|reject(?: with .+)?|queue.*|jump \S+|goto \S+|return|continue)$")
TERMINAL = ("accept", "drop", "reject")
COUNTER = "[ counter ]"


def _counted(text: str) -> str:
    """The rule with a counter right before its verdict (at its end without one)."""
    m = VERDICT.search(text)
    if m is None:
        return f"{text} counter"
    return f"{text[:m.start(1)]}counter {m[1]}".strip()


class Rules:
    """The rule set in the DUT namespace after ``countable()``: each rule's chain and what it does."""

    def __init__(self, dut: Any) -> None:
        self.chain: dict[tuple[str, str, int], str] = {}  # (family, table, handle) -> "inet edge input"
        self.verdict: dict[tuple[str, str, int], str | None] = {}  # accept, drop, reject or None (goes on)
        self.hook: dict[str, str] = {}  # base chain -> its hook
        self.policy: dict[str, str] = {}  # base chain -> its policy
        self.end: dict[str, tuple[str, str, int]] = {}  # base chain -> our counting rule at its end
        texts = dut.nft.rules()
        for item in _listing(dut):
            if "chain" in item and "hook" in item["chain"]:
                c = item["chain"]
                name = f"{c['family']} {c['table']} {c['name']}"
                self.hook[name], self.policy[name] = c["hook"], c.get("policy", "accept")
            rule = item.get("rule")
            if not rule or rule["table"] in OURS:
                continue
            key = (rule["family"], rule["table"], rule["handle"])
            name = f"{rule['family']} {rule['table']} {rule['chain']}"
            self.chain[key] = name
            last = rule["expr"][-1]
            verb = next(iter(last)) if isinstance(last, dict) else None
            assert verb not in ("jump", "goto", "return", "queue"), f"a rule that passes the packet on: {texts[key]}"
            self.verdict[key] = verb if verb in TERMINAL else None
            if texts[key].endswith(f'comment "{POLICY_MARK}"'):
                self.end[name] = key
        self.text = {key: texts[key] for key in self.chain}
        # a rule's text names it within its chain; for .accepted_by (no chain given) within the rule set
        self.by_text: dict[str, list[tuple[str, str, int]]] = {}
        for key, text in self.text.items():
            self.by_text.setdefault(text, []).append(key)

    def inbound(self, key: tuple[str, str, int]) -> bool:
        return self.hook.get(self.chain[key]) in INBOUND


def countable(dut: Any) -> Rules:
    """Give every rule a counter right before its verdict and every base chain a counting rule at its
    end; check on the kernel's bytecode that nothing else changed."""
    before = _bytecode(dut)
    texts = dut.nft.rules()
    for item in _listing(dut):
        rule = item.get("rule")
        if not rule or rule["table"] in OURS:
            continue
        exprs, key = rule["expr"], (rule["family"], rule["table"], rule["handle"])
        at = [i for i, e in enumerate(exprs) if isinstance(e, dict) and isinstance(e.get("counter"), dict)]
        if at:  # one of its own: it must count what the rule decided, so right before the verdict
            verdict = isinstance(exprs[-1], dict) and next(iter(exprs[-1])) in TERMINAL
            assert at == [len(exprs) - 2 if verdict else len(exprs) - 1], f"a counter mid-rule: {texts[key]}"
            continue
        dut.nft.nft(f"replace rule {rule['family']} {rule['table']} {rule['chain']} handle {rule['handle']} "
                    f"{_counted(texts[key])}")
    for item in _listing(dut):
        chain = item.get("chain")
        if chain and "hook" in chain and chain["table"] not in OURS:
            dut.nft.nft(f'add rule {chain["family"]} {chain["table"]} {chain["name"]} counter comment "{POLICY_MARK}"')
    # In the kernel: each rule as it was, with a counter right before its verdict (a rule that goes on:
    # at its end) unless it had one; and at each base chain's end a rule that only counts.
    want = {}
    for at_rule, body in before.items():
        decides = bool(body) and re.match(r"\[ (immediate reg 0 |reject )", body[-1]) is not None
        want[at_rule] = (body if COUNTER in body else body[:-1] + [COUNTER] + body[-1:] if decides
                         else body + [COUNTER])
    after = _bytecode(dut)
    ends = {k for k in after if k not in before}
    assert {k: after[k] for k in after if k not in ends} == want, "adding counters changed what a rule does"
    assert all(after[k] == [COUNTER] for k in ends) and len({k[:3] for k in ends}) == len(ends), ends  # one a chain
    rules = Rules(dut)
    assert set(dut.nft.counters().by_rule) == set(rules.chain), "every rule counts"
    return rules


# --- the corpus ---------------------------------------------------------------------------------------------------

def _v4(rng: random.Random) -> str:
    net = rng.choice([ADMIN, ADMIN, OUTSIDE, OUTSIDE, LINK])
    return f"{net}.{rng.randrange(3, 250)}"


def _v6(rng: random.Random) -> str:
    # Within the DUT's on-link /64: its answers go to its own MAC (NOARP) and the peer drops them
    # unseen. (The peer, no router, would answer an off-link one with "no route" back to the DUT.)
    return f"2001:db8::{rng.randrange(0x100, 0xffff):x}:{rng.randrange(1, 0xffff):x}"


def corpus(rng: random.Random, ip: str, ip6: str) -> list[Packet]:
    """TCP SYNs, ACKs, RSTs, SYN+FINs and handshakes' ACKs, UDP (to sockets, to none, replies to the DUT's
    own queries), ICMP and ICMPv6 echo requests and replies, errors that quote the DUT's queries (related)
    and errors that quote nothing it sent; IPv4 from in and outside the admin net, and IPv6; payloads of
    random length, so that a rule's byte counter tells which packets it decided, not only how many."""
    out: list[Packet] = []
    later: list[Packet] = []  # handshakes' ACKs, sent after their SYN
    kinds = ["syn"] * 6 + ["ack"] * 2 + ["synfin", "udp", "udp", "udp", "reply", "reply", "echo", "echo",
                                         "pong", "error", "related", "handshake"]
    for _ in range(PACKETS):
        six = rng.random() < 0.4
        src, dst = (_v6(rng), ip6) if six else (_v4(rng), ip)
        l3 = IPv6(src=src, dst=dst) if six else IP(src=src, dst=dst)
        kind = rng.choice(kinds)
        sport, port = rng.randrange(1024, 65535), rng.choice(TCP_PORTS + [rng.randrange(1, 65535)])
        data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, rng.randrange(1, 400)])))
        seq, ack = rng.randrange(1 << 32), rng.randrange(1 << 32)
        if kind in ("syn", "handshake"):
            out.append(l3 / TCP(sport=sport, dport=port, flags="S", seq=seq) / data)
            if kind == "handshake":  # its ACK, acknowledging what the DUT's SYN-ACK did not say (a guess)
                later.append(l3 / TCP(sport=sport, dport=port, flags="A", seq=seq + 1, ack=ack))
        elif kind == "ack":
            out.append(l3 / TCP(sport=sport, dport=port, flags=rng.choice(["A", "PA", "FA", "R"]), seq=seq, ack=ack) / data)
        elif kind == "synfin":
            out.append(l3 / TCP(sport=sport, dport=port, flags="SF", seq=seq) / data)
        elif kind == "udp":
            out.append(l3 / UDP(sport=sport, dport=rng.choice(UDP_PORTS + [rng.randrange(1, 65535)])) / data)
        elif kind == "reply":  # from where the DUT asked: established, to the open socket or the closed one
            l3 = IPv6(src=RESOLVER6, dst=ip6) if six else IP(src=RESOLVER, dst=ip)
            out.append(l3 / UDP(sport=53, dport=rng.choice([OPEN_Q, CLOSED_Q])) / data)
        elif kind == "echo":
            out.append(l3 / (ICMPv6EchoRequest if six else ICMP)(id=rng.randrange(1 << 16), seq=rng.randrange(1 << 16)) / data)
        elif kind == "pong":  # an echo reply nobody asked for
            pong: Packet = ICMPv6EchoReply(id=rng.randrange(1 << 16)) if six else ICMP(type=0, id=rng.randrange(1 << 16))
            out.append(l3 / pong / data)
        else:  # an ICMP error quoting one of the DUT's queries (related), or a datagram it never sent
            related = kind == "related"
            inner_dst = (RESOLVER6 if six else RESOLVER) if related else (_v6(rng) if six else _v4(rng))
            inner = (IPv6(src=ip6, dst=inner_dst) if six else IP(src=ip, dst=inner_dst))
            inner = inner / UDP(sport=rng.choice([OPEN_Q, CLOSED_Q]) if related else sport, dport=53) / b"query"
            errors: list[Packet] = ([ICMPv6DestUnreach(code=4), ICMPv6TimeExceeded(), ICMPv6PacketTooBig(mtu=1280)] if six
                                    else [ICMP(type=3, code=3), ICMP(type=11, code=0), ICMP(type=3, code=1)])
            error = rng.choice(errors)
            out.append(l3 / error / inner)
        if later and rng.random() < 0.3:
            out.append(later.pop(0))
    out += later
    # Identical packets back to back, which only their order tells apart: echo requests first (the edge
    # firewall's limit lets the first 5 through and drops the rest), and where conntrack fails to
    # confirm some of them (a clash) after a rule accepted them.
    bursts = [IP(src=f"{OUTSIDE}.7", dst=ip) / ICMP(id=7, seq=7) / b"same",
              IPv6(src="2001:db8::7", dst=ip6) / ICMPv6EchoRequest(id=7, seq=7) / b"same",
              IP(src=f"{ADMIN}.7", dst=ip) / UDP(sport=7777, dport=53) / b"same",
              IP(src=f"{ADMIN}.8", dst=ip) / TCP(sport=8888, dport=22, flags="S", seq=1)]
    for i, burst in enumerate(bursts):
        at = i * len(out) // 4
        out[at:at] = [burst] * 40
    return out


def _ip(frame: bytes) -> tuple[int, bytes, bytes, int, bytes, bytes]:
    """version, source, destination, protocol, transport bytes, the datagram (to its own length: a sent
    frame ends in pktassert's trailer). No extension headers here."""
    l3 = frame[14:]
    if l3[0] >> 4 == 4:
        l3 = l3[:int.from_bytes(l3[2:4], "big")]
        return 4, l3[12:16], l3[16:20], l3[9], l3[(l3[0] & 15) * 4:], l3
    l3 = l3[:40 + int.from_bytes(l3[4:6], "big")]
    return 6, l3[8:24], l3[24:40], l3[6], l3[40:], l3


ERRORS = {4: (3, 4, 11, 12), 6: (1, 2, 3, 4)}  # ICMP and ICMPv6 error types
QUOTED = {4: 28, 6: 48}  # bytes of the offending packet an error quotes, at least: its IP header and 8 more


def answer_seen(frame: bytes) -> tuple[tuple[Any, ...], str] | None:
    """What a frame the peer received from the DUT answers, and how: the packet's key (see
    ``answer_keys``) and "ICMP t/c", "RST" or "echo reply"; None for anything else (SYN-ACKs, queries)."""
    v, src, dst, proto, l4, _ = _ip(frame)
    if proto == (1 if v == 4 else 58):
        if l4[0] in ERRORS[v]:
            return ("quote", l4[8:8 + QUOTED[v]]), f"ICMP {l4[0]}/{l4[1]}"
        if l4[0] == (0 if v == 4 else 129):
            return ("echo", dst, l4[4:]), "echo reply"  # to the asker: identifier, sequence number, data
    if proto == 6 and l4[13] & 0x04:  # a reset: its numbers follow from the packet's (RFC 9293 3.10.7.1)
        if l4[13] & 0x10:
            return ("rst", dst, src, l4[2:4], l4[0:2], "no ack", int.from_bytes(l4[8:12], "big")), "RST"
        return ("rst", dst, src, l4[2:4], l4[0:2], "ack", int.from_bytes(l4[4:8], "big")), "RST"
    return None


def answer_keys(frame: bytes) -> dict[str, tuple[Any, ...]]:
    """How an answer to this injected packet would be known, by kind of answer."""
    v, src, dst, proto, l4, l3 = _ip(frame)
    keys: dict[str, tuple[Any, ...]] = {"ICMP": ("quote", l3[:QUOTED[v]])}
    if proto == 6:
        flags = l4[13]
        if flags & 0x10:
            keys["RST"] = ("rst", src, dst, l4[0:2], l4[2:4], "ack", int.from_bytes(l4[8:12], "big"))
        else:
            length = len(l4) - (l4[12] >> 4) * 4 + (flags & 0x02 > 0) + (flags & 0x01)
            keys["RST"] = ("rst", src, dst, l4[0:2], l4[2:4], "no ack", (int.from_bytes(l4[4:8], "big") + length) % (1 << 32))
    if proto == (1 if v == 4 else 58) and l4[0] == (8 if v == 4 else 128):
        keys["echo reply"] = ("echo", src, l4[4:])
    return keys


# --- the kernel's own counters --------------------------------------------------------------------------------------

def counted(dut: Any) -> dict[tuple[str, str, int], tuple[int, int]]:
    """Each rule's own counter: (packets, bytes) by (family, table, handle)."""
    out = {}
    for item in _listing(dut):
        rule = item.get("rule")
        if rule and rule["table"] not in OURS:
            c = next(e["counter"] for e in rule["expr"] if isinstance(e, dict) and isinstance(e.get("counter"), dict))
            out[(rule["family"], rule["table"], rule["handle"])] = (c["packets"], c["bytes"])
    return out


def snmp(dut: Any) -> dict[str, int]:
    """The DUT namespace's /proc/net/snmp ("Icmp.OutDestUnreachs", "IcmpMsg.OutType3") and snmp6."""
    with dut.topology.dut.ns.entered():  # /proc/net follows the reading thread's namespace
        with open("/proc/thread-self/net/snmp") as f:
            v4 = f.read().splitlines()
        with open("/proc/thread-self/net/snmp6") as f:
            v6 = f.read().splitlines()
    out: dict[str, int] = {}
    for head, values in zip(v4[::2], v4[1::2]):
        proto, names = head.split(":")
        out.update({f"{proto}.{n}": int(v) for n, v in zip(names.split(), values.split(":")[1].split())})
    out.update({name: int(value) for name, value in (line.split() for line in v6 if line.strip())})
    return out


def rose(before: dict[Any, Any], after: dict[Any, Any]) -> dict[Any, Any]:
    """after - before, key by key (a pair of numbers element-wise)."""
    def minus(a: Any, b: Any) -> Any:
        return tuple(x - y for x, y in zip(a, b)) if isinstance(a, tuple) else a - b
    zero = next(iter(after.values())) if after else 0
    zero = tuple(0 for _ in zero) if isinstance(zero, tuple) else 0
    return {k: minus(after.get(k, zero), before.get(k, zero)) for k in set(before) | set(after)}


# --- the test -----------------------------------------------------------------------------------------------------

COMPARED: list[tuple[str, int, int]] = []  # rule set, packets, rules and policies compared


@pytest.fixture(scope="module", autouse=True)
def compared_line(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if COMPARED:
        line = (f"rule oracle: {len(COMPARED)} rule sets x {sum(n for _, n, _ in COMPARED):,} packets compared "
                f"({', '.join(f'{name} {n:,}' for name, n, _ in COMPARED)}); "
                f"{sum(k for _, _, k in COMPARED)} rules and policies against their own nft counters")
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None and not hasattr(request.config, "workerinput"):
            with capture.global_and_fixture_disabled():  # a module's teardown output is captured otherwise
                reporter.write_line(line)
        else:
            print(line)


RULE_SETS = [
    pytest.param(EDGE, marks=pytest.mark.nftables(str(EDGE)), id="edge_firewall"),
    pytest.param(ARCH, marks=pytest.mark.nftables(str(ARCH)), id="archlinux"),
    pytest.param(WORKSTATION, id="debian_workstation", marks=[
        pytest.mark.nftables(str(WORKSTATION)),
        pytest.mark.skipif(not WORKSTATION.exists(), reason="needs Debian's nftables examples: apt-get install nftables")]),
]


@pytest.mark.parametrize("rule_set", RULE_SETS)
def test_rules_fates_and_answers_agree_with_the_kernels_counters(rule_set: Path, dut: Any, inject: Any) -> None:
    rules = countable(dut)
    dut.listen(tcp=LISTEN_TCP, udp=LISTEN_UDP)
    asking, gone = dut.listen(udp=[OPEN_Q, CLOSED_Q])
    for q in (asking, gone):  # the DUT's own queries: replies to them are established, errors quoting them related
        q.sock.sendto(b"query", ("::ffff:" + RESOLVER, 53))
        q.sock.sendto(b"q6", (RESOLVER6, 53))
    gone.close()
    packets = corpus(random.Random(SEED), dut.ip, dut.ip6)
    ns = dut.topology.dut.ns

    by_rule, own, ct0, net0, stray = dut.nft.counters().by_rule, counted(dut), conntrack_stats(ns), snmp(dut), dut.stray_counts()
    seen_before = len(dut.received_by_peer())
    r = inject(packets)
    by_rule, own = rose(by_rule, dut.nft.counters().by_rule), rose(own, counted(dut))
    ct, net = rose(ct0, conntrack_stats(ns)), rose(net0, snmp(dut))
    n = len(packets)
    assert r.sent == r.accounted == n
    # Nothing else reached the DUT meanwhile (the rule set's counters count whatever does), and each
    # packet reached IP once.
    assert dut.stray_counts() == stray and net["Ip.InReceives"] + net["Ip6InReceives"] == n
    assert by_rule == {k: p for k, (p, _) in own.items()}  # pktassert's reading of the counters, and ours
    frames = [_ip(r.frame(i)) for i in range(n)]

    # 1. Which rule decided: pktassert's (nftables tracing) against each rule's own counter, packets
    # and bytes (the packets' lengths differ: the bytes say which packets a rule counted).
    decided: Counter[tuple[str, str, int]] = Counter()
    decided_bytes: Counter[tuple[str, str, int]] = Counter()
    conntrack_dropped = 0
    for p in r:
        if p.rule is not None:
            if p.rule.startswith("policy "):
                assert p.rule == f"policy {rules.policy[p.chain]}"
                key = rules.end[p.chain]
            else:
                keys = [k for k in rules.by_text[p.rule] if rules.chain[k] == p.chain]
                assert len(keys) == 1, f"{p.rule!r} in {p.chain}: which of {keys}?"
                key = keys[0]
        elif p.accepted_by is not None:  # accepted, then dropped by conntrack: the rule counted it
            keys = [k for k in rules.by_text.get(p.accepted_by, []) if rules.inbound(k)] + [
                rules.end[c] for c, pol in rules.policy.items()
                if p.accepted_by == f"policy {pol}" and rules.hook[c] in INBOUND]
            assert len(keys) == 1, f"accepted by {p.accepted_by!r}: which of {keys}?"
            key = keys[0]
            assert (p.dropped_by or "").startswith("conntrack, after the rule set accepted it"), p.dropped_by
        else:  # conntrack dropped it before any chain of the rule set saw it
            assert p.fate == Fate.NETFILTER_DROPPED, f"no rule for {r.summary(p.pos)} ({p.fate}, {p.detail()})"
            conntrack_dropped += 1
            continue
        decided[key] += 1
        decided_bytes[key] += len(frames[p.pos][5])
        verdict = rules.verdict[key] or rules.policy[rules.chain[key]]  # a counting rule at the end: the policy's
        if p.rule is not None:  # the rule's verdict, from tracing, against the fate, from the kernel's frees
            assert (p.fate == Fate.NETFILTER_DROPPED) == (verdict in ("drop", "reject")), \
                f"{r.summary(p.pos)}: {p.fate} but decided by {p.rule!r}"
    compared, wrong = 0, []
    for key, chain in rules.chain.items():
        if not rules.inbound(key):  # the DUT's own traffic is counted there, which injected packets never meet
            assert decided[key] == 0
        elif rules.verdict[key] is None and key not in rules.end.values():
            assert decided[key] == 0, f"a rule that only counts named as the one that decided: {rules.text[key]}"
        else:
            compared += 1
            if (decided[key], decided_bytes[key]) != own[key]:
                wrong.append(f"{chain}: {rules.text[key]}: pktassert {decided[key]} packets, {decided_bytes[key]} "
                             f"bytes; the rule's counter {own[key][0]} packets, {own[key][1]} bytes")
    assert not wrong, "\n".join(wrong)
    assert sum(decided.values()) + conntrack_dropped == n

    # 2. What netfilter dropped: the drop and reject rules and the drop policies, and conntrack itself.
    # Conntrack's "drop" counts its own drops: an entry it could not confirm after a rule accepted the
    # packet (a clash of identical packets: "insert_failed" too) or a packet its tracker refused before
    # any chain; "invalid" and "icmp_error" only mark packets (no entry: "ct state invalid"), which
    # the rule set drops or not.
    dropping = sum(by_rule[k] for k, verb in rules.verdict.items() if verb in ("drop", "reject") and rules.inbound(k))
    dropping += sum(by_rule[rules.end[c]] for c, pol in rules.policy.items() if pol == "drop" and rules.hook[c] in INBOUND)
    by_conntrack = sum(1 for p in r if p.dropped_by is not None and p.dropped_by.startswith("conntrack"))
    assert r.count(Fate.NETFILTER_DROPPED) == dropping + ct["drop"]
    assert by_conntrack + conntrack_dropped == ct["drop"] and by_conntrack == ct["insert_failed"]
    # Where "ct state invalid drop" follows only "ct state established,related accept" (the edge firewall,
    # Arch's), what it decided is every packet conntrack found no entry for, by conntrack's own count.
    first = [k for k in rules.chain if rules.chain[k] == rules.chain[next(iter(rules.chain))]][:2]
    heads = [rules.text[k] for k in first]
    if heads[0].startswith("ct state ") and "established" in heads[0] and heads[1:] == ["ct state invalid counter drop"]:
        assert decided[first[1]] == ct["invalid"] + ct["icmp_error"] - conntrack_dropped  # a tracker's drop: invalid too

    # 3. The stack's answers: each one the peer received, tied to the packet it answers (an ICMP error by
    # its quote, a reset by its numbers, an echo reply by its identifier, sequence number and data),
    # against each packet's .answer (an echo request's: CONSUMED); in sum against the DUT's SNMP counters.
    seen = Counter(a for a in map(answer_seen, (bytes(f) for f in dut.received_by_peer()[seen_before:])) if a)
    said: Counter[tuple[tuple[Any, ...], str]] = Counter()
    answered: Counter[tuple[int, str]] = Counter()  # (IP version, "RST", "ICMP 3", "echo reply")
    for p in r:
        answer, ways, version = p.answer, answer_keys(r.frame(p.pos)), frames[p.pos][0]
        assert answer != "unknown", r.summary(p.pos)
        if p.fate == Fate.CONSUMED and "echo reply" in ways:
            answer = "echo reply"
        if answer is not None:
            way = ways.get(answer if answer == "echo reply" else answer.split(" ")[0])
            assert way is not None, f"{r.summary(p.pos)}: answered {answer}, which cannot answer it"
            said[way, answer] += 1
            answered[version, answer.split("/")[0]] += 1
    assert said == seen, f"pktassert only: {said - seen}; the peer only: {seen - said}"
    udp = Counter((v, r[i].reason) for i, (v, _, _, proto, _, _) in enumerate(frames) if proto == 17)
    want = {"Tcp.OutRsts": answered[4, "RST"] + answered[6, "RST"],  # one TCP MIB for both
            "Icmp.OutEchoReps": answered[4, "echo reply"], "Icmp6OutEchoReplies": answered[6, "echo reply"],
            "Icmp.OutDestUnreachs": answered[4, "ICMP 3"], "Icmp6OutDestUnreachs": answered[6, "ICMP 1"],
            "Udp.NoPorts": udp[4, "NO_SOCKET"], "Udp6NoPorts": udp[6, "NO_SOCKET"],  # before its ICMP error, if any
            "Udp.RcvbufErrors": udp[4, "SOCKET_RCVBUFF"], "Udp6RcvbufErrors": udp[6, "SOCKET_RCVBUFF"]}
    want |= {f"IcmpMsg.OutType{t}": answered[4, f"ICMP {t}"] for t in ERRORS[4]}
    want |= {f"Icmp6OutType{t}": answered[6, f"ICMP {t}"] for t in ERRORS[6]}
    assert {k: net.get(k, 0) for k in want} == want
    print(f"{rule_set.name}: {n} packets, {compared} rules and policies compared; {dict(r.fates())}; "
          f"conntrack dropped {ct['drop']}; {sum(seen.values())} answers: { {k: v for k, v in want.items() if v} }")
    COMPARED.append((rule_set.name, n, compared))
