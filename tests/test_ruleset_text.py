"""Rule set text, trusted for nothing (issue 20, item 4): an error in marker text is reported at its
line and column exactly as for the same text in a file; text nft cannot take (a lone surrogate, a
NUL, undecodable bytes, huge text) is one clear error; and seeded mutants of real rule sets each load
or give one clear PktassertError, never another exception, never a hang. Every rule set is loaded in
a throwaway namespace of pktassert's own (the root namespace's rule set is compared before and after).
More mutants: PKTASSERT_NFT_FUZZ_MUTANTS=2000 pytest tests/test_ruleset_text.py -s -k fuzz
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EDGE = HERE.parent / "examples/edge_firewall.nft"
DEBIAN = Path("/usr/share/doc/nftables/examples")  # Debian's nftables package (CI installs it)
ARCH = HERE / "third_party/archlinux-packages/nftables/trunk/nftables.conf"
SEED = 20
COUNT = int(os.environ.get("PKTASSERT_NFT_FUZZ_MUTANTS", "200"))
QUIET_FOR = 30  # seconds one mutant may take before the loader counts as hung (one takes milliseconds)
BAD = "table inet t {\n  chain input {\n    type filter hook input priority 0;\n    tcp dport 22 acept\n  }\n}\n"
pytestmark = pytest.mark.usefixtures("pktassert_ready")


def _root_ruleset() -> str:
    import nftables  # a context made here is bound to the root namespace: only read, to compare

    rc, out, err = nftables.Nftables().cmd("list ruleset")
    assert rc == 0, err
    return out


@pytest.fixture
def ns():
    from pktassert.netns import Namespace

    before = _root_ruleset()
    with Namespace("ruleset-text") as made:
        yield made
    assert _root_ruleset() == before


def _refused(ns, source) -> str:
    from pktassert import PktassertError
    from pktassert.programs.nft_ruleset import RuleSet

    with pytest.raises(PktassertError) as e:
        RuleSet(ns, source)
    msg = str(e.value)
    assert "Fix:" in msg and "Traceback" not in msg, msg
    return msg


# 1. An error in text is where it is, as in a file.

def test_an_error_in_text_is_at_its_line_and_column_as_in_a_file(ns, tmp_path):
    in_text = _refused(ns, BAD)
    assert "rule set text:4:23-23: Error: syntax error, unexpected newline\n    tcp dport 22 acept\n" in in_text
    path = tmp_path / "bad.nft"
    path.write_text(BAD)
    in_file = _refused(ns, path)
    assert in_file.replace(str(path), "the rule set text").replace("the rule set text:4", "rule set text:4") == in_text


def test_an_error_deep_in_a_real_rule_set_is_at_its_line(ns):
    lines = EDGE.read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if "tcp dport 443" in ln)
    lines[at] = lines[at].replace("accept", "acept")
    msg = _refused(ns, "\n".join(lines))
    assert f"rule set text:{at + 1}:" in msg and lines[at].strip() in msg, msg


def test_several_errors_each_at_its_line(ns):
    text = BAD.replace("tcp dport 22 acept", "tcp dport 22 acept\n    udp dport 53 drp")
    msg = _refused(ns, text)
    assert "rule set text:4:" in msg and "rule set text:5:" in msg, msg


def test_marker_text_is_reported_at_its_line(pytester):
    pytester.makepyfile(test_rules=f'''
import pytest

@pytest.mark.nftables({BAD!r})
def test_rules(dut):
    pass
''')
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    res.assert_outcomes(failed=1)  # pktassert reports its own errors as the failure, without a traceback
    res.stdout.fnmatch_lines(["pktassert: nftables rejects the rule set text:", "*rule set text:4:23-23: Error: syntax error*",
                              "*tcp dport 22 acept*", "*Fix: the rule set as `nft -c -f` accepts it.*"])


# 2. Text nft cannot take: one error, saying where and what to do.

@pytest.mark.parametrize(("text", "said"), [
    ("table inet t {\n  chain c {\n    tcp dport 22 \udcff accept\n  }\n}\n",
     r"'\\udcff' at line 3, column 18, a lone surrogate"),
    ("table inet t {}\n\ud800", r"'\\ud800' at line 2, column 1, a lone surrogate"),
    ("table inet t {\n  chain c {\x00}\n}\n", r"NUL character at line 2, column 12: .*silently left out"),
    ("table inet t {}\x00table inet u {}", r"NUL character at line 1, column 16"),
    (b"table inet t {\x00}", r"NUL character at line 1, column 15"),
])
def test_text_nft_cannot_take_is_refused_saying_where(ns, text, said):
    assert re.search(said, _refused(ns, text))


def test_bytes_that_are_not_utf8_are_nfts_to_judge_and_read_back(ns, tmp_path):
    from pktassert.programs.nft_ruleset import RuleSet

    rejected = b"table inet t {\n  chain c {\n    tcp dport 22 \xffaccept\n  }\n}\n"
    (tmp_path / "bad.nft").write_bytes(rejected)
    assert "rule set text:3:18-18: Error: syntax error" in _refused(ns, rejected)  # bytes: as a file's, nft's to judge
    assert f"{tmp_path / 'bad.nft'}:3:18-18: Error: syntax error" in _refused(ns, tmp_path / "bad.nft")
    (tmp_path / "ok.nft").write_bytes(b'table inet t {\n  chain c {\n    tcp dport 22 accept comment "caf\xe9"\n  }\n}\n')
    rules = RuleSet(ns, tmp_path / "ok.nft").rules()  # the comment is not UTF-8: read back, not a UnicodeDecodeError
    assert list(rules.values()) == ['tcp dport 22 accept comment "caf\ufffd"']


def test_huge_text_is_refused_and_a_huge_line_is_shown_around_its_error(ns):
    msg = _refused(ns, "# padding\n" * (7 << 20))
    assert "70.0 MiB, more than rule set text is taken as (64 MiB)" in msg and "name that file in the marker" in msg
    line = "table inet t { chain c { " + "tcp dport 22 accept; " * 200_000 + "tcp dport 22 acept } }"
    msg = _refused(ns, line)
    assert len(msg) < 1000 and "rule set text:1:" in msg, msg[:2000]
    assert "past the 1,023 characters nft shows of this line" in msg
    mid = "table inet t { chain c { " + "tcp dport 22 accept; " * 20 + "tcp dport 22 acept; " + "udp dport 1 drop; " * 50 + "} }"
    msg = _refused(ns, mid)
    shown = msg.splitlines()
    row = next(i for i, ln in enumerate(shown) if "acept" in ln and "Error" not in ln)
    assert len(shown[row]) <= 170 and shown[row + 1].rstrip().endswith("^") and len(msg) < 1000, msg
    assert shown[row][len(shown[row + 1].rstrip()) - 1] == ";"  # the caret under what nft complains of


LOAD_IN_A_CHILD = """
import sys
from pathlib import Path
from pktassert import PktassertError
from pktassert.netns import Namespace
from pktassert.programs.nft_ruleset import RuleSet

