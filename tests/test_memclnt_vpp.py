"""The shared-memory registration on VPP's layouts, by hand: memclnt_create (v1 and v2) with
the queue's offset, the message table object the reply points at, memclnt_delete by handle and
index; a damaged table object is rewritten; hostile offsets are refused."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import shmkit
from shmkit._native import ApiPort
from shmkit.api import Client, Server, msgtable
from shmkit.api import memclnt as mc
from shmkit.api.messages import Message
from shmkit.api.takeover import CLIENT_QUEUE_PREFIX
from shmkit.errors import CorruptionError


@pytest.fixture
def server(root: str) -> Iterator[Server]:
    s = Server("api", root=root)
    s.start()
    yield s
    s.close()
    s.region.unlink()


def recv_one(port: ApiPort, queue: shmkit.Queue, cls: type[Message]) -> Message:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for data in port.recv(queue, 16, 0.05):
            if data[0] << 8 | data[1] == mc.VPP_IDS[cls]:
                return cls.decode(data)
    raise TimeoutError(f"no {cls._name}")


@pytest.mark.parametrize("create", [mc.MemclntCreate, mc.MemclntCreateV2])
def test_register_by_hand(server: Server, root: str, create: type[Message]) -> None:
    region = shmkit.Region.open("api", root=root)
    port = ApiPort(shmkit.MsgRings.open(region, "api/rings"))
    inp = shmkit.Queue.open(region, "api/input")
    name = f"{CLIENT_QUEUE_PREFIX}{os.getpid()}-byhand"
    queue = shmkit.Queue.create(region, name, 64, 8)
    try:
        offset = region.find_object(name)["offset"]
        req = create(input_queue=offset, name="by-hand", context=41)
        assert port.send(inp, req.encode(mc.VPP_IDS[create]), "client", server.pid)
        reply_type = (
            mc.MemclntCreateV2Reply if create is mc.MemclntCreateV2 else mc.MemclntCreateReply
        )
        reply = recv_one(port, queue, reply_type)
        assert (reply.response, reply.context) == (0, 41)  # type: ignore[attr-defined]
        table = msgtable.read(region, reply.message_table)  # type: ignore[attr-defined]
        assert table[mc.ControlPing.name_crc()] == 23
        assert table == {n: i for i, n in server.message_table().items()}
        (info,) = [c for c in server.clients if c.name == "by-hand"]
        assert info.pid == os.getpid() and int(info.handle) == reply.handle  # type: ignore[attr-defined]
        # A delete naming the wrong index is a missing client; the right one is answered.
        handle = reply.handle  # type: ignore[attr-defined]
        bad = mc.MemclntDelete(index=reply.index + 1, handle=handle)  # type: ignore[attr-defined]
        assert port.send(inp, bad.encode(3), "client", server.pid)
        good = mc.MemclntDelete(index=reply.index, handle=handle, do_cleanup=True)  # type: ignore[attr-defined]
        assert port.send(inp, good.encode(3), "client", server.pid)
        done = recv_one(port, queue, mc.MemclntDeleteReply)
        assert (done.response, done.handle) == (0, handle)  # type: ignore[attr-defined]
        assert not [c for c in server.clients if c.name == "by-hand"]
        assert server.counters()["missing_clients"] >= 1
    finally:
        queue.close()
        region.remove_object(name)
        region.close()


def test_message_table_object_is_checked_and_repaired(server: Server, root: str) -> None:
    with Client.connect("api", "first", root=root) as c:
        assert c.message_table[mc.GetApiJson.name_crc()] == 27
    region = shmkit.Region.open("api", root=root)
    try:
        (obj,) = [o for o in region.objects() if o["name"].startswith(msgtable.PREFIX)]
        region.write(obj["offset"] + 10, b"garbage")  # a peer damages it
        with pytest.raises(CorruptionError, match="checksum"):
            msgtable.read(region, obj["offset"])
        with pytest.raises(CorruptionError, match="no table object"):
            msgtable.read(region, region.find_object("api/input")["offset"])
        with Client.connect("api", "second", root=root) as c:  # the server wrote it again
            assert c.ping() > 0
        assert msgtable.decode(msgtable.encode({5: "x_1"})) == {"x_1": 5}
    finally:
        region.close()


def test_hostile_create_offsets(server: Server, root: str) -> None:
    region = shmkit.Region.open("api", root=root)
    port = ApiPort(shmkit.MsgRings.open(region, "api/rings"))
    inp = shmkit.Queue.open(region, "api/input")
    try:
        before = server.counters()["invalid_messages"]
        offsets = [0, 1, 1 << 63, region.find_object("api/input")["offset"], 2**64 - 1]
        for off in offsets:
            req = mc.MemclntCreateV2(input_queue=off, name="evil", context=1)
            assert port.send(inp, req.encode(25), "client", server.pid)
        with Client.connect("api", "after", root=root) as c:
            assert c.ping() > 0
        assert server.counters()["invalid_messages"] - before == len(offsets)
        assert server.counters()["registrations"] == 1
    finally:
        region.close()
