"""An nftables rule set under test, loaded into the DUT namespace through libnftables (Debian's
python3-nftables): a context created inside a namespace stays bound to it, so nothing here ever
touches the root namespace's rule set. Each test gets a fresh namespace, so a fresh rule set.

Rule set text is loaded as a file is (from a memfd), so nft's errors name its line and column, as
they do for a file (text loaded as a command is reported at line 1); text nft cannot take (a lone
surrogate, a NUL, more than MOST_TEXT) is refused first, saying where, and nft's words are read as
bytes (a file need not be UTF-8) with its echo of a very long line cut around the caret."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from pktassert.errors import HostLacks, ProgramError
from pktassert.netns import Namespace

_HANDLE = re.compile(r"^\s*(.*?)\s+# handle (\d+)$")
_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_NOT_RULES = ("table ", "chain ", "set ", "map ", "flowtable ")
OURS = ("pktassert_trace",)  # pktassert's own table (nftables tracing), not the rule set's
TEXT = "rule set text"  # how nft's errors name marker text (for a file: its path)
MOST_TEXT = 64 << 20  # bytes of rule set text: more is a file's job (nft then reads it as it goes)
WIDE = 160  # characters of a line nft echoes in an error, kept around its caret
MOST_LINES = 60  # lines of nft's error output kept (it stops at 10 errors, each a few lines)


def _nftables() -> Any:
    try:
        import nftables  # noqa: PLC0415 - python3-nftables is Debian's and optional: only rule sets need it (Debian's python3-nftables (ctypes over libnftables1); not on PyPI)
    except ImportError:
        raise HostLacks("python3-nftables", "@pytest.mark.nftables needs libnftables' Python module. Fix: apt-get "
                        "install python3-nftables (and a venv made with --system-site-packages).") from None
    return nftables


class RuleSet:
    """The rule set in the DUT namespace: ``counters()``, ``rule(handle)``, ``nft(command)``."""

    def __init__(self, ns: Namespace, source: str | bytes | Path) -> None:
        nftables = _nftables()
        if isinstance(source, Path):
            _regular_file(source)  # checked before nft reads it: see there
            text = None
        else:
            text = _encoded(source, "the rule set text")
        with ns.entered():
            self._nft = nftables.Nftables()
        try:
            self._load_into(source, text)
        except BaseException:
            self.close()  # its netlink socket would hold the namespace for as long as the error lives
            raise

    def _load_into(self, source: str | bytes | Path, text: bytes | None) -> None:
        rc, _, err = self._run(b"list tables")  # an empty namespace: only a kernel without nf_tables fails
        if rc != 0:
            raise HostLacks("nf_tables", f"the kernel does not take nftables rule sets ({err.strip()}). Fix: a kernel "
                                         f"with CONFIG_NF_TABLES (modprobe nf_tables on the host, where it is a module).")
        if text is None:
            rc, _, err = self._load(os.fsencode(source))
            where = str(source)
        else:
            fd = os.memfd_create("pktassert-ruleset", os.MFD_CLOEXEC)  # a file that leaves nothing behind
            try:
                with open(fd, "wb", closefd=False) as f:
                    f.write(text)
                name = f"/proc/self/fd/{fd}"
                rc, _, err = self._load(name.encode())
                err = err.replace(f"{name}:", f"{TEXT}:")
            finally:
                os.close(fd)
            where = "the rule set text"
        if rc != 0:
            raise ProgramError(f"nftables rejects {where}:\n{_shortened(err.strip())}\n"
                               f"Fix: the rule set as `nft -c -f` accepts it.")

    def close(self) -> None:
        """Free the libnftables context (and its netlink socket in the namespace)."""
        self._nft = None

    def listing(self) -> dict[str, Any]:
        """The rule set as nft lists it in JSON, with numbers for protocols and symbols (``tcp``: 6)."""
        self._nft.set_numeric_proto_output(True)
        self._nft.set_numeric_symbol_output(True)
        try:
            rc, out, err = self._nft.json_cmd({"nftables": [{"list": {"ruleset": None}}]})
        finally:
            self._nft.set_numeric_proto_output(False)
            self._nft.set_numeric_symbol_output(False)
        if rc != 0:
            raise ProgramError(f"nft cannot list the rule set it loaded: {err}")
        return dict(out)

    def _run(self, command: bytes) -> tuple[int, str, str]:
        """nft's answer to a command, given as bytes: so read as bytes, decoded leniently (a rule set's
        comments and names need not be UTF-8; the module's own decoding would raise)."""
        rc, out, err = self._nft.cmd(command)
        return rc, _text(out), _text(err)

    def _load(self, name: bytes) -> tuple[int, str, str]:
        rc, out, err = self._nft.cmd_from_file(name)
        return rc, _text(out), _text(err)

    def nft(self, command: str) -> str:
        """Run an nft command in the DUT namespace (``"list ruleset"``, ``"add element ..."``); its output."""
        rc, out, err = self._run(_encoded(command, f"nft {command[:60]!r}"))
        if rc != 0:
            raise ProgramError(f"nft {command!r} in the DUT namespace: {_shortened(err.strip())}")
        return out

    def rules(self) -> dict[tuple[str, str, int], str]:
        """Every rule by (family, table, handle) (handles count per table), as nft prints it
        (``tcp dport 22 ip saddr != 198.51.100.0/24 drop``; a counter without its numbers)."""
        self._nft.set_handle_output(True)
        try:
            text = self.nft("list ruleset")
        finally:
            self._nft.set_handle_output(False)
        out, table = {}, ("", "")
        for line in text.splitlines():
            t = _TABLE.match(line)
            if t:
                table = (t[1], t[2])
                continue
            m = _HANDLE.match(line)
            if m and not m[1].startswith(_NOT_RULES) and not m[1].endswith("{"):
                out[(*table, int(m[2]))] = re.sub(r"\s*counter packets \d+ bytes \d+", " counter", m[1]).strip()
        return out

    def counters(self) -> Counters:
        """Packets counted by the rules that have a counter: by rule text, summed over every rule that
        prints so (in any table or chain); each rule's own count in ``.by_rule`` (keyed as ``rules()``
        keys it, its text in ``.text``), and per table with ``.table(family, name)``."""
        self._nft.set_json_output(True)
        self._nft.set_handle_output(True)
        try:
            data = json.loads(self.nft("list ruleset"))
        finally:
            self._nft.set_json_output(False)
            self._nft.set_handle_output(False)
        rules = self.rules()
        by_rule, text = {}, {}
        for item in data.get("nftables", []):
            rule = item.get("rule")
            if not rule or rule["table"] in OURS:
                continue
            # An anonymous counter is a dict with its numbers; a named one's ("counter name c") is only
            # its name, counting for every rule that names it: not this rule's own count.
            packets = [e["counter"]["packets"] for e in rule.get("expr", [])
                       if isinstance(e, dict) and isinstance(e.get("counter"), dict)]
            if packets:
                key = (str(rule["family"]), str(rule["table"]), int(rule["handle"]))
                by_rule[key] = int(packets[0])
                text[key] = rules.get(key, f"handle {key[2]}")
        return Counters(by_rule, text)


