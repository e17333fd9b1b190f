"""Kubernetes' clusterrole-aggregation controller, pure: which rules an aggregated ClusterRole
should hold, and which roles to look at again when any ClusterRole changes.

A ClusterRole with an ``aggregationRule`` holds the union of the rules of every other
ClusterRole that one of its ``clusterRoleSelectors`` matches: selector by selector, the matched
roles by name, each distinct rule once (``syncClusterRole`` in
``pkg/controller/clusterroleaggregation``). Its own ``rules`` are replaced by that union. As the
set of ClusterRoles is small and who aggregates whom is not indexed, a change to any of them
sends every aggregated role back to the work queue, as Kubernetes does; roles aggregating
aggregated roles settle as each write comes back through the watch.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.rbac import ClusterRole, PolicyRule
from schemas.selector import SelectorError, from_label_selector


def aggregated_rules(role: ClusterRole, roles: Iterable[ClusterRole]) -> list[PolicyRule] | None:
    """The rules ``role`` should hold given every ClusterRole (``roles``; ``role`` itself among
    them or not), or None when it has no aggregationRule (its rules are its own). A selector
    that does not parse (validation refuses one) selects nothing."""
    if role.aggregationRule is None:
        return None
    others = sorted((r for r in roles if r.metadata.name != role.metadata.name), key=lambda r: r.metadata.name)
    out: list[PolicyRule] = []
    for sel in role.aggregationRule.clusterRoleSelectors:
        try:
            selector = from_label_selector(sel)
        except SelectorError:
            continue
        for other in others:
            if not selector.matches(other.metadata.labels):
                continue
            for rule in other.rules or ():
                if rule not in out:
                    out.append(rule)
    return out


def aggregating(roles: Iterable[ClusterRole]) -> list[str]:
    """The names of the roles with an aggregationRule: what a change to any ClusterRole enqueues."""
    return sorted(r.metadata.name for r in roles if r.aggregationRule is not None)
