"""ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2): the cluster-scoped Admin and
Baseline tiers around NetworkPolicy, with explicit Accept, Deny and Pass.

- ``model``: the frozen objects the loader builds;
- ``decode``: one object -> the model, as strictly as the CRD's schema and CEL rules;
- ``tiers``: the tier rules of one pod's firewall (ir.TierRule), and the pure evaluation
  that the model's verdict (enforcer.views.verdict) uses.

See docs/concepts.md ("How do I deny?") and /work/shared/CNP-SEMANTICS.md.
"""