with Namespace("child") as ns:
    try:
        RuleSet(ns, Path(sys.argv[1]))
    except PktassertError as e:
        print("refused:", e)
"""


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_rule_set_path_that_is_not_a_file_is_refused_not_fatal(tmp_path, kind):
    # In a child: on a directory nft's scanner (flex) ends the whole process, the test run with it.
    path = tmp_path / "rules.nft"
    path.mkdir() if kind == "directory" else os.mkfifo(path)  # a FIFO nft would wait on for ever
    child = subprocess.run([sys.executable, "-c", LOAD_IN_A_CHILD, str(path)], capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == 0 and child.stdout.startswith(f"refused: nftables rule set {path} is "), child
    assert "Fix: the path of the .nft file itself" in child.stdout


def test_a_command_nft_cannot_take_is_refused_too(ns):
    from pktassert import PktassertError
    from pktassert.programs.nft_ruleset import RuleSet

    rules = RuleSet(ns, "table inet t {\n  chain c {\n  }\n}\n")
    with pytest.raises(PktassertError, match=r"lone surrogate.*Fix:"):
        rules.nft("add rule inet t c tcp dport 22 \udc80 accept")
    with pytest.raises(PktassertError, match=r"NUL character at line 1, column 10"):
        rules.nft("list rule\x00set")


# 3. Fuzz: seeded mutants of real rule sets, each loaded by the loader in a child process.

POOL = ["{", "}", ";", "\n", '"', "\\", "#", "$", "@", "*", "-", "/", ".", ",", ":", "\t", " ", "é", "\u202e",
        "\U0001F525", "\ud800", "\udcff", "\x00", "\x7f", "\x1b", "0x", "999999999999999999999", "-1", "65536",
        "accept", "drop", "jump", "goto", "counter", "limit rate", "ct state", "meta", "ip6", "define x = ",
        "$undefined", "@set", "table", "chain", "flush ruleset", "delete table inet edge"]


LIMITED = """
table ip svc {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 53 limit rate 1/minute burst 5 packets counter accept
    udp dport 53 counter drop
  }
}
"""  # as marker text in tests/test_nftables.py


def originals() -> dict[str, str]:
    """The example rule set, Debian's and Arch's, and marker text of this repository's tests."""
    found = {"edge_firewall": EDGE.read_text(), "limited": LIMITED, "arch": ARCH.read_text()}
    for name in ("workstation", "inet-nat", "ipv6-filter"):  # (others name eth0, or include files by path)
        if (DEBIAN / f"{name}.nft").exists():
            found[name] = (DEBIAN / f"{name}.nft").read_text()
    return found


