"""Properties of kyb.expectations: a key plans again only once every write it made was seen
(by watch event or in the cache), or once the expectations expired; never earlier."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyb.expectations import Expectations
from schemas.meta import ObjectMeta
from schemas.pod import Pod

KEY = "default.web"
TTL = 30.0

names = st.sets(st.text("abcdefgh", min_size=1, max_size=4), max_size=6)


@settings(max_examples=200, deadline=None)
@given(adds=st.integers(0, 6), creating=names, deleting=names, data=st.data())
def test_satisfied_exactly_when_every_awaited_write_was_observed(adds, creating, deleting, data):
    exp = Expectations(TTL)
    exp.expect(KEY, 0.0, adds=adds, creating=creating, deleting=deleting)
    events = [("add", None)] * adds + [("add", n) for n in creating] + [("del", n) for n in deleting]
    order = data.draw(st.permutations(events))
    for i, (verb, name) in enumerate(order):
        assert not exp.satisfied(KEY, 1.0), f"satisfied with {len(order) - i} writes unseen"
        if verb == "add":
            exp.creation_observed(KEY, name)
        else:
            exp.deletion_observed(KEY, name)
    assert exp.satisfied(KEY, 1.0)
    assert exp.pending(KEY) == (0, 0)


@settings(max_examples=100, deadline=None)
@given(creating=names, deleting=names, seen=names, gone=names, terminating=names)
def test_settle_counts_what_the_cache_shows(creating, deleting, seen, gone, terminating):
    """A created name counts once cached; a deleted name once absent from the cache or terminating."""
    cache = {n: pod(n) for n in (creating | deleting | seen) - gone}
    cache.update({n: pod(n, terminating=True) for n in terminating - gone})
    exp = Expectations(TTL)
    exp.expect(KEY, 0.0, creating=creating, deleting=deleting)
    exp.settle(KEY, cache.get)
    unseen = {n for n in creating if n not in cache}
    undeleted = {n for n in deleting if n in cache and n not in terminating}
    assert exp.pending(KEY) == (len(unseen), len(undeleted))
    assert exp.satisfied(KEY, 1.0) == (not unseen and not undeleted)


@pytest.mark.parametrize(
    "elapsed, satisfied",
    [
        pytest.param(0.0, False, id="at-once"),
        pytest.param(TTL, False, id="at-the-ttl"),
        pytest.param(TTL + 0.001, True, id="past-the-ttl"),
    ],
)
def test_unmet_expectations_expire_after_the_ttl(elapsed, satisfied):
    exp = Expectations(TTL)
    exp.expect(KEY, 100.0, adds=2, deleting=["a"])
    assert exp.satisfied(KEY, 100.0 + elapsed) is satisfied


def test_a_failed_create_is_not_waited_for():
    exp = Expectations(TTL)
    exp.expect(KEY, 0.0, adds=5)
    exp.creation_observed(KEY)
    exp.creation_skipped(KEY, 3)
    assert exp.pending(KEY) == (1, 0)
    exp.creation_skipped(KEY, 10)
    assert exp.satisfied(KEY, 0.0)


def test_new_expectations_replace_the_old_and_other_keys_are_untouched():
    exp = Expectations(TTL)
    exp.expect(KEY, 0.0, adds=3)
    exp.expect("default.other", 0.0, deleting=["x"])
    exp.expect(KEY, 0.0, deleting=["a", "b"])
    assert exp.pending(KEY) == (0, 2)
    exp.deletion_observed(KEY, "x")  # not one of KEY's
    exp.deletion_observed(KEY, "a")
    assert exp.pending(KEY) == (0, 1)
    assert exp.pending("default.other") == (0, 1)
    exp.expect(KEY, 0.0)  # nothing awaited
    assert exp.satisfied(KEY, 0.0)


def test_forget_drops_a_key_and_unknown_keys_are_satisfied():
    exp = Expectations(TTL)
    exp.expect(KEY, 0.0, creating=["a"])
    exp.creation_observed("default.unknown")
    exp.settle("default.unknown", lambda _n: None)
    assert not exp.satisfied(KEY, 0.0)
    exp.forget(KEY)
    assert exp.satisfied(KEY, 0.0)
    assert exp.satisfied("default.unknown", 0.0)


def pod(name: str, *, terminating: bool = False) -> Pod:
    stamp = "2025-01-01T00:00:00Z" if terminating else None
    return Pod(metadata=ObjectMeta(name=name, namespace="default", deletionTimestamp=stamp))
