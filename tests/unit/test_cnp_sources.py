"""The file-watching agent's store (enforcer.daemon.sources.ManifestStore) and
ClusterNetworkPolicies: they are in its cluster, and their changes are fed like others."""
from __future__ import annotations

import yaml

from enforcer.daemon.sources import ManifestStore

CNP = {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
       "metadata": {"name": "deny-a"},
       "spec": {"tier": "Admin", "priority": 10, "subject": {"namespaces": {}},
                "ingress": [{"name": "no-a", "action": "Deny",
                             "from": [{"pods": {"namespaceSelector": {},
                                                "podSelector": {"matchLabels": {"app": "a"}}}}]}]}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "x"},
           "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "x"},
              "spec": {"selector": {"matchLabels": {"app": "a"}},
                       "template": {"metadata": {"labels": {"app": "a"}},
                                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}}


def text(*docs) -> str:
    return yaml.safe_dump_all(list(docs))


def test_cluster_holds_the_cnps_in_force_and_their_changes_are_reported():
    s = ManifestStore()
    changes = s.put_text("/w/cnp.yaml", text(CNP))
    assert list(changes) == [("ClusterNetworkPolicy", "deny-a")]
    assert list(s.cluster().cnps) == ["deny-a"]
    edited = yaml.safe_load(yaml.safe_dump(CNP))
    edited["spec"]["priority"] = 20
    changes = s.put_text("/w/cnp.yaml", text(edited))
    assert changes[("ClusterNetworkPolicy", "deny-a")].priority == 20
    assert s.drop("/w/cnp.yaml") == {("ClusterNetworkPolicy", "deny-a"): None}
    assert s.cluster().cnps == {}


def test_an_invalid_cnp_keeps_its_last_good_version():
    s = ManifestStore()
    s.put_text("/w/cnp.yaml", text(CNP))
    bad = yaml.safe_load(yaml.safe_dump(CNP))
    bad["spec"]["priority"] = 5000
    assert s.put_text("/w/cnp.yaml", text(bad)) == {}
    assert s.cluster().cnps["deny-a"].priority == 10
    assert any("priority" in str(i) and "last good" in str(i) for i in s.errors())


def test_a_cut_off_cnp_kind_marks_the_file_half_written():
    s = ManifestStore()
    s.put_text("/w/cnp.yaml", text(CNP))
    assert s.put_text("/w/cnp.yaml", "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetw\n") == {}
    assert list(s.cluster().cnps) == ["deny-a"]


def test_kinds_the_agent_does_not_enforce_do_not_break_its_cluster():
    s = ManifestStore()
    s.put_text("/w/app.yaml", text(SERVICE, DEPLOYMENT, CNP))
    c = s.cluster()  # raised KeyError for any kind without a table
    assert list(c.cnps) == ["deny-a"] and list(c.services) == ["x/s"] and c.pods == {}
