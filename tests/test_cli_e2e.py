"""`kyb` end to end: the CLI against a real nats-server and the api service running in-process
(apply, get, describe, delete, edit with $EDITOR set to a script)."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("services.api.service", reason="the api service is not there yet")

from kyb.cli.main import cli  # noqa: E402
from kyb.natsd import NatsServer, free_port  # noqa: E402


class ApiInProcess:
    """The api service on its own event loop in a thread, so the CLI (which runs its own loop)
    can be invoked synchronously."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="api-service", daemon=True)

    def _main(self) -> None:
        from kyb.serve import run_services

        asyncio.set_event_loop(self.loop)

        async def run() -> None:
            self.stop = asyncio.Event()
            await run_services(["api"], self.url, {"configure_logging": False}, self.stop)

        try:
            self.loop.run_until_complete(run())
        except BaseException as e:  # reported by the fixture
            self.error = e

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    server = NatsServer(store_dir=tmp / "js", port=free_port(), log_file=tmp / "nats.log")
    server.start()
    api = ApiInProcess(server.url)
    api.start()
    runner = CliRunner()
    deadline = time.monotonic() + 30
    while True:  # ready once the api answers a listing
        result = runner.invoke(cli, ["--nats", server.url, "get", "configmaps"])
        if result.exit_code == 0:
            break
        if api.error is not None or time.monotonic() > deadline:
            api.close()
            server.stop()
            pytest.fail(f"api service did not answer: {api.error or result.output}")
        time.sleep(0.1)
    yield server.url
    api.close()
    server.stop()


@pytest.fixture
def kyb(cluster):
    runner = CliRunner()

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None):
        return runner.invoke(cli, ["--nats", cluster, *args], input=input, env=env)

    return run


DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: busybox
"""

CM = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  labels: {{tier: {tier}}}
data:
  key: "{value}"
"""


def test_apply_creates_then_reports_unchanged_then_configured(kyb, tmp_path: Path) -> None:
    f = tmp_path / "app.yaml"
    f.write_text(DEPLOY.format(name="web", replicas=2) + "---\n" + CM.format(name="web-cfg", tier="fe", value="a"))
    first = kyb("apply", "-f", str(f))
    assert first.exit_code == 0, first.output
    assert first.output == "deployment.apps/web created\nconfigmap/web-cfg created\n"
    again = kyb("apply", "-f", str(f))
    assert again.output == "deployment.apps/web unchanged\nconfigmap/web-cfg unchanged\n"
    f.write_text(DEPLOY.format(name="web", replicas=3))
    assert kyb("apply", "-f", str(f)).output == "deployment.apps/web configured\n"
    table = kyb("get", "deploy", "web")
    assert table.output.splitlines()[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table.output.splitlines()[1].split()[:2] == ["web", "0/3"]


def test_apply_reads_stdin_and_continues_after_a_rejected_document(kyb) -> None:
    docs = (CM.format(name="good-1", tier="be", value="x") + "---\n"
            + DEPLOY.format(name="bad", replicas=-1) + "---\n" + CM.format(name="good-2", tier="be", value="y"))
    result = kyb("apply", "-f", "-", input=docs)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "configmap/good-1 created"
    assert lines[1].startswith('error: error when applying "STDIN": ')
    assert "spec.replicas" in "\n".join(lines[1:-1])
    assert lines[-1] == "configmap/good-2 created"


def test_get_outputs_and_selectors(kyb) -> None:
    kyb("apply", "-f", "-", input=CM.format(name="sel-a", tier="sel", value="1") + "---\n"
        + CM.format(name="sel-b", tier="other", value="2"))
    as_yaml = yaml.safe_load(kyb("get", "cm", "sel-a", "-o", "yaml").output)
    assert as_yaml["kind"] == "ConfigMap" and as_yaml["data"] == {"key": "1"}
    assert as_yaml["metadata"]["resourceVersion"]
    as_json = json.loads(kyb("get", "configmaps", "-o", "json", "-l", "tier=sel").output)
    assert as_json["kind"] == "List" and [i["metadata"]["name"] for i in as_json["items"]] == ["sel-a"]
    assert kyb("get", "cm/sel-b", "-o", "name").output == "configmap/sel-b\n"
    wide = kyb("get", "cm", "-A", "-l", "tier in (sel,other)").output.splitlines()
    assert wide[0].split() == ["NAMESPACE", "NAME", "DATA", "AGE"]
    assert sorted(line.split()[1] for line in wide[1:]) == ["sel-a", "sel-b"]


def test_get_all_lists_the_workload_kinds_and_services_by_kind(kyb) -> None:
    kyb("apply", "-f", "-", input=(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: all-ns}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: all-svc, namespace: all-ns}\n"
        "spec: {selector: {app: x}, ports: [{port: 80}]}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: all-dep, namespace: all-ns}\n"
        "spec: {replicas: 0, selector: {matchLabels: {app: x}}, template: {metadata: {labels: {app: x}},"
        " spec: {containers: [{name: c, image: busybox}]}}}\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: all-cm, namespace: all-ns}\n"
    ))
    out = kyb("get", "all", "-n", "all-ns").output
    names = [line.split()[0] for line in out.splitlines() if line and not line.startswith("NAME")]
    assert "service/all-svc" in names and "deployment.apps/all-dep" in names
    assert not any("all-cm" in n for n in names), "ConfigMaps are not in the all category"


