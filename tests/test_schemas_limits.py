"""schemas.limits: every decoder of user input refuses, quickly and with a message naming the
limit, what would take memory or time out of proportion to its size, and decodes ordinary
manifests exactly as yaml.safe_load and msgspec do."""

from __future__ import annotations

import json
import time

import msgspec
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import limits

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        env: [{name: A, value: "1"}]
"""


def alias_bomb(levels: int, width: int = 9) -> str:
    """The billion-laughs shape: each level a list of ``width`` aliases of the level below."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_ordinary_manifests_decode_as_the_libraries_do():
    assert list(limits.load_yaml(DEPLOYMENT)) == [yaml.safe_load(DEPLOYMENT)]
    body = json.dumps(yaml.safe_load(DEPLOYMENT)).encode()
    assert limits.decode_json(body) == msgspec.json.decode(body)
    assert list(limits.load_yaml("a: 1\n---\nb: 2\n")) == [{"a": 1}, {"b": 2}]


def test_anchors_and_merge_keys_within_the_ratio_are_fine():
    text = "base: &base {cpu: 1, memory: 2}\nx: {<<: *base, cpu: 3}\ny: [*base, *base]\n"
    assert limits.load_one_yaml(text) == {"base": {"cpu": 1, "memory": 2}, "x": {"cpu": 3, "memory": 2},
                                          "y": [{"cpu": 1, "memory": 2}] * 2}


@pytest.mark.parametrize("levels", [pytest.param(6, id="6-levels"), pytest.param(9, id="9-levels"),
                                    pytest.param(30, id="30-levels")])
def test_an_alias_bomb_is_refused_before_it_is_expanded(levels):
    text = alias_bomb(levels)
    start = time.perf_counter()
    with pytest.raises(limits.InputError, match="excessive aliasing.*go-yaml"):
        list(limits.load_yaml(text))
    assert time.perf_counter() - start < 0.5  # proportional to the text, not to 9**levels


def test_a_merge_key_bomb_is_refused_too():
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    lines += [f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 9) + f"], k{i}: 0}}" for i in range(1, 9)]
    with pytest.raises(limits.InputError, match="aliasing"):
        list(limits.load_yaml("\n".join(lines)))


def test_the_go_yaml_ratio():
    assert limits.allowed_alias_ratio(1000) == 0.99
    assert limits.allowed_alias_ratio(4_000_000) == 0.10
    assert limits.allowed_alias_ratio(2_200_000) == pytest.approx(0.545)
    limits.check_aliases(nodes=1000, written=1)       # not more than 1,000 nodes: allowed
    limits.check_aliases(nodes=5000, written=4901)    # not more than 100 from aliases: allowed
    limits.check_aliases(nodes=5000, written=50)      # 99% exactly: allowed
    with pytest.raises(limits.InputError):
        limits.check_aliases(nodes=5000, written=49)


def test_a_recursive_alias_is_refused():
    with pytest.raises(limits.InputError, match="recursive alias"):
        list(limits.load_yaml("a: &a [1, *a]\n"))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 5000 + "]" * 5000, id="yaml-flow-5000"),
        pytest.param("[" * 101 + "]" * 101, id="yaml-flow-101"),
        pytest.param("- " * 101 + "x", id="yaml-block-101"),
        pytest.param("".join("  " * i + f"k{i}:\n" for i in range(150)) + "  " * 150 + "v", id="yaml-mapping-150"),
        pytest.param("a: &a [[[[[[[[[[1]]]]]]]]]]\n" + "b: " + "[" * 95 + "*a" + "]" * 95, id="yaml-through-alias"),
    ],
)
def test_deep_yaml_is_refused_naming_the_limit(text):
    with pytest.raises(limits.InputError, match=f"nested too deeply.*limit is {limits.MAX_DEPTH}"):
        list(limits.load_yaml(text))


