"""The CNI client: the pure protocol parts, and ADD/DEL/CHECK against Debian's plugins inside
network namespaces the test creates (the bridge lives in a test "host" namespace, never in the
machine's own)."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import pytest

from services.kubelet.cni.plugin import CniRunner
from services.kubelet.cni.spec import (
    CniError,
    ConfigError,
    RuntimeConf,
    config_files,
    load_config_dir,
    parse_config,
    parse_error,
    parse_result,
    plugin_env,
    plugin_input,
)
from tests.netns import Namespaces, ipam_allocations, netns  # noqa: F401 (fixture)

# -- pure ------------------------------------------------------------------------------------


def test_config_files_are_tried_in_lexical_order() -> None:
    names = ["99-last.conflist", "10-b.conf", "10-a.json", "README", ".hidden.conf", "05-x.conflist.bak"]
    assert config_files(names) == ["10-a.json", "10-b.conf", "99-last.conflist"]


def test_load_config_dir_takes_the_first_file(tmp_path) -> None:
    (tmp_path / "20-second.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "second", "plugins": [{"type": "bridge"}]}))
    (tmp_path / "10-first.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "first", "type": "ptp"}))
    net = load_config_dir(tmp_path)
    assert net is not None and net.name == "first" and net.types == ["ptp"] and net.cni_version == "0.4.0"
    assert "cniVersion" not in net.plugins[0] and "name" not in net.plugins[0]
    assert load_config_dir(tmp_path / "missing") is None


@pytest.mark.parametrize(
    "doc, problem",
    [
        pytest.param("{", "not JSON", id="not-json"),
        pytest.param('{"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}', "missing 'name'", id="no-name"),
        pytest.param('{"name": "n", "plugins": [{"type": "bridge"}]}', "missing 'cniVersion'", id="no-version"),
        pytest.param('{"cniVersion": "1.0.0", "name": "n", "plugins": []}', "non-empty", id="no-plugins"),
        pytest.param('{"cniVersion": "1.0.0", "name": "n", "plugins": [{}]}', "has no 'type'", id="no-type"),
        pytest.param('{"cniVersion": "1.0.0", "name": "n"}', "neither", id="neither"),
    ],
)
def test_bad_configs_are_config_errors(doc: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        parse_config(doc, "x.conflist")
    assert info.value.code == 7


def test_plugin_input_carries_name_version_prev_result_and_only_declared_capabilities() -> None:
    net = parse_config(json.dumps({"cniVersion": "1.0.0", "name": "pods", "plugins": [
        {"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    rt = RuntimeConf("c1", "/run/netns/x", capabilities={"portMappings": [{"hostPort": 80}], "bandwidth": {}})
    first = json.loads(plugin_input(net, net.plugins[0], rt, None))
    assert first == {"type": "bridge", "cniVersion": "1.0.0", "name": "pods"}
    second = json.loads(plugin_input(net, net.plugins[1], rt, {"cniVersion": "1.0.0", "ips": []}))
    assert second["prevResult"] == {"cniVersion": "1.0.0", "ips": []}
    assert second["runtimeConfig"] == {"portMappings": [{"hostPort": 80}]}
    env = plugin_env("DEL", RuntimeConf("c1", "", "eth1", args=(("K8S_POD_NAME", "p"),)), ["/a", "/b"], {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_NETNS": "",
                   "CNI_IFNAME": "eth1", "CNI_PATH": "/a:/b", "CNI_ARGS": "K8S_POD_NAME=p"}


def test_results_of_every_version_give_the_pod_ips() -> None:
    v1 = parse_result(json.dumps({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2},
                {"address": "fd00::5/64", "interface": 2}, {"address": "10.9.9.9/24", "interface": 0}],
    }))
    assert v1.pod_ips() == ["10.244.1.5", "fd00::5"]
    legacy = parse_result(json.dumps({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.7/16", "gateway": "10.1.0.1"}}))
    assert legacy.pod_ips() == ["10.1.0.7"]


def test_errors_are_the_plugins_error_object_or_its_stderr() -> None:
    e = parse_error(b'{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"retry"}', b"", 1,
                    plugin="bridge", command="ADD")
    assert (e.code, e.msg, e.details) == (11, "busy", "retry")
    assert str(e) == "plugin bridge ADD failed: busy (retry)"
    e = parse_error(b"garbage", b"panic: nil map\n", 2, plugin="x", command="DEL")
    assert e.code == 999 and e.msg == "panic: nil map"


# -- real plugins in test namespaces ---------------------------------------------------------

FAILING = """#!/bin/sh
cat >/dev/null
echo '{"cniVersion": "1.0.0", "code": 7, "msg": "kyb test plugin refuses", "details": "on purpose"}'
exit 1
"""


def bridge_list(name: str, subnet: str, data_dir: str, *extra: dict) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": "kybt0", "isGateway": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": data_dir,
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            *extra,
        ],
    }


def write_conf(conf_dir, doc: dict, file: str = "10-test.conflist") -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / file).write_text(json.dumps(doc))


async def test_add_check_del_on_real_plugins(netns: Namespaces, tmp_path) -> None:  # noqa: F811
    host = netns.add("host")
    pod = netns.add("pod")
    write_conf(tmp_path / "net.d", bridge_list("kybtest", "10.250.7.0/24", str(tmp_path / "ipam"),
                                               {"type": "portmap", "capabilities": {"portMappings": True}}))
    runner = CniRunner(tmp_path / "net.d", cache_dir=tmp_path / "cache", host_netns=netns.path(host))
    rt = RuntimeConf("kyb-pod-1", netns.path(pod), capabilities={
        "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]})
    result = await runner.add(rt)
    [ip] = result.pod_ips()
    assert ip.startswith("10.250.7.")
    assert ip in netns.addresses(pod)
    assert ipam_allocations(str(tmp_path / "ipam"), "kybtest") == [ip]
    # the host side reaches the pod through the bridge
    await asyncio.to_thread(netns.exec, host, "ip", "route", "get", ip)
    assert "18080" in netns.exec(host, "iptables-save", "-t", "nat").stdout  # portmap's DNAT
    assert runner.cached(rt) is not None
    # CHECK of the bridge alone (portmap 1.1.1's CHECK wants ip6tables chains it never made)
    bridge_only = parse_config(json.dumps(bridge_list("kybtest", "10.250.7.0/24", str(tmp_path / "ipam"))))
    other = RuntimeConf("kyb-pod-1b", netns.path(netns.add("pod-b")))
    await runner.add(other, bridge_only)
    await runner.check(other, bridge_only)
    await runner.delete(other, bridge_only)
    await runner.delete(rt)
    assert ipam_allocations(str(tmp_path / "ipam"), "kybtest") == []
    assert runner.cached(rt) is None
    assert "eth0" not in netns.exec(pod, "ip", "-br", "link").stdout
    await runner.delete(rt)  # idempotent
    await runner.delete(RuntimeConf("kyb-never-added", ""))  # never added: nothing to do


async def test_a_failing_plugin_raises_its_error_and_leaks_nothing(netns: Namespaces, tmp_path) -> None:  # noqa: F811
    host = netns.add("host")
    pod = netns.add("pod")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    refuse = plugins / "kybrefuse"
    refuse.write_text(FAILING)
    refuse.chmod(refuse.stat().st_mode | stat.S_IXUSR)
    write_conf(tmp_path / "net.d", bridge_list("kybtest", "10.250.8.0/24", str(tmp_path / "ipam"),
                                               {"type": "kybrefuse"}))
    runner = CniRunner(tmp_path / "net.d", plugin_dirs=[str(plugins), "/usr/lib/cni", "/opt/cni/bin"],
                       cache_dir=tmp_path / "cache", host_netns=netns.path(host))
    rt = RuntimeConf("kyb-pod-2", netns.path(pod))
    with pytest.raises(CniError) as info:
        await runner.add(rt)
    assert (info.value.code, info.value.msg, info.value.details) == (7, "kyb test plugin refuses", "on purpose")
    assert info.value.plugin == "kybrefuse" and info.value.command == "ADD"
    assert ipam_allocations(str(tmp_path / "ipam"), "kybtest") == []  # the bridge's ADD was undone
    assert runner.cached(rt) is None
    write_conf(tmp_path / "net.d", {"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "kybmissing"}]})
    with pytest.raises(CniError, match='failed to find plugin "kybmissing"'):
        await runner.add(rt)


async def test_host_local_store_is_empty_after_100_adds_and_dels(netns: Namespaces, tmp_path) -> None:  # noqa: F811
    host = netns.add("host")
    pods = [netns.add(f"p{i}") for i in range(100)]
    data_dir = str(tmp_path / "ipam")
    write_conf(tmp_path / "net.d", bridge_list("kybtest", "10.250.9.0/24", data_dir))
    runner = CniRunner(tmp_path / "net.d", cache_dir=tmp_path / "cache", host_netns=netns.path(host))
    limit = asyncio.Semaphore(8)

    async def add(i: int) -> str:
        async with limit:
            return (await runner.add(RuntimeConf(f"kyb-c{i}", netns.path(pods[i])))).pod_ips()[0]

    ips = await asyncio.gather(*(add(i) for i in range(100)))
    assert len(set(ips)) == 100
    assert len(ipam_allocations(data_dir, "kybtest")) == 100

    async def delete(i: int) -> None:
        async with limit:
            await runner.delete(RuntimeConf(f"kyb-c{i}", netns.path(pods[i])))

    await asyncio.gather(*(delete(i) for i in range(100)))
    assert ipam_allocations(data_dir, "kybtest") == []
    assert os.listdir(tmp_path / "cache") == []