def mutate(rng: random.Random, text: str) -> tuple[str, str]:
    """One mutant of ``text`` and the kind of damage done."""
    kind = rng.choice(["deleted", "inserted", "inserted", "word replaced", "number changed", "line doubled",
                       "line dropped", "lines swapped", "truncated", "undecodable bytes", "huge"])
    lines = text.split("\n")
    at = rng.randrange(len(text) + 1)
    if kind == "deleted":
        return kind, text[:at] + text[at + rng.randint(1, 6):]
    if kind == "inserted":
        return kind, text[:at] + "".join(rng.choice(POOL) for _ in range(rng.randint(1, 3))) + text[at:]
    if kind == "word replaced":
        words = list(re.finditer(r"[\w-]+", text))
        w = rng.choice(words)
        other = rng.choice([rng.choice(words).group(), rng.choice(POOL)])
        return kind, text[:w.start()] + other + text[w.end():]
    if kind == "number changed":
        numbers = list(re.finditer(r"\d+", text)) or list(re.finditer(r"\w+", text))
        n = rng.choice(numbers)
        value = rng.choice(["0", "-1", "65536", "4294967296", "18446744073709551616", "1" * 40, "0x" + "f" * 30])
        return kind, text[:n.start()] + value + text[n.end():]
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    if kind == "line doubled":
        lines.insert(i, lines[i])
    elif kind == "line dropped":
        del lines[i]
    elif kind == "lines swapped":
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "truncated":
        return kind, text[:at]
    elif kind == "undecodable bytes":  # bytes that are not UTF-8, decoded as Python does for file names
        noise = rng.randbytes(rng.randint(1, 8)).decode("utf-8", "surrogateescape")
        return kind, text[:at] + noise + text[at:]
    else:  # a line repeated, or a token made very long (a rule repeated 20,000 times is nft's minutes of work)
        if rng.random() < 0.5:
            lines[i:i] = [lines[i]] * rng.choice([100, 1_000])
        else:
            lines[i] += "x" * rng.choice([5_000, 2_000_000])
    return kind, "\n".join(lines)


def _one(text: str) -> dict:
    from pktassert.errors import PktassertError
    from pktassert.netns import Namespace
    from pktassert.programs.nft_ruleset import RuleSet

    with Namespace("fuzz") as ns:  # a throwaway namespace per mutant: never the root's rule set
        try:
            rules = RuleSet(ns, text)
            return {"outcome": "loaded", "rules": len(rules.rules()), "counters": len(rules.counters())}
        except PktassertError as e:
            return {"outcome": "error", "message": str(e), "type": type(e).__name__}
        except BaseException as e:  # noqa: BLE001  (what we count: anything else is a raw traceback)
            return {"outcome": "traceback", "message": "".join(traceback.format_exception(e))[-3000:]}


def main() -> int:
    cases = json.load(sys.stdin)
    for k in range(int(sys.argv[1]), len(cases)):
        print(json.dumps({"k": k, "started": True}), flush=True)
        t0 = time.perf_counter()
        result = _one(cases[k]["text"])
        print(json.dumps({**result, "k": k, "seconds": time.perf_counter() - t0}), flush=True)
    return 0


