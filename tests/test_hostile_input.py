"""Hostile input against the real api over a real nats-server: alias bombs, deep nesting,
malformed bytes and fuzzed manifests are each answered quickly with a 4xx Status naming the
problem, nothing is stored for them, memory stays flat, and the api keeps answering."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import psutil
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kyb import errors
from kyb.cli.main import cli
from schemas import limits
from services.api import budget
from tests.cluster import QUIET, Services, wait_api, wait_for

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
"""

CONFIGMAP = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "%s"}, "data": {"k": "v"}}'
SLOW = 5.0  # seconds: no answer to anything may take longer


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A ConfigMap carrying the billion-laughs shape (CVE-2019-11253): ``width**levels`` nodes."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: bomb}",
             "a0: &a0 [" + ",".join(['"lol"'] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.fixture
async def api(nats_url):
    services = Services(["api"], nats_url, QUIET).start()
    nc = await nats.connect(nats_url)
    await wait_api(nc, services.task)
    yield nc
    await services.stop()
    await nc.close()


async def send(nc, subject: str, body: bytes) -> tuple[int, dict, float]:
    start = time.perf_counter()
    msg = await nc.request(subject, body, timeout=SLOW * 2)
    elapsed = time.perf_counter() - start
    return int(msg.headers["Kyb-Status"]), json.loads(msg.data), elapsed


async def stored_bytes(nc) -> tuple[int, int]:
    """What JetStream holds, all streams together: changes when anything is written."""
    info = await nc.jetstream().account_info()
    return info.streams, info.storage + info.memory


async def still_answers(nc, name: str) -> None:
    code, obj, elapsed = await send(nc, "kyb.api.apply", (CONFIGMAP % name).encode())
    assert code == 201, obj
    assert elapsed < SLOW


async def refused(nc, subject: str, body: bytes, *, within: float = SLOW) -> dict:
    """Send ``body``; assert a 4xx Status within ``within`` seconds and nothing written."""
    before = await stored_bytes(nc)
    code, status, elapsed = await send(nc, subject, body)
    assert 400 <= code < 500, status
    assert status["kind"] == "Status" and status["code"] == code and status["message"]
    assert elapsed < within, f"answered in {elapsed:.2f}s"
    assert await stored_bytes(nc) == before, "a refused request wrote something"
    return status


# -- named regressions -----------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["apply", "create", "replace"])
async def test_a_nine_level_alias_bomb_is_refused_at_once_without_memory(api, verb):
    process = psutil.Process()
    rss = process.memory_info().rss
    body = alias_bomb(9).encode()
    assert len(body) < 500
    status = await refused(api, f"kyb.api.{verb}", body, within=1.0)
    assert status["code"] == 400 and "excessive aliasing" in status["message"]
    assert process.memory_info().rss - rss < 50 * 1024 * 1024
    await still_answers(api, f"after-bomb-{verb}")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 5000 + b"]" * 5000, id="json-array"),
        pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, id="json-object"),
        pytest.param(b"[" * 5000 + b"]" * 5000 + b"\n#", id="yaml-flow"),
        pytest.param(b"- " * 5000 + b"x", id="yaml-block-sequence"),
        pytest.param(b"".join(b"  " * i + b"k:\n" for i in range(700)), id="yaml-block-mapping-700"),
        pytest.param(
            b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "deep"}, "data": '
            + b"[" * 5000 + b"]" * 5000 + b"}",
            id="json-inside-a-manifest",
        ),
    ],
)
async def test_deep_nesting_is_a_bad_request_naming_the_limit(api, body):
    status = await refused(api, "kyb.api.apply", body)
    assert status["code"] == 400 and status["reason"] == "BadRequest"
    assert f"the limit is {limits.MAX_DEPTH} levels" in status["message"]


@pytest.mark.parametrize(
    "subject",
    ["kyb.api.get", "kyb.api.list", "kyb.api.delete", "kyb.api.node.n1.status", "kyb.api.node.n1.delete"],
)
async def test_queries_and_node_requests_are_bounded_too(api, subject):
    deep = b'{"kind": "ConfigMap", "name": "x", "junk": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    status = await refused(api, subject, deep)
    assert status["code"] == 400
    status = await refused(api, subject, b'{"kind": "ConfigMap", "name": 1' + b"0" * 5000 + b"}")
    assert status["code"] == 400
    await still_answers(api, "after-" + subject.replace(".", "-"))


MANIFEST_HEAD = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\n"


