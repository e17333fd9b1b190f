"""Label and field selectors: parsing, matching, the string form round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.meta import LabelSelector, LabelSelectorRequirement, ObjectMeta
from schemas.pod import Pod, PodSpec, PodStatus
from schemas.selector import (
    Requirement,
    Selector,
    SelectorError,
    from_label_selector,
    from_labels,
    parse,
    parse_fields,
)

SAMPLE = "app=web,tier!=db,env in (a,b),env notin (c),partition,!legacy"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param({"app": "web", "env": "a", "partition": "p1"}, True, id="all-hold"),
        pytest.param({"app": "web", "env": "b", "partition": "", "tier": "fe"}, True, id="tier-differs"),
        pytest.param({"app": "web", "env": "a", "partition": "p1", "tier": "db"}, False, id="tier-is-db"),
        pytest.param({"app": "web", "env": "c", "partition": "p1"}, False, id="env-not-in-set"),
        pytest.param({"app": "web", "partition": "p1"}, False, id="env-missing"),
        pytest.param({"app": "web", "env": "a"}, False, id="partition-missing"),
        pytest.param({"app": "web", "env": "a", "partition": "p", "legacy": "1"}, False, id="legacy-present"),
        pytest.param({"app": "api", "env": "a", "partition": "p1"}, False, id="wrong-app"),
    ],
)
def test_string_selector_matching(labels: dict[str, str], expected: bool) -> None:
    assert parse(SAMPLE).matches(labels) is expected


def test_double_equals_and_spaces() -> None:
    sel = parse(" app == web , env in ( a , b ) ")
    assert sel.matches({"app": "web", "env": "b"})
    assert str(sel) == "app=web,env in (a,b)"


def test_empty_selectors() -> None:
    assert parse("").empty and parse("").matches({"anything": "x"})
    assert from_label_selector(LabelSelector()).matches({})
    assert not from_label_selector(None).matches({})
    assert from_labels({}).empty


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("app=web,", "empty requirement"),
        ("env in (a,b", 'missing ")"'),
        ("a b c", '"a b c"'),
        ("Bad Key=1", '"Bad Key=1"'),
        ("env in ()", '"env in ()"'),
        ("k=-bad-", '"-bad-"'),
        ("-k=v", '"-k"'),
        ("a=b=c", '"a=b=c"'),
    ],
)
def test_parse_errors_name_the_bad_part(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse(text)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_label_selector_struct() -> None:
    sel = from_label_selector(
        LabelSelector(
            matchLabels={"app": "web"},
            matchExpressions=[
                LabelSelectorRequirement(key="env", operator="In", values=["prod", "stage"]),
                LabelSelectorRequirement(key="canary", operator="DoesNotExist"),
            ],
        )
    )
    assert sel.matches({"app": "web", "env": "prod"})
    assert not sel.matches({"app": "web", "env": "dev"})
    assert not sel.matches({"app": "web", "env": "prod", "canary": "y"})
    assert parse(str(sel)) == sel


def test_label_selector_struct_with_bad_values() -> None:
    with pytest.raises(SelectorError, match="values must be non-empty"):
        from_label_selector(LabelSelector(matchExpressions=[LabelSelectorRequirement(key="a", operator="In")]))


names_ = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?", fullmatch=True)
keys = st.one_of(names_, st.builds(lambda p, n: f"{p}.io/{n}", st.from_regex(r"[a-z]{1,6}", fullmatch=True), names_))
requirements = st.one_of(
    st.builds(lambda k, v: Requirement(k, "=", (v,)), keys, st.one_of(st.just(""), names_)),
    st.builds(lambda k, v: Requirement(k, "!=", (v,)), keys, names_),
    st.builds(lambda k, vs: Requirement(k, "In", tuple(sorted(vs))), keys, st.sets(names_, min_size=1, max_size=3)),
    st.builds(lambda k, vs: Requirement(k, "NotIn", tuple(sorted(vs))), keys, st.sets(names_, min_size=1, max_size=3)),
    st.builds(lambda k: Requirement(k, "Exists"), keys),
    st.builds(lambda k: Requirement(k, "DoesNotExist"), keys),
)
selectors = st.lists(requirements, max_size=5).map(lambda rs: Selector(tuple(rs)))
label_maps = st.dictionaries(keys, names_, max_size=5)


@given(selectors)
def test_string_form_round_trips(sel: Selector) -> None:
    assert parse(str(sel)) == sel


@given(selectors, label_maps)
def test_matching_is_the_conjunction_of_requirements(sel: Selector, labels: dict[str, str]) -> None:
    assert sel.matches(labels) == all(Selector((r,)).matches(labels) for r in sel.requirements)
    assert parse(str(sel)).matches(labels) == sel.matches(labels)


@given(label_maps, label_maps)
def test_map_selector_matches_supersets_only(wanted: dict[str, str], labels: dict[str, str]) -> None:
    assert from_labels(wanted).matches({**labels, **wanted})
    assert from_labels(wanted).matches(labels) == all(labels.get(k) == v for k, v in wanted.items())


@given(keys, names_, label_maps)
def test_in_and_notin_are_complements(key: str, value: str, labels: dict[str, str]) -> None:
    assert Requirement(key, "In", (value,)).matches(labels) != Requirement(key, "NotIn", (value,)).matches(labels)
    assert Requirement(key, "Exists").matches(labels) != Requirement(key, "DoesNotExist").matches(labels)


def test_field_selector_on_pods() -> None:
    pod = Pod(metadata=ObjectMeta(name="web-1", namespace="default"), spec=PodSpec(nodeName="n1"),
              status=PodStatus(phase="Running"))
    assert parse_fields("metadata.name=web-1,spec.nodeName=n1").matches(pod)
    assert parse_fields("status.phase!=Pending").matches(pod)
    assert not parse_fields("spec.nodeName==n2").matches(pod)
    assert parse_fields("spec.nodeName=").matches(Pod(metadata=ObjectMeta(name="x")))
    assert str(parse_fields("metadata.name=a,spec.nodeName!=b")) == "metadata.name=a,spec.nodeName!=b"
    with pytest.raises(SelectorError, match="invalid field selector"):
        parse_fields("metadata.name")