def fuzz(cases: list[dict], where: Path) -> dict[int, dict]:
    """Each case loaded by the loader; after a crash or a hang (the loader killed), started again after it."""
    results: dict[int, dict] = {}
    start = 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    while start < len(cases):
        with open(where / "loader.stderr", "w+") as err:
            proc = subprocess.Popen([sys.executable, __file__, str(start)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err, env=env, start_new_session=True)
            assert proc.stdin and proc.stdout
            proc.stdin.write(json.dumps(cases).encode())  # JSON keeps lone surrogates and NULs (\ud800, \u0000)
            proc.stdin.close()
            current, buf, start = start, b"", len(cases)
            while True:
                if not select.select([proc.stdout], [], [], QUIET_FOR)[0]:
                    os.killpg(proc.pid, signal.SIGKILL)  # the loader we started, and nothing else
                    proc.wait()
                    results[current] = {"outcome": "hang", "seconds": QUIET_FOR}
                    start = current + 1
                    break
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    rc = proc.wait()
                    if current not in results:
                        err.seek(0)
                        results[current] = {"outcome": "crash", "status": rc, "stderr": err.read()[-2000:]}
                        start = current + 1
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    r = json.loads(line)
                    current = r["k"]
                    if not r.get("started"):
                        results[current] = r
            proc.stdout.close()
    return results


def test_fuzz_rule_set_text(tmp_path):
    before = _root_ruleset()
    texts = originals()
    names = list(texts)
    cases = []
    for i in range(len(names) + COUNT):
        name = names[i % len(names)]
        kind, text = ("original", texts[name]) if i < len(names) else mutate(random.Random(f"{SEED}-{i}"), texts[name])
        cases.append({"i": i, "name": name, "kind": kind, "text": text})
    results = fuzz(cases, tmp_path)
    assert _root_ruleset() == before  # every mutant went to a namespace of its own
    mutants = cases[len(names):]
    outcomes = collections.Counter(results[c["i"]]["outcome"] for c in mutants)
    worst = max(mutants, key=lambda c: results[c["i"]]["seconds"])
    report = {"mutants": len(mutants), "loaded": outcomes["loaded"], "clear errors": outcomes["error"],
              "raw tracebacks": outcomes["traceback"], "crashes": outcomes["crash"], "hangs": outcomes["hang"],
              "worst seconds": round(results[worst["i"]]["seconds"], 3), "slowest": worst["i"]}
    if os.environ.get("PKTASSERT_FUZZ_OUT"):  # every mutant's outcome, for a closer look
        Path(os.environ["PKTASSERT_FUZZ_OUT"]).write_text(json.dumps([{**c, **results[c["i"]]} for c in cases]))
    print(f"\nrule set text fuzz (seed {SEED}): {json.dumps(report)}")
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for c in mutants:
        by_kind[c["kind"]][results[c["i"]]["outcome"]] += 1
    print("by kind:", json.dumps(by_kind))
    for c in cases[:len(names)]:
        assert results[c["i"]]["outcome"] == "loaded", f"the original {c['name']} did not load: {results[c['i']]}"
    bad = [(c["i"], c["kind"], results[c["i"]]) for c in mutants if results[c["i"]]["outcome"] not in ("loaded", "error")]
    assert not bad, f"{len(bad)} mutants crashed, hung or gave a raw traceback ({report}); the first: " + \
        "\n".join(f"#{i} ({kind}): {json.dumps(r)[:1500]}" for i, kind, r in bad[:3])
    errors = [(c, results[c["i"]]["message"]) for c in mutants if results[c["i"]]["outcome"] == "error"]
    unclear = [(c["i"], m[:300]) for c, m in errors if "Fix:" not in m or len(m) > 8000]
    assert not unclear, f"{len(unclear)} errors without a fix, or unbounded; the first: {unclear[:3]}"
    # nft's rejections say where: a line of the text (and a column), as for a file.
    unplaced = [(c["i"], m[:300]) for c, m in errors
                if m.startswith("nftables rejects") and not re.search(r"rule set text:\d+:\d+", m)]
    assert not unplaced, f"{len(unplaced)} rejections without a line and column; the first: {unplaced[:3]}"
    assert report["clear errors"] >= report["mutants"] // 2, report  # the mutants do damage: most are refused
    assert report["worst seconds"] < QUIET_FOR, report


if __name__ == "__main__":
    sys.exit(main())