@pytest.mark.parametrize(
    "body, words",
    [
        pytest.param(b"", "empty request body", id="empty"),
        pytest.param(b"   \n\t", "empty request body", id="whitespace"),
        pytest.param(MANIFEST_HEAD + b'data: {k: "a\x00b"}\n', "unacceptable character", id="nul"),
        pytest.param(b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a\x00"}}', "JSON", id="json-nul"),
        pytest.param(MANIFEST_HEAD + b"data: {k: \xff\xfe}\n", "invalid YAML", id="invalid-utf8"),
        pytest.param(b'{"apiVersion": "v1", "kind": "\xff"}', "UTF-8", id="json-invalid-utf8"),
        pytest.param(b"- just\n- a list\n", "must be an object", id="sequence"),
        pytest.param(b'"a string"', "must be an object", id="scalar"),
        pytest.param(b"[1, 2]", "must be an object", id="json-array"),
        pytest.param(MANIFEST_HEAD + b"---\n" + MANIFEST_HEAD, "exactly one manifest", id="two-documents"),
        pytest.param(MANIFEST_HEAD + b"data: {k: 1" + b"0" * 5000 + b"}\n", "invalid value", id="huge-int-yaml"),
        pytest.param(b'{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": '
                     b'{"replicas": 1' + b"0" * 40 + b"}}", "", id="huge-int-json"),
        pytest.param(MANIFEST_HEAD + b"data: !!python/object/apply:os.system ['true']\n", "constructor",
                     id="python-tag"),
        pytest.param(MANIFEST_HEAD + b"data: {k: a}\ndata: {k: b}\n", "duplicate key", id="duplicate-key"),
        pytest.param(MANIFEST_HEAD + b"data: &d [*d]\n", "recursive alias", id="recursive-alias"),
        pytest.param(MANIFEST_HEAD + b"data: {k: 2024-13-45}\n", "invalid value", id="bad-timestamp"),
        pytest.param(b"apiVersion: v1\nkind: ConfigMap\nmetadata: [1]\n", "metadata", id="metadata-list"),
        pytest.param(b"apiVersion: [v1]\nkind: {a: 1}\nmetadata: {name: x}\n", "apiVersion", id="kind-not-string"),
        pytest.param(MANIFEST_HEAD + b'x: &x "' + b"y" * 100_000 + b'"\nl: [' + b",".join([b"*x"] * 50) + b"]\n",
                     "once aliases are expanded", id="expanded-text"),
    ],
)
async def test_malformed_bodies_are_a_4xx_naming_the_problem(api, body, words):
    status = await refused(api, "kyb.api.apply", body)
    assert words in status["message"], status


async def test_a_hostile_last_applied_annotation_does_not_break_the_next_apply(api):
    annotations = {"kubectl.kubernetes.io/last-applied-configuration": "[" * 5000 + "]" * 5000}
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "annotated", "annotations": annotations}}
    code, obj, _ = await send(api, "kyb.api.create", json.dumps(body).encode())
    assert code == 201, obj
    code, obj, _ = await send(api, "kyb.api.apply", (CONFIGMAP % "annotated").encode())
    assert code == 200, obj


def test_kyb_apply_refuses_the_bomb_with_a_clear_message(tmp_path, nats_url):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(9))
    for verb in ("apply", "create"):
        start = time.perf_counter()
        result = CliRunner().invoke(cli, ["--nats", nats_url, verb, "-f", str(bomb)])
        assert time.perf_counter() - start < 5
        assert result.exit_code == 1, result.output
        assert f"error parsing {bomb}" in result.output and "excessive aliasing" in result.output


@pytest.fixture
async def node_api(nc, tmp_path):
    """The kubelet's node API for node "n1" on a real process runtime (no pods on it)."""
    from services.kubelet.nodeapi import serve_node_api
    from services.kubelet.runtime.process import ProcessRuntime

    served = await serve_node_api(nc, "n1", ProcessRuntime(tmp_path / "state"), lambda *_: None)
    yield nc
    await served.stop()


