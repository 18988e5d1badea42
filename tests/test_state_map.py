"""Reading and seeding a filter's maps by name with plain values, in both tiers."""

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP

from pktassert import Verdict

pytestmark = [pytest.mark.xdp(str(Path(__file__).resolve().parent.parent / "examples" / "syn_guard.c"),
                              func="syn_guard"),
              pytest.mark.parametrize("tier", ["unit", "live"], indirect=True)]


def test_read_what_the_filter_wrote(xdp, inject):
    budget = xdp.map("syn_budget")
    assert len(budget) == 0                                   # fresh for this test
    inject(IP(src="198.51.100.7", dst=xdp.ip) / TCP(dport=80, flags="S"), count=10, vary={"sport": (1, 10)})
    (key, spent), = budget.items()
    assert spent == 10 and key in budget and isinstance(spent, int)
    assert budget[key] == 10


def test_seed_then_the_filter_sees_it(xdp, inject):
    budget = xdp.map("syn_budget")
    probe = IP(src="198.51.100.7", dst=xdp.ip) / TCP(dport=80, flags="S")
    assert inject(probe).verdict == Verdict.PASS
    (key, _), = budget.items()
    budget[key] = 64                                          # the budget, spent
    assert inject(probe).verdict == Verdict.DROP
    del budget[key]
    assert key not in budget and inject(probe).verdict == Verdict.PASS


def test_unknown_map_names_the_known_ones(xdp):
    with pytest.raises(KeyError, match="has no map 'budget'; its maps: syn_budget"):
        xdp.map("budget")
