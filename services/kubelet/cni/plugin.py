"""CNI, the exec part: runs a network configuration list's plugins for one container.

ADD runs the chain in order, each plugin given the result of the one before; the last result
is cached (``<cache_dir>/<network>-<container id>-<ifname>.json``, with the configuration it
was made with), so DEL hands the plugins what ADD made, runs them in reverse and only then
forgets it. DEL is idempotent: every plugin is asked even when one fails, and a container
that was never added (nothing cached, no configuration) is nothing to do. CHECK runs the chain
in order against the cached result. See ``spec.py`` for the protocol itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.kubelet.cni.spec import (
    DEFAULT_CONF_DIR,
    DEFAULT_PLUGIN_DIRS,
    CniError,
    Command,
    ConfigError,
    NetworkConfigList,
    Result,
    RuntimeConf,
    find_plugin,
    load_config_dir,
    parse_config,
    parse_error,
    parse_result,
    plugin_env,
    plugin_input,
)

DEFAULT_CACHE_DIR = "/var/lib/cni/kyb-results"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class CniRunner:
    """Runs CNI plugins from ``plugin_dirs`` with the configuration of ``conf_dir``."""

    def __init__(
        self,
        conf_dir: str | os.PathLike[str] = DEFAULT_CONF_DIR,
        plugin_dirs: Iterable[str] = DEFAULT_PLUGIN_DIRS,
        cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
        *,
        timeout: float = 60.0,  # one plugin call taking longer fails (code 11, try again later)
        network: NetworkConfigList | None = None,  # a fixed configuration instead of conf_dir's
        host_netns: str | None = None,  # run the plugins in this network namespace (nsenter), not ours
    ) -> None:
        self.host_netns = host_netns
        self.conf_dir = Path(conf_dir)
        self.plugin_dirs = tuple(plugin_dirs)
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self._network = network
        self._env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}

    def network(self) -> NetworkConfigList:
        """The configuration in effect (re-read on every call, as the kubelet does)."""
        if self._network is not None:
            return self._network
        net = load_config_dir(self.conf_dir)
        if net is None:
            raise ConfigError(f"no network configuration in {self.conf_dir}")
        return net

    # -- the cache of ADD results ---------------------------------------------------------

    def _cache_path(self, net_name: str, rt: RuntimeConf) -> Path:
        return self.cache_dir / _SAFE.sub("_", f"{net_name}-{rt.container_id}-{rt.ifname}.json")

    def cached(self, rt: RuntimeConf, net_name: str | None = None) -> tuple[NetworkConfigList, Result] | None:
        """The configuration and result of the last ADD of this container (to the network
        ``net_name``, or to any), if cached."""
        pattern = "*" + _SAFE.sub("_", f"-{rt.container_id}-{rt.ifname}.json")
        if net_name:
            pattern = _SAFE.sub("_", net_name) + pattern[1:]
        for path in sorted(self.cache_dir.glob(pattern)):
            with contextlib.suppress(FileNotFoundError, KeyError, ValueError, CniError):
                doc = json.loads(path.read_bytes())
                if doc.get("containerId") == rt.container_id and doc.get("ifName") == rt.ifname:
                    return parse_config(json.dumps(doc["config"]), str(path)), parse_result(doc["result"])
        return None

    def _store(self, net: NetworkConfigList, rt: RuntimeConf, result: Result) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        config = {"cniVersion": net.cni_version, "name": net.name, "plugins": list(net.plugins)}
        doc = {"containerId": rt.container_id, "ifName": rt.ifname, "config": config, "result": dict(result.raw)}
        path = self._cache_path(net.name, rt)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)

    # -- operations -----------------------------------------------------------------------

    async def add(self, rt: RuntimeConf, net: NetworkConfigList | None = None) -> Result:
        """ADD the container to the network; the last plugin's result. On a failure the
        plugins that ran are undone (DEL), so nothing stays allocated."""
        net = net or self.network()
        prev: dict[str, Any] | None = None
        try:
            for plugin in net.plugins:
                prev = await self._call("ADD", net, plugin, rt, prev)
        except CniError:
            with contextlib.suppress(CniError):
                await self._delete_chain(net, rt, prev)
            raise
        result = parse_result(prev or {"cniVersion": net.cni_version})
        self._store(net, rt, result)
        return result

    async def delete(self, rt: RuntimeConf, net: NetworkConfigList | None = None) -> None:
        """DEL the container from the network (idempotent). The configuration and result of
        its ADD come from the cache; without them, the configuration in effect is used."""
        cached = self.cached(rt, net.name if net is not None else None)
        prev: dict[str, Any] | None = None
        if cached is not None:
            net = net or cached[0]
            prev = dict(cached[1].raw)
        elif net is None:
            try:
                net = self.network()
            except ConfigError:
                return  # never added and nothing configured: nothing to undo
        await self._delete_chain(net, rt, prev)
        self._cache_path(net.name, rt).unlink(missing_ok=True)

    async def check(self, rt: RuntimeConf, net: NetworkConfigList | None = None) -> None:
        """CHECK that the container's networking is as ADD left it (CniError otherwise)."""
        net = net or self.network()
        if net.disable_check:
            return
        cached = self.cached(rt, net.name)
        if cached is None:
            raise CniError(3, f"container {rt.container_id} has no cached result in network {net.name}", command="CHECK")
        prev: dict[str, Any] | None = dict(cached[1].raw)
        for plugin in net.plugins:
            await self._call("CHECK", net, plugin, rt, prev)

    async def _delete_chain(self, net: NetworkConfigList, rt: RuntimeConf, prev: dict[str, Any] | None) -> None:
        first: CniError | None = None
        for plugin in reversed(net.plugins):
            try:
                await self._call("DEL", net, plugin, rt, prev)
            except CniError as e:
                first = first or e
        if first is not None:
            raise first

    async def _call(
        self, command: Command, net: NetworkConfigList, plugin: Any, rt: RuntimeConf, prev: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        kind = str(plugin["type"])
        path = find_plugin(kind, self.plugin_dirs)
        if path is None:
            raise CniError(5, f'failed to find plugin "{kind}" in path {list(self.plugin_dirs)}',
                           plugin=kind, command=command)
        stdin = plugin_input(net, plugin, rt, prev)
        env = plugin_env(command, rt, self.plugin_dirs, self._env)
        try:
            argv = ["nsenter", f"--net={self.host_netns}", "--", path] if self.host_netns else [path]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env,
            )
        except OSError as e:
            raise CniError(5, f"cannot run {path}: {e.strerror}", plugin=kind, command=command) from e
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except TimeoutError as e:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise CniError(11, f"no answer within {self.timeout}s", plugin=kind, command=command) from e
        if proc.returncode != 0:
            raise parse_error(out, err, proc.returncode or 0, plugin=kind, command=command)
        if command != "ADD":
            return prev
        try:
            doc = json.loads(out) if out.strip() else None
        except ValueError as e:
            raise CniError(6, f"result is not JSON: {e}", plugin=kind, command=command) from e
        return doc if isinstance(doc, dict) else prev