@pytest.mark.parametrize("verb", ["logs", "exec"])
@pytest.mark.parametrize(
    "body, code, words",
    [
        pytest.param(b'{"pod": "p", "command": ["true"], "junk": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400,
                     f"the limit is {limits.MAX_DEPTH} levels", id="deep"),
        pytest.param(b'{"pod": "p", "command": ["true"], "tail": 1' + b"0" * 5000 + b', "timeout": 1' + b"0" * 5000 + b"}",
                     400, "out of range", id="huge-int"),
        pytest.param(b"\xff\x00", 400, "invalid JSON", id="bytes"),
        pytest.param(b"[1]", 400, "invalid", id="not-an-object"),
    ],
)
async def test_the_kubelets_node_requests_are_bounded_too(node_api, verb, body, code, words):
    msg = await node_api.request(f"kyb.node.n1.{verb}", body, timeout=SLOW)
    status = json.loads(msg.data)
    assert int(msg.headers["Kyb-Status"]) == status["code"] == code and words in status["message"], status
    # a cancel has no answer; a hostile one must not take the node API down
    await node_api.publish("kyb.node.n1.cancel", b'{"inbox": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    msg = await node_api.request("kyb.node.n1.exec", b'{"pod": "p", "command": ["true"]}', timeout=SLOW)
    assert json.loads(msg.data)["code"] == 404  # answered: no such pod on this node


# -- one request cannot starve the others ------------------------------------------------------


def large_configmap(name: str, keys: int = 8_000) -> bytes:
    """A well-formed YAML ConfigMap of a few hundred KiB: a fraction of a second to decode."""
    data = "".join(f"  key-{i}: value-{i}\n" for i in range(keys))
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata:\n{data}".encode()


async def test_large_bodies_queue_for_a_bounded_lane_while_small_requests_are_answered(api, monkeypatch):
    lane = budget.Lane(concurrency=1, queue=1, budget=30)
    monkeypatch.setattr(budget, "LANE", lane)
    bodies = [large_configmap(f"large-{i}") for i in range(4)]
    assert all(len(b) > budget.INLINE_BYTES for b in bodies)
    large = [asyncio.ensure_future(send(api, "kyb.api.apply", b)) for b in bodies]
    await wait_for(lambda: asyncio.sleep(0, bool(lane.running)), what="a large body being decoded")
    code, obj, elapsed = await send(api, "kyb.api.apply", (CONFIGMAP % "small-meanwhile").encode())
    assert code == 201 and elapsed < 1.0, (code, elapsed)
    answers = await asyncio.gather(*large)
    codes = sorted(code for code, _, _ in answers)
    assert codes == [201, 201, 429, 429], codes  # one decoding, one waiting, the rest turned away
    for code, status, _ in answers:
        if code == 429:
            assert status["reason"] == "TooManyRequests" and "retry" in status["message"]
            assert errors.from_status(status).delay > 0


async def test_decoding_past_the_time_budget_is_a_503_with_a_retry_hint(api, monkeypatch):
    lane = budget.Lane(concurrency=1, queue=1, budget=0.01)
    monkeypatch.setattr(budget, "LANE", lane)
    before = await stored_bytes(api)
    code, status, _ = await send(api, "kyb.api.apply", large_configmap("slow"))
    assert code == 503 and "budget" in status["message"], status
    assert isinstance(errors.from_status(status), errors.Temporary)
    await asyncio.gather(*lane.running)  # the thread finishes; its result is dropped
    assert await stored_bytes(api) == before
    await still_answers(api, "after-budget")


# -- fuzzing -----------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
kinds = st.sampled_from([("v1", "ConfigMap"), ("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Pod"),
                         ("v1", "Secret"), ("batch/v1", "Job"), ("v1", "Namespace"), ("x/y", "Nope")])
names = st.sampled_from(["fz", "fz-2", "Bad_Name", ""])


@st.composite
def manifests(draw) -> dict:
    api_version, kind = draw(kinds)
    meta = {"name": draw(names)}
    if draw(st.booleans()):
        meta["labels"] = draw(values)
    doc = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    for field in draw(st.sets(st.sampled_from(["spec", "data", "status"]))):
        doc[field] = draw(values)
    return doc


def _encode(doc: dict, as_yaml: bool) -> bytes:
    return yaml.safe_dump(doc).encode() if as_yaml else json.dumps(doc, allow_nan=True).encode()


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Byte-level mutations: at a position, overwrite, insert or delete one byte."""
    out = bytearray(data)
    for op, pos, byte in edits:
        pos %= max(1, len(out))
        if op == 0:
            out[pos] = byte
        elif op == 1:
            out.insert(pos, byte)
        elif out:
            del out[pos]
    return bytes(out)


mutations = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8)
bodies = (
    st.builds(_encode, manifests(), st.booleans())
    | st.builds(_mutate, st.just(DEPLOYMENT.encode()), mutations)
    | st.builds(_mutate, st.just(json.dumps(yaml.safe_load(DEPLOYMENT)).encode()), mutations)
    | st.binary(max_size=200)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, verb=st.sampled_from(["apply", "create", "replace"]))
async def test_fuzzed_bodies_never_get_a_5xx_and_refusals_store_nothing(api, body, verb):
    before = await stored_bytes(api)
    code, status, elapsed = await send(api, f"kyb.api.{verb}", body)
    assert code < 500, status
    assert elapsed < SLOW, f"answered in {elapsed:.2f}s"
    if code >= 400:
        assert status["kind"] == "Status" and status["message"]
        assert await stored_bytes(api) == before, f"{status} yet something was written"
    code, obj, elapsed = await send(api, "kyb.api.get", b'{"kind": "Namespace", "name": "default"}')
    assert code == 200 and elapsed < SLOW, obj
