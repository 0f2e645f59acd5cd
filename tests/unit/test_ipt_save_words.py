"""ipt_save.split_words: shlex.split of iptables-save lines, fast for the plain ones."""
from __future__ import annotations

import shlex

from hypothesis import given, settings, strategies as st

from backends.ipt_save import split_words

PIECES = ["-A", "NETPOL-INGRESS", "--comment", '"x/p ingress[0]"', '""', '"a\\"b"', "\\\\", '"', "'",
          'x"y"', '"p"q', "a'b'", "#", '"#x"', "$x", "10.0.0.1/32", "-j", "ACCEPT"]


def shlex_or_error(line: str):
    try:
        return shlex.split(line)
    except ValueError:
        return ValueError


def split_or_error(line: str):
    try:
        return split_words(line)
    except ValueError:
        return ValueError


def test_our_rule_lines():
    line = ('-A NETPOL-INGRESS -m set --match-set np.in0.ip4 src -p tcp -m tcp --dport 80 '
            '-m comment --comment "x/p ingress[0]" -j ACCEPT')
    assert split_words(line) == shlex.split(line)
    assert split_words('-A X -m comment --comment "" -j ACCEPT')[-3] == ""
    assert split_words('-A X -m comment --comment "say \\"hi\\"" -j ACCEPT')[5] == 'say "hi"'  # shlex's way


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=8), st.sampled_from(["", " ", "  ", "\t"]))
def test_every_line_splits_as_shlex_splits_it(pieces, sep):
    line = sep.join(pieces)
    assert split_or_error(line) == shlex_or_error(line)
