"""kyb.nftables against the real kernel, inside a network namespace the test made: the
long-lived libnftables context and the ``nft -f`` fallback apply the same scripts, a refused
script applies nothing and says why, and the context follows changes others make."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from kyb.nftables import Nftables, NftError
from tests.netns import Namespaces, netns  # noqa: F401 (fixture)

TABLE = """add table ip kybt
add set ip kybt addrs { type ipv4_addr; }
add chain ip kybt input { type filter hook input priority 0; policy accept; }
add rule ip kybt input ip saddr @addrs counter drop
add element ip kybt addrs { 10.1.0.1 }
"""


@pytest.fixture
def nft_ns(netns: Namespaces) -> str:  # noqa: F811
    if shutil.which("nft") is None:
        pytest.fail("nft is not installed (nftables)")
    return netns.add("nft")


@pytest.mark.parametrize("library", [True, False], ids=["libnftables", "nft-binary"])
async def test_scripts_apply_atomically_and_errors_name_the_line(netns: Namespaces, nft_ns: str,  # noqa: F811
                                                                   library: bool) -> None:
    nft = Nftables(netns.path(nft_ns), library=library)
    assert nft.in_process is library
    try:
        await nft.run(TABLE)
        listed = netns.exec(nft_ns, "nft", "list", "set", "ip", "kybt", "addrs").stdout
        assert "10.1.0.1" in listed
        # one good command, then a chain that does not exist: nothing of the script is applied
        with pytest.raises(NftError, match="nosuch"):
            await nft.run("add element ip kybt addrs { 10.1.0.2 }\nadd rule ip kybt nosuch counter\n")
        assert "10.1.0.2" not in netns.exec(nft_ns, "nft", "list", "set", "ip", "kybt", "addrs").stdout
        # `list` output comes back to the caller
        assert "10.1.0.1" in await nft.run("list set ip kybt addrs\n")
    finally:
        nft.close()
    # the table is in the test's namespace only, not in the namespace this process runs in
    assert subprocess.run(["nft", "list", "table", "ip", "kybt"], capture_output=True).returncode != 0


async def test_the_context_sees_what_others_changed(netns: Namespaces, nft_ns: str) -> None:  # noqa: F811
    nft = Nftables(netns.path(nft_ns))
    try:
        await nft.run(TABLE)
        netns.exec(nft_ns, "nft", "add", "chain", "ip", "kybt", "made-elsewhere")
        await nft.run("add rule ip kybt made-elsewhere counter\n")  # its cache must know the chain
        netns.exec(nft_ns, "nft", "delete", "table", "ip", "kybt")
        with pytest.raises(NftError):
            await nft.run("add element ip kybt addrs { 10.1.0.3 }\n")
        await nft.run(TABLE)  # and a table made again from nothing
    finally:
        nft.close()
