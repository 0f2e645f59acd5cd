"""An API lab (``lab up --api``) with ClusterNetworkPolicies in its input: the lab installs
our CRD into its API server, sends the input's CNPs by server-side apply, the agents (the
daemon's API source) enforce them with real packets, and ``lab apply`` prunes them like
NetworkPolicies (root; skipped without kube-apiserver: make k8s)."""
from __future__ import annotations

import json

import pytest

from tests.api.test_api_lab import SMALL, _wait_pairs

pytestmark = pytest.mark.root

DENY_A_TO_B = """
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-a-to-b}
spec:
  tier: Admin
  priority: 5
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}}
  ingress:
  - name: no-a
    action: Deny
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}}]
"""


def test_api_lab_installs_the_crd_applies_and_prunes_cluster_network_policies(netpol_api_lab):
    lab = netpol_api_lab([SMALL, DENY_A_TO_B], "nftables", nodes=2)
    crd = json.loads(lab.kubectl("get", "crd", "clusternetworkpolicies.policy.networking.k8s.io",
                                 "-o", "json").stdout)
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    assert lab.kubectl("get", "clusternetworkpolicies", "-o", "name").stdout.split() == \
        ["clusternetworkpolicy.policy.networking.k8s.io/deny-a-to-b"]
    want = {("x/a", "x/b"): False, ("x/b", "x/a"): True}
    assert _wait_pairs(lab, want) == want
    # The input without it: lab apply deletes it from the API, and the agents follow.
    lab.apply([SMALL])
    assert lab.kubectl("get", "clusternetworkpolicies", "-o", "name").stdout.strip() == ""
    want = {("x/a", "x/b"): True, ("x/b", "x/a"): True}
    assert _wait_pairs(lab, want) == want
    # kubectl alone: the agents' watch (no lab apply involved).
    lab.kubectl("apply", "-f", "-", input=DENY_A_TO_B)
    want = {("x/a", "x/b"): False, ("x/b", "x/a"): True}
    assert _wait_pairs(lab, want) == want
