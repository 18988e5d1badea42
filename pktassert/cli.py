"""``pktassert``: the engine from the shell. ``probe`` a filter with a few packets, ``replay`` a capture
through it, ``diff`` two filters (or a filter and a rule set) on the same traffic, ``cleanup`` what a
crashed run left. Each runs through pktassert.Session or pktassert.compare, as a test would.

Exit codes: 0 done (diff: no difference), 1 diff: something differs, 2 a user error (a bad file, entry
function, expression or capture; a verifier rejection), 3 the host lacks something (root, bcc, ...),
4 a bug of pktassert's (one line; PKTASSERT_DEBUG=1 shows the traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import difflib
import hashlib
import json
import os
import random
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from pktassert import cleanup
from pktassert.case import TIERS
from pktassert.compare import compare
from pktassert.errors import HostLacks, PktassertError
from pktassert.hooks.table import HOOKS
from pktassert.netns.topology import DUT_IP, DUT_IP6, PEER_IP, PEER_IP6
from pktassert.programs.subjects import subject_of
from pktassert.reports import evidence, junit_merge
from pktassert.results import offender
from pktassert.results.capture import Capture
from pktassert.session import Session
from pktassert.traffic.source import Part, Traffic

OK, DIFFERS, USER, HOST, BUG, INTERRUPTED = 0, 1, 2, 3, 4, 130
CHUNK = 100_000  # a generated flood goes in parts of at most this many packets (progress between parts)
RULESETS = (".nft", ".nftables")
ADDRESSES = {"DUT": DUT_IP, "DUT6": DUT_IP6, "PEER": PEER_IP, "PEER6": PEER_IP6}
FLOOD_VARY = {"src": "198.51.100.0/24", "sport": (1, 65535), "dport": (1, 65535)}
SUBJECT = "a bcc .c, libbpf .bpf.c or ELF .o filter (with --func), or an nftables .nft rule set (live tier)"
EXPR_FIX = "Fix: a scapy expression such as 'IP(dst=DUT)/TCP(dport=23)' (names: scapy's layers, DUT, DUT6, PEER, PEER6)."


class UserError(PktassertError):
    """What the command line itself got wrong, found before anything is loaded."""


def _subject(text: str, func: str | None, flag: str = "--func") -> Path:
    """The path of a filter or rule set; refused here, with the command line's fix, when it cannot be one."""
    path = Path(text)
    if not path.is_file():
        raise UserError(f"{text}: no such file. Fix: the path of {SUBJECT}.")
    if path.name.endswith(RULESETS):
        return path
    with open(path, "rb") as f:
        elf = f.read(4) == b"\x7fELF"
    if not (elf or path.suffix in (".c", ".o")):  # anything else would reach clang or bcc as C
        raise UserError(f"{text} is neither C, an ELF object nor a rule set. Fix: {SUBJECT}.")
    if func is None:
        raise UserError(f"{text} is a BPF filter: which function is its entry? Fix: {flag} NAME.")
    return path


def _dut_args(args: argparse.Namespace) -> dict[str, Any]:
    """What Session.dut() takes for the subject: a filter at its hook, or a rule set behind the pass-through."""
    path = _subject(args.subject, args.func)
    if path.name.endswith(RULESETS):
        if args.tier == "unit":
            raise UserError(f"{path} is a rule set, which only the live tier's kernel stack judges. Fix: --tier live.")
        return {"nftables": path}
    return {args.hook: subject_of(path, args.func, hook=args.hook)}


def _scope(every: bool) -> dict[str, Any]:
    """What --packet expressions see: scapy's layers (those loaded, or ``every`` one), the topology's
    addresses, and no builtins."""
    if every:
        import scapy.layers.all  # noqa: F401, PLC0415 - every layer (seconds): only for a name the loaded ones lack
    from scapy.config import conf  # noqa: PLC0415 - read after the import above, which grows conf.layers

    return {**{c.__name__: c for c in conf.layers if isinstance(c, type) and issubclass(c, Packet)}, **ADDRESSES,
            "__builtins__": {}}