def _text(said: bytes | str | None) -> str:
    return said if isinstance(said, str) else (said or b"").decode("utf-8", "replace")


def _regular_file(path: Path) -> None:
    """nft reads a rule set file with flex, whose scanner ends the whole process on a directory (and
    would wait for ever on a FIFO): anything but a regular file is refused first."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise ProgramError(f"nftables rule set {path}: {e.strerror}. Fix: the path of a .nft file, or the rule set "
                           f"text itself.") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
        raise ProgramError(f"nftables rule set {path} is {kind}: nft reads a rule set from a file. Fix: the path of "
                           f"the .nft file itself (a directory's files: include \"dir/*.nft\" in one).")


def _encoded(text: object, what: str) -> bytes:
    """Text as libnftables takes it (a C string; UTF-8 from a str), or one error saying where it cannot be."""
    if not isinstance(text, (str, bytes)):
        raise ProgramError(f"{what}: {type(text).__name__} where nftables takes text. Fix: the rule set as a str, "
                           f"or a path to a .nft file.")
    nul = text.find("\0") if isinstance(text, str) else text.find(b"\0")
    if nul >= 0:
        raise ProgramError(f"{what} holds a NUL character at {_line_col(text, nul)}: libnftables reads text as a "
                           f"C string, so everything after it would be silently left out. Fix: remove the NUL (a "
                           f"binary file read as text, or bytes joined in?).")
    try:
        data = text.encode("utf-8") if isinstance(text, str) else text
    except UnicodeEncodeError as e:
        raise ProgramError(f"{what} holds {text[e.start]!r} at {_line_col(text, e.start)}, a lone surrogate: not a "
                           f"character, so no UTF-8 for nft (text decoded with errors='surrogateescape' from bytes "
                           f"that were not UTF-8?). Fix: decode the rule set as UTF-8, or give nftables its file's "
                           f"path.") from None
    if len(data) > MOST_TEXT:
        raise ProgramError(f"{what} is {len(data) / (1 << 20):,.1f} MiB, more than rule set text is taken as "
                           f"({MOST_TEXT >> 20} MiB). Fix: write it to a .nft file and name that file in the marker "
                           f"(nft reads a file as it goes).")
    return data


def _line_col(text: str | bytes, at: int) -> str:
    if isinstance(text, bytes):
        text = text.decode("latin-1")  # a byte a character: the column counts bytes, as nft's do
    return f"line {text.count(chr(10), 0, at) + 1}, column {at - text.rfind(chr(10), 0, at)}"


def _shortened(err: str) -> str:
    """nft's error output, bounded: a very long line it echoes is cut to WIDE characters around the
    caret line (^~~) below it, which is cut alike; at most MOST_LINES lines."""
    lines, i = err.splitlines(), 0
    while i < len(lines):
        line, below = lines[i], lines[i + 1] if i + 1 < len(lines) else ""
        marks = below.strip() != "" and set(below) <= set(" \t^~")  # nft's caret line keeps the line's tabs
        if len(line) > WIDE or (marks and len(below) > WIDE):
            caret = len(below) - len(below.lstrip()) if marks else 0
            if caret > len(line):  # nft echoes at most 1,023 characters of a line; its caret goes on
                lines[i:i + 2] = [line[:WIDE] + "...", f"(the error is at column {caret + 1:,}, past the "
                                                       f"{len(line):,} characters nft shows of this line)"]
                i += 2
                continue
            start = max(0, min(caret - WIDE // 2, len(line) - WIDE))  # the caret in the middle of the window
            lead = "..." if start else ""
            lines[i] = lead + line[start:start + WIDE] + ("..." if start + WIDE < len(line) else "")
            if marks:
                lines[i + 1] = " " * len(lead) + below[start:start + WIDE]
        i += 2 if marks else 1
    if len(lines) > MOST_LINES:
        lines = lines[:MOST_LINES] + [f"... ({len(lines) - MOST_LINES:,} more lines)"]
    return "\n".join(lines)


class Counters(dict[str, int]):
    """What ``RuleSet.counters()`` gives: packets by rule text (nft's, a counter without its numbers),
    summed over every rule that prints so, so no rule's packets go missing from the text's count.

    ``by_rule``: each rule's own packets by (family, table, handle), as ``rules()`` keys it; ``text``:
    its text by the same key; ``table(family, name)``: by text within one table."""

    def __init__(self, by_rule: dict[tuple[str, str, int], int], text: dict[tuple[str, str, int], str]) -> None:
        super().__init__()
        self.by_rule, self.text = by_rule, text
        for key, packets in by_rule.items():
            self[text[key]] = self.get(text[key], 0) + packets

    def table(self, family: str, name: str) -> dict[str, int]:
        """Packets by rule text within one table (``table("inet", "edge")``), rules that print alike summed."""
        out: dict[str, int] = {}
        for key, packets in self.by_rule.items():
            if key[:2] == (family, name):
                out[self.text[key]] = out.get(self.text[key], 0) + packets
        return out
