"""CNI, the pure part: network configuration lists, what a plugin is given, what it answers.

Spec 1.0 (containernetworking/cni SPEC.md). A network configuration list names the network
and its chain of plugins; the runtime execs each plugin with the operation in ``CNI_COMMAND``
(ADD, DEL, CHECK), the container in ``CNI_CONTAINERID``/``CNI_NETNS``/``CNI_IFNAME`` and the
plugin's own configuration on stdin, to which it adds the list's ``cniVersion`` and ``name``,
the ``runtimeConfig`` of the capabilities the plugin declares, and for every plugin after the
first the result of the one before (``prevResult``). ADD runs the chain in order, DEL in
reverse (with the cached ADD result as ``prevResult``), CHECK in order. A plugin answers a
result on stdout, or fails with a non-zero exit and an error object ``{code, msg, details}``.

The configuration comes from a directory: the first ``.conflist``, ``.conf`` or ``.json`` by
lexical name, as the kubelet and containerd pick it; a single-plugin ``.conf`` is a list of one.
No I/O beyond reading a directory here; ``plugin.py`` runs the plugins.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Command = Literal["ADD", "DEL", "CHECK", "VERSION"]
CONFIG_EXTENSIONS = (".conflist", ".conf", ".json")
DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
SPEC_VERSION = "1.0.0"

# Well-known error codes of the spec (1-99 are reserved for it).
ERROR_CODES = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid necessary environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
}


class CniError(Exception):
    """A plugin failed: its error object, or what went wrong running it."""

    def __init__(self, code: int, msg: str, details: str = "", *, plugin: str = "", command: str = "") -> None:
        self.code = code
        self.msg = msg
        self.details = details
        self.plugin = plugin
        self.command = command
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f"plugin {self.plugin} " if self.plugin else ""
        head = f"{where}{self.command} failed" if self.command else f"{where}failed" if where else ""
        text = f"{head}: {self.msg}" if head and self.msg else head or self.msg
        return f"{text} ({self.details})" if self.details else text


class ConfigError(CniError):
    """No usable network configuration (code 7, invalid network config)."""

    def __init__(self, msg: str) -> None:
        super().__init__(7, msg)


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]
    disable_check: bool = False
    source: str = ""  # the file it came from

    @property
    def types(self) -> list[str]:
        return [str(p["type"]) for p in self.plugins]


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""


@dataclass(frozen=True)
class IPConfig:
    address: str  # CIDR notation, e.g. 10.244.1.5/24
    gateway: str = ""
    interface: int | None = None

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)


@dataclass(frozen=True)
class Result:
    """What ADD answered (the last plugin's result), in the 1.0 shape."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Mapping[str, Any], ...] = ()
    dns: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def pod_ips(self) -> list[str]:
        """The addresses inside the container (on an interface with a sandbox, or on no named
        interface), IPv4 first."""
        chosen = [
            ip.ip
            for ip in self.ips
            if ip.interface is None or ip.interface >= len(self.interfaces) or self.interfaces[ip.interface].sandbox
        ]
        return sorted(dict.fromkeys(chosen), key=lambda a: ipaddress.ip_address(a).version)


# -- configuration ----------------------------------------------------------------------------


def parse_config(data: bytes | str, source: str = "") -> NetworkConfigList:
    """A ``.conflist``, or a single-plugin ``.conf`` (a list of one), checked for what the
    runtime needs: a name, a version and plugins with a type."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise ConfigError(f"{source or 'network configuration'}: not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{source or 'network configuration'}: not a JSON object")
    where = source or "network configuration"
    if "plugins" in doc:
        plugins = doc["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise ConfigError(f"{where}: 'plugins' must be a non-empty list")
    elif "type" in doc:
        plugins = [{k: v for k, v in doc.items() if k not in ("cniVersion", "name")}]
    else:
        raise ConfigError(f"{where}: neither 'plugins' nor 'type'")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: missing 'name'")
    version = doc.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise ConfigError(f"{where}: missing 'cniVersion'")
    for i, p in enumerate(plugins):
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
            raise ConfigError(f"{where}: plugins[{i}] has no 'type'")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=tuple(plugins),
        disable_check=bool(doc.get("disableCheck", False)),
        source=source,
    )


def config_files(names: Iterable[str]) -> list[str]:
    """The configuration file names among ``names``, in the order they are tried (lexical)."""
    return sorted(n for n in names if n.endswith(CONFIG_EXTENSIONS) and not n.startswith("."))


def load_config_dir(conf_dir: str | os.PathLike[str]) -> NetworkConfigList | None:
    """The first network configuration of ``conf_dir`` by lexical name, None when it has none.
    A file that does not parse is an error (the kubelet reports it rather than skip it)."""
    path = Path(conf_dir)
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return None
    for name in config_files(names):
        file = path / name
        if file.is_file():
            return parse_config(file.read_bytes(), str(file))
    return None


def find_plugin(plugin_type: str, dirs: Iterable[str]) -> str | None:
    """The executable of ``plugin_type`` in the first of ``dirs`` that has it."""
    if "/" in plugin_type or plugin_type in ("", ".", ".."):
        return None
    for d in dirs:
        candidate = os.path.join(d, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# -- what a plugin is given -------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeConf:
    """The container side of a call."""

    container_id: str
    netns: str  # path of the network namespace; may be "" for DEL of a namespace that is gone
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()  # CNI_ARGS, e.g. K8S_POD_NAME
    capabilities: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"portMappings": [...]}


def plugin_env(command: Command, rt: RuntimeConf, plugin_dirs: Iterable[str], base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=rt.container_id,
        CNI_NETNS=rt.netns,
        CNI_IFNAME=rt.ifname,
        CNI_PATH=os.pathsep.join(plugin_dirs),
    )
    if rt.args:
        env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in rt.args)
    return env


def plugin_input(
    net: NetworkConfigList, plugin: Mapping[str, Any], rt: RuntimeConf, prev_result: Mapping[str, Any] | None
) -> bytes:
    """The configuration one plugin of the chain reads on stdin."""
    conf = dict(plugin)
    conf["cniVersion"] = net.cni_version
    conf["name"] = net.name
    wanted = plugin.get("capabilities") or {}
    runtime_config = {k: v for k, v in rt.capabilities.items() if wanted.get(k)}
    if runtime_config:
        conf["runtimeConfig"] = runtime_config
    else:
        conf.pop("runtimeConfig", None)
    if prev_result is not None:
        conf["prevResult"] = dict(prev_result)
    else:
        conf.pop("prevResult", None)
    return json.dumps(conf).encode()


# -- what a plugin answers --------------------------------------------------------------------


def parse_error(stdout: bytes, stderr: bytes, returncode: int, *, plugin: str, command: str) -> CniError:
    """The error object a failed plugin printed, or one made from its exit and stderr."""
    try:
        doc = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and ("code" in doc or "msg" in doc):
        try:
            code = int(doc.get("code") or 0)
        except (TypeError, ValueError):
            code = 0
        return CniError(code, str(doc.get("msg") or ""), str(doc.get("details") or ""), plugin=plugin, command=command)
    text = (stderr or stdout).decode(errors="replace").strip()
    return CniError(999, text or f"exited with code {returncode}", plugin=plugin, command=command)


def parse_result(data: bytes | str | Mapping[str, Any]) -> Result:
    """A result of any spec version: 1.0 and 0.3/0.4 (``ips``), or 0.1/0.2 (``ip4``/``ip6``)."""
    doc: Any = data if isinstance(data, Mapping) else json.loads(data or b"{}")
    if not isinstance(doc, Mapping):
        raise CniError(6, "result is not a JSON object")
    interfaces = tuple(
        Interface(name=str(i.get("name", "")), mac=str(i.get("mac", "")), sandbox=str(i.get("sandbox", "")))
        for i in doc.get("interfaces") or ()
    )
    ips: list[IPConfig] = []
    for ip in doc.get("ips") or ():
        iface = ip.get("interface")
        ips.append(IPConfig(address=str(ip["address"]), gateway=str(ip.get("gateway", "")),
                            interface=int(iface) if iface is not None else None))
    for legacy in ("ip4", "ip6"):
        block = doc.get(legacy)
        if isinstance(block, Mapping) and block.get("ip"):
            ips.append(IPConfig(address=str(block["ip"]), gateway=str(block.get("gateway", ""))))
    return Result(
        cni_version=str(doc.get("cniVersion", "")),
        interfaces=interfaces,
        ips=tuple(ips),
        routes=tuple(doc.get("routes") or ()),
        dns=dict(doc.get("dns") or {}),
        raw=dict(doc),
    )