@pytest.mark.parametrize("depth", [101, 900, 5000, 100_000])
def test_deep_json_is_refused_naming_the_limit(depth):
    with pytest.raises(limits.InputError, match=f"limit is {limits.MAX_DEPTH}"):
        limits.decode_json(b"[" * depth + b"]" * depth)
    with pytest.raises(limits.InputError, match=f"limit is {limits.MAX_DEPTH}"):
        limits.decode_json(b'{"a":' * depth + b"1" + b"}" * depth)


def test_json_at_the_depth_limit_is_fine():
    depth = limits.MAX_DEPTH
    assert limits.decode_json(b"[" * depth + b"]" * depth) is not None
    assert limits.load_one_yaml("[" * depth + "]" * depth) is not None


def test_typed_json_skipping_a_deep_unknown_field_is_refused_not_a_recursion_error():
    class Request(msgspec.Struct):
        pod: str

    with pytest.raises(limits.InputError, match="nested too deeply"):
        limits.decode_json(b'{"pod": "x", "junk": ' + b"[" * 5000 + b"]" * 5000 + b"}", type=Request)
    with pytest.raises(limits.InputError, match="invalid query: Expected `str`"):
        limits.decode_json(b'{"pod": 1}', type=Request, what="query")


def test_sizes():
    with pytest.raises(limits.InputTooLarge, match="1048577 bytes exceeds the limit of 1048576 bytes"):
        limits.decode_json(b" " * (limits.MAX_BYTES + 1))
    with pytest.raises(limits.InputTooLarge):
        list(limits.load_yaml("a: 1\n" + "#" * limits.MAX_BYTES))
    # one long string aliased many times: few nodes, a lot of text
    text = 'x: &x "' + "y" * 100_000 + '"\nl: [' + ", ".join(["*x"] * 50) + "]\n"
    with pytest.raises(limits.InputTooLarge, match="characters of text once aliases are expanded"):
        list(limits.load_yaml(text))
    # a file of many documents is bounded per document, not as a whole
    many = "".join(f"---\nname: doc-{i}\nvalue: {'v' * 1000}\n" for i in range(1200))
    assert len(list(limits.load_yaml(many, max_bytes=None))) == 1200


@pytest.mark.parametrize(
    "text, problem",
    [
        pytest.param("a: 1\na: 2\n", 'found duplicate key "a"', id="duplicate-key"),
        pytest.param("a: !!python/object/apply:os.system [true]\n", "could not determine a constructor", id="python-tag"),
        pytest.param('a: "\x00"\n', "unacceptable character", id="nul"),
        pytest.param(b"a: \xff\xfe\n", "invalid", id="bad-utf8"),
        pytest.param("a: 1" + "0" * 5000 + "\n", "invalid value in YAML", id="huge-integer"),
        pytest.param("a: 2024-13-45\n", "invalid value in YAML", id="bad-timestamp"),
        pytest.param("a: *nowhere\n", "undefined alias", id="undefined-alias"),
    ],
)
def test_bad_yaml_is_a_yaml_error_not_a_crash(text, problem):
    with pytest.raises(yaml.YAMLError, match=problem):
        list(limits.load_yaml(text))


def test_a_merge_key_is_not_a_duplicate():
    assert limits.load_one_yaml("b: &b {x: 1}\nc: {<<: *b, x: 2}\n")["c"] == {"x": 2}


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None)
@given(yaml_values)
def test_anything_yaml_dump_writes_loads_back_the_same(value):
    text = yaml.safe_dump(value)
    assert limits.load_one_yaml(text) == yaml.safe_load(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_input_is_decoded_or_refused_with_a_yaml_error(data):
    try:
        list(limits.load_yaml(data))
    except yaml.YAMLError:
        pass
    try:
        limits.decode_json(data)
    except limits.InputError:
        pass


def test_schemas_validation_decodes_text_under_the_same_limits():
    from schemas.validation import SchemaError, decode

    with pytest.raises(SchemaError, match="excessive aliasing"):
        decode("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n" + alias_bomb(9))
    with pytest.raises(SchemaError, match=f"limit is {limits.MAX_DEPTH}"):
        decode(b'{"apiVersion": "v1", "kind": "ConfigMap", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert decode('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}').metadata.name == "x"
