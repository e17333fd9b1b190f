"""ServiceAccounts on the api over a real nats-server: every namespace has its ``default``,
pods run as it unless they name another, user ServiceAccounts apply like any object, and
pods made by a controller get the same defaulting as pods from a manifest."""

from __future__ import annotations

import datetime as _dt

import msgspec
import nats

from kyb.cli.printers import table
from kyb.store import Store
from schemas.defaults import with_service_account
from schemas.pod import Pod
from tests.test_api import call

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


async def test_every_namespace_has_a_default_service_account(api_nc):
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        code, sa = await call(api_nc, "get", {"kind": "sa", "namespace": ns, "name": "default"})
        assert code == 200, sa
    code, _ = await call(api_nc, "apply", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    assert code == 201
    code, sa = await call(api_nc, "get", {"kind": "serviceaccounts", "namespace": "team-a", "name": "default"})
    assert code == 200 and sa["kind"] == "ServiceAccount" and sa["metadata"]["uid"]


async def test_a_pod_runs_as_default_unless_it_names_one_and_reapplying_is_unchanged(api_nc):
    code, pod = await call(api_nc, "apply", POD)
    assert code == 201
    assert (pod["spec"]["serviceAccountName"], pod["spec"]["serviceAccount"]) == ("default", "default")
    code, again = await call(api_nc, "apply", POD)
    assert code == 200 and again["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]

    code, sa = await call(api_nc, "apply", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"},
        "imagePullSecrets": [{"name": "registry"}], "automountServiceAccountToken": False,
    })
    assert code == 201 and sa["imagePullSecrets"] == [{"name": "registry"}]
    named = {**POD, "metadata": {"name": "q"}, "spec": {**POD["spec"], "serviceAccountName": "builder"}}
    code, pod = await call(api_nc, "apply", named)
    assert code == 201 and pod["spec"]["serviceAccount"] == "builder"
    # only the deprecated field set: it names the account
    old = {**POD, "metadata": {"name": "r"}, "spec": {**POD["spec"], "serviceAccount": "builder"}}
    code, pod = await call(api_nc, "apply", old)
    assert code == 201 and pod["spec"]["serviceAccountName"] == "builder"


async def test_a_bad_service_account_is_refused_naming_the_field(api_nc):
    code, status = await call(api_nc, "apply", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}, "secrets": "none",
    })
    assert code == 422 and [d["field"] for d in status["details"]] == ["secrets"], status
    code, _ = await call(api_nc, "get", {"kind": "sa", "namespace": "default", "name": "x"})
    assert code == 404


async def test_a_pod_written_by_a_controller_gets_the_default_too(nats_url):
    nc = await nats.connect(nats_url)
    try:
        store = Store(nc.jetstream())
        await store.ensure_buckets()
        pod = msgspec.convert({**POD, "metadata": {"name": "made", "namespace": "default"}}, Pod)
        assert pod.spec.serviceAccountName == ""
        created = await store.create(pod)
        assert created.spec.serviceAccountName == "default"
        assert (await store.get("Pod", "default", "made")).spec.serviceAccount == "default"
    finally:
        await nc.close()


def test_defaulting_keeps_what_is_named():
    pod = msgspec.convert(POD, Pod)
    assert with_service_account(pod).spec.serviceAccountName == "default"
    named = with_service_account(msgspec.structs.replace(
        pod, spec=msgspec.structs.replace(pod.spec, serviceAccountName="a", serviceAccount="b")))
    assert (named.spec.serviceAccountName, named.spec.serviceAccount) == ("a", "a")
    done = with_service_account(pod)
    assert with_service_account(done) is done


def test_kyb_get_shows_kubectls_columns():
    sa = {"kind": "ServiceAccount", "metadata": {"name": "builder", "creationTimestamp": "2026-01-01T00:00:00Z"},
          "secrets": [{"name": "s"}]}
    head, rows = table("ServiceAccount", [sa], _dt.datetime(2026, 1, 2, tzinfo=_dt.UTC))
    assert head == ["NAME", "SECRETS", "AGE"]
    assert rows == [["builder", "1", "24h"]]
