"""An nftables rule set under test, loaded into the DUT namespace through libnftables (Debian's
python3-nftables): a context created inside a namespace stays bound to it, so nothing here ever
touches the root namespace's rule set. Each test gets a fresh namespace, so a fresh rule set."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pktassert.errors import ProgramError
from pktassert.host import HostLacks
from pktassert.netns import Namespace  # type: ignore[import-not-found]  # installed from netns/

_HANDLE = re.compile(r"^\s*(.*?)\s+# handle (\d+)$")
_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_NOT_RULES = ("table ", "chain ", "set ", "map ", "flowtable ")
OURS = ("pktassert_trace",)  # pktassert's own table (nftables tracing), not the rule set's


def _nftables() -> Any:
    try:
        import nftables  # Debian's python3-nftables (ctypes over libnftables1); not on PyPI
    except ImportError:
        raise HostLacks("python3-nftables", "@pytest.mark.nftables needs libnftables' Python module. Fix: apt-get "
                        "install python3-nftables (and a venv made with --system-site-packages).") from None
    return nftables


class RuleSet:
    """The rule set in the DUT namespace: ``counters()``, ``rule(handle)``, ``nft(command)``."""

    def __init__(self, ns: Namespace, source: str | Path) -> None:
        nftables = _nftables()
        with ns.entered():
            self._nft = nftables.Nftables()
        rc, _, err = self._nft.cmd("list tables")  # an empty namespace: only a kernel without nf_tables fails
        if rc != 0:
            raise HostLacks("nf_tables", f"the kernel does not take nftables rule sets ({err.strip()}). Fix: a kernel "
                                         f"with CONFIG_NF_TABLES (modprobe nf_tables on the host, where it is a module).")
        if isinstance(source, Path):
            rc, _, err = self._nft.cmd_from_file(str(source))
            where = str(source)
        else:
            rc, _, err = self._nft.cmd(source)
            where = "the rule set text"
        if rc != 0:
            raise ProgramError(f"nftables rejects {where}:\n{err.strip()}\nFix: the rule set as `nft -c -f` accepts it.")

    def nft(self, command: str) -> str:
        """Run an nft command in the DUT namespace (``"list ruleset"``, ``"add element ..."``); its output."""
        rc, out, err = self._nft.cmd(command)
        if rc != 0:
            raise ProgramError(f"nft {command!r} in the DUT namespace: {err.strip()}")
        return str(out)

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