def test_get_show_labels_adds_kubectls_labels_column(kyb) -> None:
    kyb("apply", "-f", "-", input=CM.format(name="lab-a", tier="lab", value="1") + "---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lab-none}\n")
    lines = kyb("get", "cm", "lab-a", "lab-none", "--show-labels").output.splitlines()
    assert lines[0].split() == ["NAME", "DATA", "AGE", "LABELS"]
    assert lines[1].split()[0] == "lab-a" and lines[1].split()[-1] == "tier=lab"
    assert lines[2].split()[0] == "lab-none" and lines[2].split()[-1] == "<none>"


def test_get_missing_and_empty(kyb) -> None:
    missing = kyb("get", "pods", "nope")
    assert missing.exit_code == 1
    assert missing.output == 'Error from server (NotFound): pods "nope" not found\n'
    empty = kyb("get", "pods", "-n", "empty-ns")
    assert empty.exit_code == 0
    assert empty.output == "No resources found in empty-ns namespace.\n"


def test_describe_shows_fields_and_recent_events(kyb, cluster) -> None:
    kyb("apply", "-f", "-", input=CM.format(name="described", tier="d", value="v"))

    async def publish_event() -> None:
        import nats

        from kyb.store import events_subject

        nc = await nats.connect(cluster)
        event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "described.1", "namespace": "default"},
                 "involvedObject": {"kind": "ConfigMap", "name": "described", "namespace": "default"},
                 "reason": "Checked", "message": "looks fine", "type": "Normal", "count": 1,
                 "lastTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "source": {"component": "test"}}
        await nc.jetstream().publish(events_subject("default", "ConfigMap", "described"), json.dumps(event).encode())
        await nc.close()

    asyncio.run(publish_event())
    result = kyb("describe", "cm", "described")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["Name:", "described"]
    assert "Labels:             tier=d" in lines
    event_rows = [line.split() for line in lines[lines.index("Events:") + 3:]]
    assert ["Normal", "Checked", "test", "looks", "fine"] in [r[:2] + r[3:] for r in event_rows]


def test_delete_by_name_and_by_selector(kyb) -> None:
    kyb("apply", "-f", "-", input=CM.format(name="del-1", tier="gone", value="1") + "---\n"
        + CM.format(name="del-2", tier="gone", value="2") + "---\n" + CM.format(name="del-3", tier="x", value="3"))
    one = kyb("delete", "configmap", "del-3")
    assert one.exit_code == 0 and one.output == 'configmap "del-3" deleted\n'
    by_label = kyb("delete", "cm", "-l", "tier=gone")
    assert sorted(by_label.output.splitlines()) == ['configmap "del-1" deleted', 'configmap "del-2" deleted']
    assert kyb("get", "cm", "del-1").exit_code == 1
    again = kyb("delete", "cm/del-3")
    assert again.exit_code == 1 and again.output == 'Error from server (NotFound): configmaps "del-3" not found\n'


def editor(tmp_path: Path, name: str, body: str) -> str:
    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\nimport sys, subprocess\npath = sys.argv[1]\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_edit_replaces_cancels_and_keeps_bad_edits(kyb, tmp_path: Path) -> None:
    kyb("apply", "-f", "-", input=CM.format(name="edited", tier="e", value="before"))
    change = editor(tmp_path, "change.py",
                    "text = open(path).read().replace('key: before', 'key: after')\nopen(path, 'w').write(text)")
    result = kyb("edit", "cm", "edited", env={"EDITOR": change})
    assert result.exit_code == 0, result.output
    assert result.output == "configmap/edited edited\n"
    assert yaml.safe_load(kyb("get", "cm", "edited", "-o", "yaml").output)["data"] == {"key": "after"}

    assert kyb("edit", "cm", "edited", env={"EDITOR": "true"}).output == "Edit cancelled, no changes made.\n"

    broken = editor(tmp_path, "broken.py", "open(path, 'a').write('data: [unclosed\\n')")
    bad = kyb("edit", "cm", "edited", env={"EDITOR": broken})
    assert bad.exit_code == 1
    assert "error parsing" in bad.output
    kept = bad.output.split('stored to "')[1].split('"')[0]
    assert "data: [unclosed" in Path(kept).read_text()


