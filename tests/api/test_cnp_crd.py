"""Our ClusterNetworkPolicy CRD (deploy/crds/) in a real kube-apiserver, and our validation
against it: the corpus of tests/unit/test_cnp_decode.py goes to the API server (server-side
dry run, strict field validation) and to our loader; both must accept or both refuse.

Known differences (we are stricter, on purpose) are strict xfails, so the list stays true.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.api.conftest import install_cnp_crd
from tests.unit import test_cnp_decode as corpus

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "deploy" / "crds" / "clusternetworkpolicies.yaml"
PATH = "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
DRY = "?dryRun=All&fieldValidation=Strict"

KNOWN: dict[str, str] = {}


@pytest.fixture(scope="module")
def crd(control_plane):
    install_cnp_crd(control_plane, str(CRD))
    return control_plane


def _server(cp, doc: dict) -> tuple[bool, str]:
    reply = cp.api("POST", PATH + DRY, json.dumps(corpus._clean(doc)))
    return reply.ok or reply.body.get("reason") == "AlreadyExists", reply.body.get("message", "")


def _marks(case_id: str):
    return [pytest.mark.xfail(strict=True, reason=KNOWN[case_id])] if case_id in KNOWN else []


CASES = [(i, d) for i, d in corpus.VALID] + [(i, d) for i, d, _ in corpus.INVALID]


@pytest.mark.parametrize("doc", [pytest.param(d, id=i, marks=_marks(i)) for i, d in CASES])
def test_our_validation_agrees_with_the_crd(crd, doc):
    ours = corpus.problems(doc) == []
    theirs, message = _server(crd, doc)
    assert ours == theirs, (f"we {'accept' if ours else 'refuse'} ({corpus.problems(doc)}), the API server "
                            f"{'accepts' if theirs else 'refuses'}: {message}")


def test_kubectl_applies_the_docs_example_and_lists_it(crd, tmp_path):
    docs = [d for f in sorted((ROOT / "examples" / "concepts" / "12-deny").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d and d["kind"] == "ClusterNetworkPolicy"]
    assert docs
    f = tmp_path / "cnps.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    try:
        crd.kubectl("apply", "--validate=strict", "-f", str(f))
        out = crd.kubectl("get", "cnp", "-o", "json").stdout
        names = {i["metadata"]["name"] for i in json.loads(out)["items"]}
        assert {d["metadata"]["name"] for d in docs} <= names
        # and the printer columns of the CRD
        wide = crd.kubectl("get", "cnp", docs[0]["metadata"]["name"]).stdout
        assert "TIER" in wide and docs[0]["spec"]["tier"] in wide
    finally:
        crd.kubectl("delete", "-f", str(f), "--ignore-not-found", check=False)


def test_kubectl_refuses_what_we_refuse(crd, tmp_path):
    [doc] = [corpus._clean(d) for i, d, _ in corpus.INVALID if i == "range start = end"]
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))
    proc = crd.kubectl("apply", "--validate=strict", "-f", str(f), check=False)
    assert proc.returncode != 0
    assert "Start port must be less than End port" in proc.stderr
