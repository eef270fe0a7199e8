"""Module versions: a server states each module's version (``register(module=, version=)``),
``api_versions`` reports them, and a client checks the ones it was written for
(``Client.connect(..., require=...)``, VPP's semantic versioning: same major, minor at least)
over either transport."""

from __future__ import annotations

import os
import tempfile

import pytest
from procs import wait_until
from shmkit import VersionMismatchError
from shmkit.api import Client, Server, memclnt
from shmkit.api.messages import define, u32

Get = define("ver_get", [("x", u32)])
GetReply = define("ver_get_reply", [("retval", u32), ("x", u32)])


@pytest.fixture
def server(root: str):  # type: ignore[no-untyped-def]
    sock = os.path.join(tempfile.mkdtemp(prefix="shmkit-ver-"), "api.sock")
    s = Server("ver", root=root, region_size=8 << 20, socket=sock)
    s.register(Get, GetReply, module="ver", version=(2, 3, 1))
    s.start()
    try:
        yield s, sock
    finally:
        s.close()
        s.region.unlink()
        os.rmdir(os.path.dirname(sock))


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_required_versions_are_checked(server, root: str, transport: str) -> None:  # type: ignore[no-untyped-def]
    s, sock = server
    where = {"root": root} if transport == "shm" else {"socket": sock}
    with Client.connect("ver", "ok", require={"ver": (2, 1), "memclnt": (2, 1)}, **where) as c:
        versions = c.api_versions()
        assert versions["ver"] == (2, 3, 1)
        assert versions["memclnt"] == memclnt.MEMCLNT_VERSION
    wait_until(lambda: not s.clients, what="the first client deregistered")
    for need, why in (
        ({"ver": (2, 4)}, "ver is 2.3.1, not 2.4+"),
        ({"ver": (1, 0)}, "ver is 2.3.1, not 1.0+"),
        ({"nothing": (1, 0)}, "nothing is not served"),
    ):
        with pytest.raises(VersionMismatchError, match=why):
            Client.connect("ver", "old", require=need, **where)
    # A refused client deregistered: the server is left with no client.
    wait_until(lambda: not s.clients, what="refused clients deregistered")


def test_a_module_version_is_stated_once(server) -> None:  # type: ignore[no-untyped-def]
    s, _ = server
    s.register(Get, module="ver", version=(2, 3, 1))  # the same again: fine
    with pytest.raises(ValueError, match="is version"):
        s.register(Get, module="ver", version=(3, 0, 0))
    with pytest.raises(ValueError, match="give module="):
        s.register(Get, version=(1, 0, 0))
    with pytest.raises(ValueError, match="major, minor, patch"):
        s.register(Get, module="other", version=(1, 0))  # type: ignore[arg-type]
