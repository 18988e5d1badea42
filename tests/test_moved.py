"""The 0.1 module names (before pktassert/ was laid out in folders) still import, as the very modules they
became: code written against them keeps working for a release."""

import importlib

import pytest

import pktassert
from pktassert.moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_name_is_the_new_module(old):
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_what_users_imported_is_what_they_get():
    from pktassert.bpf.program import Program
    from pktassert.capture import Capture
    from pktassert.fate import Fate
    from pktassert.verdict import TcVerdict, Verdict

    assert (Program, Capture, Fate, Verdict, TcVerdict) == (pktassert.BccSource, pktassert.Capture, pktassert.Fate,
                                                            pktassert.Verdict, pktassert.TcVerdict)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("pktassert.no_such_module")