def _packets(expr: str) -> list[Packet]:
    """The packets one --packet expression makes (scapy's implicit packets, dport=[22, 23], make several)."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise UserError(f"--packet {expr!r}: not an expression ({e.msg}). {EXPR_FIX}") from None
    for node in ast.walk(tree):  # a packet needs no private attribute: refused rather than reached through eval
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
        if name.startswith("_"):
            raise UserError(f"--packet {expr!r}: {name} is no packet's. {EXPR_FIX}")
    for every in (False, True):  # the layers pktassert loaded make most packets: all of scapy's only if they don't
        scope = _scope(every)
        try:
            value = eval(compile(tree, "--packet", "eval"), scope)  # the user's own expression, without builtins
            break
        except NameError as e:
            if every:
                near = difflib.get_close_matches(str(e.name), [k for k in scope if not k.startswith("_")], n=1)
                raise UserError(f"--packet {expr!r}: unknown name {e.name}{f' (did you mean {near[0]}?)' if near else ''}"
                                f". {EXPR_FIX}") from None
        except Exception as e:  # noqa: BLE001 - scapy refuses a bad field or value with many exception types
            why = f"no field {e}" if isinstance(e, AttributeError) else f"{type(e).__name__}: {e}"
            raise UserError(f"--packet {expr!r}: scapy refused it ({why}). {EXPR_FIX}") from None
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(p, Packet) for p in items):
        raise UserError(f"--packet {expr!r}: makes {value!r} ({type(value).__name__}), not packets. {EXPR_FIX}")
    packets = [q for p in items for q in p]
    if not packets:
        raise UserError(f"--packet {expr!r}: makes no packet (an empty list of values?). {EXPR_FIX}")
    return packets


def _generated(n: int, seed: int) -> list[Part]:
    """``n`` packets to the DUT, half TCP, half UDP, random ports and sources, in parts of at most CHUNK: cut
    the same way whatever the terminal, and each part seeded from ``seed`` (one seed would repeat each part)."""
    parts: list[Part] = []
    for proto, template, count in (("TCP", IP(dst=DUT_IP) / TCP(), n - n // 2), ("UDP", IP(dst=DUT_IP) / UDP(), n // 2)):
        for i, start in enumerate(range(0, count, CHUNK)):
            key = hashlib.blake2b(f"pktassert diff {seed} {proto} {i}".encode(), digest_size=8).digest()
            flood = Traffic.flood(template, min(CHUNK, count - start), vary=FLOOD_VARY, seed=int.from_bytes(key, "little"))
            parts += [dataclasses.replace(p, label=f"generated {proto} {start + 1:,}..{start + len(p):,}") for p in flood]
    return parts


class _Reported(Traffic):
    """Traffic that says how much of it each side has sent: compare() sends every part through A, then all
    through B, taking the parts in order, so taking the next part means the last one is sent."""

    def __init__(self, parts: Sequence[Part], say: Callable[[str], None]) -> None:
        super().__init__(parts)
        self._say, self._passes = say, 0

    def __iter__(self) -> Iterator[Part]:
        side, self._passes, done = "AB"[min(self._passes, 1)], self._passes + 1, 0
        for part in self.parts:
            yield part
            done += len(part)
            self._say(f"{side}: sent {done:,} of {len(self):,}")


def _table(rows: Sequence[Sequence[object]], numbers: Sequence[int] = ()) -> str:
    """Rows as aligned columns (those in ``numbers`` right-aligned); the first row is the heading."""
    cells = [[f"{c:,}" if isinstance(c, int) else ("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.rjust(w) if i in numbers else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     .rstrip() for r in cells)


def _counts(title: str, counts: dict[str, int]) -> str:
    return _table([(title, "packets"), *counts.items()], numbers=(1,))


def _emit(doc: dict[str, Any], human: Callable[[], str], as_json: bool) -> None:
    print(json.dumps(doc, indent=2) if as_json else human())


def _what(args: argparse.Namespace) -> str:
    at = "" if args.subject.endswith(RULESETS) else f" ({args.func} at {args.hook})"
    return f"{args.subject}{at}, {args.tier} tier"


def _packet(cap: Capture, i: int, expr: str) -> dict[str, Any]:
    """One probed packet: its verdict, what the inspector parsed (by where()'s names), and in the live
    tier its fate, the kernel's drop reason, the stack's answer and (with a rule set) the deciding rule."""
    name = {column: field for field, column in offender.PARSED.items()}
    parsed = {name.get(k, k): v for k, v in offender.parsed(cap, i).items()}
    if "flags" in parsed:
        parsed["flags"] = str(TCP(flags=parsed["flags"]).flags)
    o = cap[i]
    out = {"number": int(cap.index[i]), "expression": expr, "summary": Ether(cap.frame(i)).summary(),
           "verdict": cap.actions.name_of(o.ret), "ret": o.ret, "parsed": parsed}
    if cap.fate_codes is not None:
        out.update(fate=o.fate.name, reason=o.reason, answer=o.answer)
    if cap.fate_rules is not None:
        out.update(rule=o.rule, chain=o.chain)
    return out


def _need_root() -> None:
    """Called once the command line is known to be sound: a user error is said first, root or not."""
    if os.geteuid() != 0:
        raise HostLacks("root", "needs root (network namespaces, BPF)")


def _probe(args: argparse.Namespace) -> int:
    exprs = [(expr, p) for expr in args.packet for p in _packets(expr)]
    dut_args = _dut_args(args)
    _need_root()
    with Session(tier=args.tier) as s, s.dut(**dut_args) as d:
        cap = d.inject([p for _, p in exprs])
    rows = [_packet(cap, i, exprs[i][0]) for i in range(len(cap))]
    extra = [k for k in ("fate", "reason", "answer", "rule") if k in rows[0]]

    def human() -> str:
        body = [(r["number"], r["verdict"], *(r[k] for k in extra), r["summary"],
                 " ".join(f"{k}={v}" for k, v in r["parsed"].items())) for r in rows]
        head = ["#", "verdict", *extra, "packet", "parsed by the inspector"]
        return f"{_what(args)}: {cap.counts_text()}\n{_table([head, *body], numbers=(0,))}"
    _emit({"subject": args.subject, "func": args.func, "hook": args.hook, "tier": args.tier, "counts": cap.counts(),
           "packets": rows}, human, args.json)
    return OK


def _replay(args: argparse.Namespace) -> int:
    dut_args = _dut_args(args)
    _need_root()
    with Session(tier=args.tier) as s, s.dut(**dut_args) as d:
        cap = d.inject.pcap(args.capture, speed=args.speed)
        written = evidence.write(Path(args.pcapng), [cap], f"pktassert replay {args.capture}") if args.pcapng else None
    doc: dict[str, Any] = {"subject": args.subject, "capture": args.capture, "func": args.func, "hook": args.hook,
                           "tier": args.tier, "packets": cap.sent, "accounted": cap.accounted, "verdicts": cap.counts()}
    if cap.fate_codes is not None:
        doc.update(fates={k.name: v for k, v in cap.fates().items()}, reasons=cap.reasons())
    if cap.fate_rules is not None:  # which rule decided: known for calls of up to 65,536 packets
        doc["rules"] = dict(collections.Counter(o.rule or "(no rule)" for o in cap).most_common())
    if written is not None:
        doc["pcapng"] = {"path": args.pcapng, "packets": written}

    def human() -> str:
        out = [f"replay of {args.capture} through {_what(args)}: {cap.sent:,} packets sent, {cap.accounted:,} accounted for"]
        out += [_counts(title, doc[k]) for k, title in (("verdicts", "verdict"), ("fates", "fate"),
                                                        ("reasons", "drop reason"), ("rules", "deciding rule")) if doc.get(k)]
        wrote = [] if written is None else [f"wrote {written:,} packets with their verdicts to {args.pcapng}"]
        return "\n\n".join(out + wrote)
    _emit(doc, human, args.json)
    return OK


def _pair(args: argparse.Namespace, flag: str) -> tuple[str | None, str | None]:
    both, a, b = (getattr(args, f"{flag}{s}") for s in ("", "_a", "_b"))
    if both is not None and (a is not None or b is not None):
        raise UserError(f"--{flag} is for both sides, --{flag}-a/--{flag}-b for one. Fix: one or the other.")
    return (a if a is not None else both), (b if b is not None else both)


def _diff(args: argparse.Namespace) -> int:
    funcs, hooks = _pair(args, "func"), _pair(args, "hook")
    for side, func, flag in ((args.a, funcs[0], "--func (or --func-a)"), (args.b, funcs[1], "--func (or --func-b)")):
        if not side.startswith("git:"):  # compare() reads git:REV:PATH itself, and says what is wrong with it
            _subject(side, func, flag)
    if not args.pcap and not args.generate:
        raise UserError("diff: no traffic to compare them on. Fix: --pcap FILE (one or more) and/or --generate N.")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    parts = [p for f in args.pcap for p in Traffic.pcap(f)] + (_generated(args.generate, seed) if args.generate else [])
    loud = args.progress or (sys.stderr.isatty() and (args.generate or 0) > CHUNK)
    traffic = _Reported(parts, lambda line: print(f"pktassert diff: {line}", file=sys.stderr, flush=True)) if loud \
        else Traffic(parts)
    _need_root()
    # A rule set's side has no entry function: None there, which compare() takes (its hint says str).
    diff = compare(args.a, args.b, traffic, func=funcs, hook=(hooks[0] or "xdp", hooks[1] or "xdp"),
                   tier=args.tier)
    written = diff.write_pcapng(Path(args.pcapng)) if args.pcapng else None
    doc = {**diff.to_json(), "traffic": [{"label": p.label, "packets": len(p)} for p in parts],
           **({"seed": seed} if args.generate else {}),
           **({"pcapng": {"path": args.pcapng, "packets": written}} if written is not None else {})}
    said = ", ".join([*args.pcap, *([f"{args.generate:,} generated (--seed {seed})"] if args.generate else [])])
    wrote = [] if written is None else [f"wrote the {written:,} differing packets to {args.pcapng}"]
    _emit(doc, lambda: "\n".join([f"traffic: {said}", str(diff), *wrote]), args.json)
    return DIFFERS if diff else OK


def _speed(text: str) -> float | str:
    try:
        if text == "max" or float(text) > 0:
            return text if text == "max" else float(text)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: \"max\", or a factor of the recorded timing (1.0: as recorded)")


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of packets, from 1")
    return int(text)


Option = tuple[tuple[str, ...], dict[str, Any]]
JSON: Option = (("--json",), {"action": "store_true", "help": "one JSON document on stdout instead of tables"})
ONE_SUBJECT: list[Option] = [
    (("subject",), {"help": SUBJECT}),
    (("--func",), {"help": "the filter's entry function (of an .o: by function or section)"}),
    (("--hook",), {"choices": sorted(HOOKS), "default": "xdp", "help": "where the filter runs (default: xdp; tc: ingress)"}),
    (("--tier",), {"choices": TIERS, "default": "live", "help": "live (default: namespaces, a veth, each packet's fate "
                                                                "and drop reason) or unit (the kernel's test runs)"}),
    JSON]
TWO_SIDES: list[Option] = [
    (("a",), {"help": f"side A: {SUBJECT}; or git:REV:PATH"}), (("b",), {"help": "side B, as A"}),
    *((("--" + f + s,), {"help": f"{w} entry function" if f == "func" else f"{w} hook (default: xdp)",
                         **({"choices": sorted(HOOKS)} if f == "hook" else {})})
      for f in ("func", "hook") for s, w in (("", "both sides'"), ("-a", "side A's"), ("-b", "side B's"))),
    (("--pcap",), {"action": "append", "default": [], "metavar": "FILE", "help": "a capture to send (repeatable)"}),
    (("--generate",), {"type": _count, "metavar": "N", "help": "also N generated packets to the DUT: half TCP, half "
                                                              "UDP, random ports, sources in 198.51.100.0/24"}),
    (("--seed",), {"type": int, "help": "the generated packets' seed (default: a random one, shown)"}),
    (("--tier",), {"choices": TIERS, "help": "unit (default for two BPF filters: by verdict) or live (by verdict and "
                                             "fate; the default with a rule set)"}),
    (("--pcapng",), {"metavar": "OUT", "help": "write the packets that differ, each with both sides' answers"}),
    (("--progress",), {"action": "store_true", "help": f"say on stderr how much is sent (default: on a terminal, above "
                                                       f"{CHUNK:,} generated packets)"}),
    JSON]


def _merge(args: argparse.Namespace) -> int:
    summary = junit_merge.write([Path(s) for s in args.shards], Path(args.out))
    print(f"{args.out}: {len(args.shards)} shards merged")
    for line in summary.table():
        print(line)
    return OK


@dataclasses.dataclass(frozen=True)
class Command:
    run: Callable[[argparse.Namespace], int]
    help: str
    options: Sequence[Option]
    passthrough: bool = False  # its arguments are another program's (pktassert-cleanup's, --help included)


COMMANDS = {
    "probe": Command(_probe, "send a few packets through a filter or rule set: each one's verdict, parsed fields and "
                             "(live) fate, drop reason and deciding rule",
                     [*ONE_SUBJECT, (("--packet",), {"action": "append", "required": True, "metavar": "EXPR", "help":
                      "a scapy expression, e.g. 'IP(dst=DUT)/TCP(dport=23)' (DUT, DUT6, PEER, PEER6: the "
                      "topology's addresses); repeat it for more packets"})]),
    "replay": Command(_replay, "send a capture through a filter or rule set: counts per verdict (live: per fate, drop "
                               "reason, rule)",
                      [*ONE_SUBJECT, (("capture",), {"help": "a pcap or pcapng file of Ethernet frames"}),
                       (("--speed",), {"type": _speed, "default": "max", "help": "max (default), or a factor of the "
                                                                                 "recorded timing (live tier)"}),
                       (("--pcapng",), {"metavar": "OUT", "help": "write every packet with its verdict and fate, as "
                                                                  "the pytest plugin's evidence"})]),
    "diff": Command(_diff, "send the same traffic through two filters (or a filter and a rule set) and show where "
                           "they differ; exit 1 if they do", TWO_SIDES),
    "merge": Command(_merge, "merge the JUnit files of a suite's shards (pytest-split) into one; print the verdicts "
                             "per filter over them",
                     [(("out",), {"help": "the merged JUnit file to write"}),
                      (("shards",), {"nargs": "+", "metavar": "SHARD", "help": "each shard's --junitxml file"})]),
    "cleanup": Command(lambda args: cleanup.main(args.rest),
                       "free what a crashed run left: pktassert-cleanup (its options; --help lists them)", [], passthrough=True),
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pktassert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, add_help=not cmd.passthrough)
        for flags, kwargs in cmd.options:
            p.add_argument(*flags, **kwargs)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args, rest = ap.parse_known_args(argv)
    if COMMANDS[args.command].passthrough:
        args.rest = rest
    elif rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return COMMANDS[args.command].run(args)
    except HostLacks as e:
        return _fail(str(e), HOST)
    except PktassertError as e:
        # The engine's fixes name the Python arguments; here they are options.
        return _fail(re.sub(r"\b(Fix: |pass )func= ?", r"\1--func ", str(e)), USER)
    except BrokenPipeError:  # a reader that left (| head): nothing more to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except OSError as e:  # a file of the user's that cannot be read or written
        return _fail(f"{e.filename}: {e.strerror or e}" if e.filename else str(e), USER)
    except KeyboardInterrupt:
        return _fail("interrupted", INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - a bug of ours: one line, not a traceback, unless asked for
        if os.environ.get("PKTASSERT_DEBUG"):
            traceback.print_exc()
        return _fail(f"internal error, please report it: {type(e).__name__}: {e} (PKTASSERT_DEBUG=1 shows where)", BUG)


def _fail(message: str, code: int) -> int:
    print(f"pktassert: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