def test_edit_loses_to_a_concurrent_change_with_a_conflict(kyb, cluster, tmp_path: Path) -> None:
    kyb("apply", "-f", "-", input=CM.format(name="raced", tier="r", value="mine"))
    other = tmp_path / "other.yaml"
    other.write_text(CM.format(name="raced", tier="r", value="theirs"))
    racing = editor(
        tmp_path, "race.py",
        f"subprocess.run([{sys.executable!r}, '-m', 'kyb.cli.main', '--nats', {cluster!r}, 'apply', '-f', "
        f"{str(other)!r}], check=True, capture_output=True)\n"
        "text = open(path).read().replace('key: mine', 'key: edited')\nopen(path, 'w').write(text)",
    )
    result = kyb("edit", "cm", "raced", env={"EDITOR": racing})
    assert result.exit_code == 1
    assert "Conflict" in result.output
    assert yaml.safe_load(kyb("get", "cm", "raced", "-o", "yaml").output)["data"] == {"key": "theirs"}


def test_server_rejects_a_raw_publish_of_invalid_yaml(cluster) -> None:
    from kyb import errors
    from kyb.client import ApiClient, connect

    async def raw() -> None:
        nc = await connect(cluster)
        try:
            with pytest.raises(errors.KybError) as e:
                await ApiClient(nc).apply(b"kind: ConfigMap\nmetadata:\n  name: x\n  labels: a: b\n")
            assert 400 <= e.value.code < 500
        finally:
            await nc.close()

    asyncio.run(raw())


