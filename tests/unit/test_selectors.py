"""Label selectors: the matcher against an independent reading of the API rules, and the
inverted index against brute force (Hypothesis)."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from enforcer.compiler.labelindex import LabelIndex
from enforcer.model import LabelSelector, Requirement
from enforcer.compiler.selectors import matches

KEYS = st.sampled_from(["app", "tier", "env"])
VALUES = st.sampled_from(["a", "b", "c", ""])
LABELS = st.dictionaries(KEYS, VALUES, max_size=3)


@st.composite
def selectors(draw):
    ml = draw(st.dictionaries(KEYS, VALUES, max_size=2))
    exprs = []
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        values = tuple(draw(st.lists(VALUES, min_size=1, max_size=2))) if op in ("In", "NotIn") else ()
        exprs.append(Requirement(draw(KEYS), op, values))
    return LabelSelector(tuple(sorted(ml.items())), tuple(exprs))


def oracle(sel: LabelSelector, labels: dict) -> bool:
    """SEMANTICS 8 read literally: every term must hold; a missing key satisfies only
    NotIn and DoesNotExist."""
    terms = [(k, "In", (v,)) for k, v in sel.match_labels] + [(r.key, r.operator, r.values) for r in sel.match_expressions]
    for key, op, values in terms:
        present = key in labels
        ok = {"In": present and labels.get(key) in values,
              "NotIn": (not present) or labels[key] not in values,
              "Exists": present,
              "DoesNotExist": not present}[op]
        if not ok:
            return False
    return True


@settings(max_examples=400, deadline=None)
@given(selectors(), LABELS)
def test_matches_agrees_with_oracle(sel, labels):
    assert matches(sel, labels) == oracle(sel, labels)


@settings(max_examples=200, deadline=None)
@given(selectors(), st.lists(LABELS, max_size=12), st.sampled_from([0, 4, 32]))
def test_index_select_equals_brute_force(sel, objects, scan_limit):
    # scan_limit 0: posting lists from the start; 4: built on the first select, then kept
    # up to date by the later adds and removes; 32: a small index that only scans.
    idx = LabelIndex(scan_limit)
    half = len(objects) // 2
    for i, labels in enumerate(objects[:half]):
        idx.add(f"o{i}", labels)
    idx.select(sel)
    for i, labels in enumerate(objects[half:], half):
        idx.add(f"o{i}", labels)
    final = dict(enumerate(objects))
    if len(objects) > 1:
        idx.remove("o0")  # removal keeps the index consistent
        del final[0]
        idx.add(f"o{len(objects) - 1}", objects[0])  # a relabel
        final[len(objects) - 1] = objects[0]
    expected = {f"o{i}" for i, labels in final.items() if matches(sel, labels)}
    assert idx.select(sel) == expected


def test_empty_selector_matches_everything():
    assert matches(LabelSelector(), {}) and matches(LabelSelector(), {"a": "b"})