def test_get_watch_streams_changes_after_the_listing(kyb, cluster) -> None:
    import subprocess

    kyb("apply", "-f", "-", input=CM.format(name="watched", tier="w", value="1"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kyb.cli.main", "--nats", cluster, "get", "cm", "watched", "-w"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    import queue

    lines: list[str] = []
    printed: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [printed.put(line.rstrip("\n")) for line in proc.stdout], daemon=True).start()

    def read_until(predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(predicate(line) for line in lines):
            try:
                lines.append(printed.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"watch printed only {lines!r}")

    try:
        read_until(lambda line: line.split()[:2] == ["watched", "1"])
        assert lines[0].split() == ["NAME", "DATA", "AGE"]
        kyb("delete", "cm", "watched", "--no-wait")
        read_until(lambda line: line.endswith("(deleted)"))
        assert lines[-1].split()[:2] == ["watched", "1"]
        assert len([line for line in lines if line.startswith("watched")]) == 2  # listing, deletion
    finally:
        proc.terminate()
        proc.wait(10)


def test_events_lists_a_namespace_and_one_object(kyb) -> None:
    kyb("apply", "-f", "-", input=CM.format(name="eventful", tier="ev", value="1"))
    everything = kyb("events", "-A")
    assert everything.exit_code == 0, everything.output
    assert everything.output.splitlines()[0].split()[:3] == ["NAMESPACE", "LAST", "SEEN"]
    assert any("configmap/eventful" in line for line in everything.output.splitlines())
    one = kyb("events", "--for", "cm/eventful")
    rows = one.output.splitlines()[1:]
    assert rows and all("configmap/eventful" in row for row in rows)
    none = kyb("events", "-n", "quiet-ns")
    assert none.output == "No events found in quiet-ns namespace.\n"


def test_delete_by_manifest_and_cluster_scoped_get(kyb, tmp_path: Path) -> None:
    f = tmp_path / "ns.yaml"
    f.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scratch\n---\n"
                 + CM.format(name="in-scratch", tier="s", value="1").replace("metadata:\n", "metadata:\n  namespace: scratch\n"))
    assert kyb("apply", "-f", str(f)).output == "namespace/scratch created\nconfigmap/in-scratch created\n"
    ns = kyb("get", "ns", "scratch", "-n", "elsewhere")
    assert ns.exit_code == 0 and ns.output.splitlines()[1].split()[:2] == ["scratch", "Active"]
    assert kyb("get", "cm", "-n", "scratch", "-o", "name").output == "configmap/in-scratch\n"
    # Without the namespace and gc controllers running here, nothing would finish the deletion.
    gone = kyb("delete", "-f", str(f), "--cascade=orphan", "--no-wait")
    assert gone.exit_code == 0, gone.output
    assert gone.output.splitlines() == ['namespace "scratch" deleted', 'configmap "in-scratch" deleted']
    left = kyb("get", "cm", "in-scratch", "-n", "scratch", "-o", "json")
    assert left.exit_code == 1 or json.loads(left.output)["metadata"].get("deletionTimestamp")


BOUND_POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: far-node
  containers: [{{name: main, image: busybox}}]
"""


@pytest.mark.parametrize(
    ("flags", "grace", "said"),
    [
        pytest.param((), 30, "deleted", id="the pod's own grace period"),
        pytest.param(("--now",), 1, "deleted", id="now"),
        pytest.param(("--grace-period", "5"), 5, "deleted", id="grace period"),
        pytest.param(("--grace-period", "0"), 1, "deleted", id="zero without force means 1"),
        pytest.param(("--grace-period", "0", "--force"), None, "force deleted", id="force"),
        pytest.param(("--force",), None, "force deleted", id="force alone"),
    ],
)
def test_delete_grace_period_now_and_force_as_kubectl(kyb, flags, grace, said) -> None:
    """A pod bound to a node (whose kubelet never answers here) is marked with the grace period
    kubectl would send; --force removes it at once, with kubectl's warning."""
    name = "grace-" + "-".join(f.strip("-") for f in flags) if flags else "grace-default"
    kyb("apply", "-f", "-", input=BOUND_POD.format(name=name))
    result = kyb("delete", "pod", name, "--no-wait", *flags)
    assert result.exit_code == 0, result.output
    assert f'pod "{name}" {said}' in result.output
    left = kyb("get", "pod", name, "-o", "json")
    if grace is None:
        assert "Immediate deletion does not wait" in result.output
        assert left.exit_code == 1
    else:
        meta = json.loads(left.output)["metadata"]
        assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == grace
        kyb("delete", "pod", name, "--force")


def test_delete_now_with_a_grace_period_is_a_usage_error(kyb) -> None:
    result = kyb("delete", "pod", "x", "--now", "--grace-period", "3")
    assert result.exit_code == 2 and "--now and --grace-period cannot be specified together" in result.output


def test_create_makes_new_objects_and_never_overwrites(kyb, tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(CM.format(name="made", tier="t", value="1"))
    first = kyb("create", "-f", str(manifest))
    assert first.exit_code == 0 and first.output == "configmap/made created\n"
    manifest.write_text(CM.format(name="made", tier="t", value="2"))
    again = kyb("create", "-f", str(manifest))
    assert again.exit_code == 1
    assert again.output == 'Error from server (AlreadyExists): configmaps "made" already exists\n'
    assert yaml.safe_load(kyb("get", "cm", "made", "-o", "yaml").output)["data"] == {"key": "1"}


def test_create_namespace_and_configmap_from_literals_and_files(kyb, tmp_path: Path) -> None:
    assert kyb("create", "namespace", "made-ns").output == "namespace/made-ns created\n"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.txt").write_text("alpha\n")
    (tmp_path / "conf" / "b.txt").write_text("beta\n")
    (tmp_path / "one.ini").write_text("x=1\n")
    result = kyb("create", "configmap", "settings", "-n", "made-ns", "--from-literal", "mode=fast",
                 "--from-file", str(tmp_path / "conf"), "--from-file", f"renamed={tmp_path / 'one.ini'}")
    assert result.exit_code == 0 and result.output == "configmap/settings created\n"
    data = yaml.safe_load(kyb("get", "cm", "settings", "-n", "made-ns", "-o", "yaml").output)["data"]
    assert data == {"mode": "fast", "a.txt": "alpha\n", "b.txt": "beta\n", "renamed": "x=1\n"}
    clash = kyb("create", "configmap", "clash", "--from-literal", "k=1", "--from-literal", "k=2")
    assert clash.exit_code == 2 and 'cannot add key "k"' in clash.output
    assert kyb("get", "cm", "clash").exit_code == 1  # nothing was written


def test_label_and_annotate_set_remove_and_refuse_to_overwrite_silently(kyb) -> None:
    kyb("apply", "-f", "-", input=CM.format(name="tagged", tier="one", value="1"))
    assert kyb("label", "cm", "tagged", "team=a", "tier-").output == "configmap/tagged labeled\n"
    labels = yaml.safe_load(kyb("get", "cm/tagged", "-o", "yaml").output)["metadata"]["labels"]
    assert labels == {"team": "a"}
    refused = kyb("label", "cm/tagged", "team=b")
    assert refused.exit_code == 1 and "'team' already has a value (a), and --overwrite is false" in refused.output
    assert kyb("label", "cm/tagged", "team=b", "--overwrite").output == "configmap/tagged labeled\n"
    assert kyb("label", "cm/tagged", "team=b").output == "configmap/tagged not labeled\n"
    bad = kyb("label", "cm/tagged", "bad key=x")
    assert bad.exit_code == 1 and "metadata.labels" in bad.output  # the api names the field
    assert kyb("annotate", "cm", "tagged", "note=hello world").output == "configmap/tagged annotated\n"
    meta = yaml.safe_load(kyb("get", "cm/tagged", "-o", "yaml").output)["metadata"]
    assert meta["labels"] == {"team": "b"} and meta["annotations"]["note"] == "hello world"
