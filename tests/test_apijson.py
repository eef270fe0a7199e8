"""VPP's .api.json: shmkit's memclnt against vpp_papi's, load/export round trips, and the bytes
of every field kind checked both ways against stock vpp_papi's serializer."""

from __future__ import annotations

import enum
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from shmkit.api import Client, Server, apijson
from shmkit.api import memclnt as mc
from shmkit.api.messages import (
    BARE,
    REPLY,
    Message,
    MessageError,
    Union,
    alias,
    array,
    boolean,
    define,
    enum_type,
    enumflag_type,
    f64,
    i8,
    i16,
    i32,
    i64,
    string,
    struct_type,
    tail,
    u8,
    u16,
    u32,
    u64,
    union_type,
    vla,
)

SEED = int(os.environ.get("SHMKIT_SEED", random.randrange(1 << 32)))


def vpp_papi() -> Any:
    """The installed vpp_papi: an optional peer here, required in CI."""
    try:
        import vpp_papi
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("vpp_papi is required in CI (it is in the test extra)")
        pytest.skip("vpp_papi is not installed (pip install 'vpp_papi>=2.4,<3')")
    return vpp_papi


def memclnt_json() -> dict[str, Any]:
    path = Path(vpp_papi().__file__).parent / "data" / "memclnt.api.json"
    return dict(json.loads(path.read_text()))


# ---------------------------------------------------------------- memclnt


def test_memclnt_is_vpps() -> None:
    """Every memclnt message of VPP's file is shmkit's: same name, CRC, fields, id."""
    ref = memclnt_json()
    ours = {t._name: (t, i) for t, i in mc.VPP_IDS.items()}
    assert [m[0] for m in ref["messages"]] == list(ours)  # all of them, nothing more
    mine = {m[0]: m for m in apijson.export(mc.VPP_IDS, mc.SERVICES, "memclnt")["messages"]}
    for msg_id, m in enumerate(ref["messages"], start=1):
        t, i = ours[m[0]]
        assert i == msg_id, m[0]
        assert t.name_crc() == f"{m[0]}_{m[-1]['crc'][2:]}"
        assert mine[m[0]][:-1] == m[:-1], m[0]  # header fields, fields, options
        assert mine[m[0]][-1]["options"] == m[-1]["options"], m[0]
    exported = apijson.export(mc.VPP_IDS, mc.SERVICES, "memclnt", version=mc.MEMCLNT_VERSION)
    assert exported["types"] == ref["types"]
    assert exported["services"] == ref["services"]
    assert exported["options"] == ref["options"]


def test_loading_memclnt_gives_shmkits_classes() -> None:
    path = Path(vpp_papi().__file__).parent / "data" / "memclnt.api.json"
    mod = apijson.load(path)
    assert mod.name == "memclnt" and mod.version == mc.MEMCLNT_VERSION
    for t in mc.VPP_IDS:
        assert mod[t._name] is t
    fresh = apijson.load(path, reuse=False)
    for t in mc.VPP_IDS:
        f = fresh[t._name]
        assert f is not t and f.name_crc() == t.name_crc() and f._header == t._header
    ping = fresh["control_ping_reply"](retval=-3, client_index=7, vpe_pid=9, context=5)
    assert ping.encode(24) == mc.ControlPingReply(
        retval=-3, client_index=7, vpe_pid=9, context=5
    ).encode(24)
    assert fresh.services["control_ping"] == {"reply": "control_ping_reply"}


def test_header_kinds() -> None:
    ping = mc.ControlPingReply(retval=0, client_index=3, vpe_pid=4, context=0x01020304)
    assert mc.ControlPingReply._header == REPLY and mc.MemclntDelete._header == BARE
    data = ping.encode(24)
    assert data[:6] == bytes([0, 24, 1, 2, 3, 4]) and len(data) == 18
    back = mc.ControlPingReply.decode(data)
    assert (back.context, back.client_index) == (0x01020304, 3)
    delete = mc.MemclntDelete(index=1, handle=2, do_cleanup=True)
    assert delete.context == 0 and len(delete.encode(3)) == 2 + 4 + 8 + 1
    # Every header kind has the native codec (the server's native loop takes requests with
    # the default header only: it reads that header at fixed offsets).
    assert mc.ControlPing._codec is not None and mc.ControlPingReply._codec is not None
    assert mc.GetApiJsonReply._codec is not None and mc.MemclntDelete._codec is not None


# ---------------------------------------------------------------- every field kind

N = f"t{os.getpid()}_{random.randrange(1 << 30)}"  # vpp_papi's type table is process-wide
Color = enum_type(f"{N}_color", [("RED", 1), ("GREEN", 2), ("BLUE", 300)], u16)
Flags = enumflag_type(f"{N}_flags", [("A", 1), ("B", 2), ("C", 4)], u8)
Index = alias(f"{N}_index", u32)
Addr4 = alias(f"{N}_addr4", array(u8, 4))
Pair = struct_type(f"{N}_pair", [("a", i16), ("b", u8)])
Num = union_type(f"{N}_num", [("u", u64), ("pair", Pair), ("addr", Addr4)])
Route = struct_type(
    f"{N}_route", [("table", Index), ("n", u8), ("hops", vla(Pair, "n"))]
)  # a struct with a variable-length part, as VPP's ip_route
Everything = define(
    f"{N}_everything",
    [
        ("a", u8),
        ("b", u16),
        ("c", u32),
        ("d", u64),
        ("e", i8),
        ("f", i16),
        ("g", i32),
        ("h", i64),
        ("r", f64),
        ("flag", boolean),
        ("label", string(16)),
        ("mac", array(u8, 6)),
        ("fixed", array(u32, 3)),
        ("pairs", array(Pair, 2)),
        ("color", Color),
        ("flags", Flags),
        ("index", Index),
        ("addr", Addr4),
        ("num", Num),
        ("route", Route),
        ("n", u32),
        ("items", vla(Pair, "n")),
        ("nb", u16),
        ("blob", vla(u8, "nb")),
        ("text", string()),
    ],
)
Tailed = define(f"{N}_tailed", [("x", u32, {"default": 7}), ("rest", tail(u32))], header=REPLY)
Bare = define(f"{N}_bare", [("v", i32)], header=BARE)
Plain = define(f"{N}_plain", [("x", u32)])
TYPES = [Everything, Tailed, Bare, Plain]
SERVICES = {Plain._name: {"reply": Bare._name}, Everything._name: {"reply": Tailed._name}}


def everything(rng: random.Random) -> Message:
    def pair() -> Message:
        return Pair(a=rng.randint(-(2**15), 2**15 - 1), b=rng.randint(0, 255))

    items = [pair() for _ in range(rng.randint(0, 4))]
    hops = [pair() for _ in range(rng.randint(0, 3))]
    blob = rng.randbytes(rng.randint(0, 9))
    num = rng.choice(
        [Num(u=rng.randint(0, 2**64 - 1)), Num(pair=pair()), Num(addr=rng.randbytes(4)), Num()]
    )
    ascii_ = "abcdefghij"
    return Everything(
        a=rng.randint(0, 255),
        b=rng.randint(0, 2**16 - 1),
        c=rng.randint(0, 2**32 - 1),
        d=rng.randint(0, 2**64 - 1),
        e=rng.randint(-128, 127),
        f=rng.randint(-(2**15), 2**15 - 1),
        g=rng.randint(-(2**31), 2**31 - 1),
        h=rng.randint(-(2**63), 2**63 - 1),
        r=rng.uniform(-1e9, 1e9),
        flag=rng.random() < 0.5,
        label="".join(rng.choices(ascii_, k=rng.randint(0, 15))),  # vpp_papi keeps a NUL
        mac=rng.randbytes(6),
        fixed=[rng.randint(0, 2**32 - 1) for _ in range(3)],
        pairs=[pair(), pair()],
        color=rng.choice(list(Color.py)),
        flags=Flags.py(rng.randint(0, 7)),
        index=rng.randint(0, 2**32 - 1),
        addr=rng.randbytes(4),
        num=num,
        route=Route(table=rng.randint(0, 9), n=len(hops), hops=hops),
        n=len(items),
        items=items,
        nb=len(blob),
        blob=blob,
        text="".join(rng.choices(ascii_, k=rng.randint(1, 40))),
        client_index=rng.randint(0, 2**32 - 1),
        context=rng.randint(0, 2**32 - 1),
    )


def plain(v: Any) -> Any:
    """A value as nested builtins, for comparing shmkit's with vpp_papi's."""
    if isinstance(v, Message):
        return {n: plain(getattr(v, n)) for n, _ in v._fields}
    if isinstance(v, Union):
        return {n: plain(getattr(v, n)) for n, _ in v._members}
    if hasattr(v, "_asdict"):  # vpp_papi's namedtuples (_vl_msg_id is renamed _0)
        return {k: plain(x) for k, x in v._asdict().items() if k not in _HEADER and k[0] != "_"}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, enum.Enum):
        return int(v)
    return v


_HEADER = ("_vl_msg_id", "client_index", "context")


def as_papi(v: Any) -> Any:
    """A shmkit value as vpp_papi takes it (dicts; a union by the member it was built by)."""
    if isinstance(v, Message):
        return {n: as_papi(getattr(v, n)) for n, _ in v._fields}
    if isinstance(v, Union):
        return {"u": int.from_bytes(v._raw[:8], "big")}  # the same bytes, by the widest member
    if isinstance(v, list):
        return [as_papi(x) for x in v]
    if isinstance(v, enum.Enum):
        return int(v)
    return v


def test_export_load_round_trip() -> None:
    exported = apijson.export(TYPES, SERVICES, "things")
    again = apijson.load(exported)  # the same definitions give the same classes
    assert all(again[t._name] is t for t in TYPES)
    mod = apijson.load(apijson.dumps(exported), reuse=False)
    rng = random.Random(SEED)
    print("seed", SEED)
    for t in TYPES:
        loaded = mod[t._name]
        assert loaded is not t and loaded.name_crc() == t.name_crc()
        assert loaded._header == t._header
    for _ in range(30):
        msg = everything(rng)
        wire = msg.encode(300)
        back = mod[Everything._name].decode(wire)
        assert back.encode(300) == wire and plain(back) == plain(msg)
    assert mod[Tailed._name]().x == 7  # field options (a default) survive
    assert apijson.export([mod[t._name] for t in TYPES], mod.services, "things") == exported
    assert mod.services == SERVICES


def test_vpp_papi_reads_our_export_and_the_bytes_agree() -> None:
    papi = vpp_papi()
    from vpp_papi.vpp_papi import VPPApiJSONFiles

    rng = random.Random(SEED)
    print("seed", SEED)
    text = apijson.dumps([apijson.export(TYPES, SERVICES, "things")])
    messages, services = VPPApiJSONFiles.process_json_array_str(text)
    assert services == SERVICES
    ours = messages[Everything._name]
    assert ours.crc == f"0x{Everything._crc:08x}"
    for _ in range(40):
        msg = everything(rng)
        wire = msg.encode(321)
        # shmkit -> vpp_papi
        got, size = ours.unpack(wire)
        assert size == len(wire)
        assert (got[0], got.client_index, got.context) == (
            321,
            msg.client_index,
            msg.context,
        )
        assert plain(got) == plain(msg)
        # vpp_papi -> shmkit
        values = as_papi(msg)
        packed = ours.pack(
            {"_vl_msg_id": 321, "client_index": msg.client_index, "context": msg.context, **values}
        )
        assert bytes(packed) == wire
        assert Everything.decode(packed) == msg
    tailed = Tailed(x=5, rest=[1, 2, 3], context=9)
    got, _ = messages[Tailed._name].unpack(tailed.encode(7))
    assert (got.context, got.x, got.rest) == (9, 5, [1, 2, 3])
    assert messages[Bare._name].pack({"_vl_msg_id": 8, "v": -2}) == Bare(v=-2).encode(8)
    assert papi.VPPApiClient  # the client class the socket transport's tests use


def test_unions_and_enums() -> None:
    n = Num(pair=Pair(a=-2, b=3))
    assert n.pair == Pair(a=-2, b=3) and len(bytes(n)) == 8
    assert n.u == int.from_bytes(bytes(n), "big")
    n.addr = b"\x01\x02\x03\x04"
    assert n.addr == b"\x01\x02\x03\x04" and n == Num(addr=b"\x01\x02\x03\x04")
    with pytest.raises(TypeError):
        Num(u=1, addr=b"")
    with pytest.raises(TypeError):
        Num(nope=1)
    assert Color.RED == 1 and Color.py.BLUE == 300
    e = Everything.decode(Everything(color=300, flags=5).encode(1))
    assert e.color is Color.BLUE and e.flags == Flags.A | Flags.C
    unknown = Everything.decode(Everything(color=77).encode(1))
    assert unknown.color == 77  # a value the definition does not name stays an int
    with pytest.raises(MessageError, match="out of range"):
        Everything(color=70000).encode(1)


def test_a_file_and_the_file_it_imports(tmp_path: Path) -> None:
    """As VPP's: interface.api.json uses the aliases of interface_types.api.json."""
    types = {"aliases": {f"{N}_ifindex": {"type": "u32"}}, "enums": [], "types": []}
    msgs = {
        "messages": [
            [
                f"{N}_up",
                ["u16", "_vl_msg_id"],
                ["u32", "client_index"],
                ["u32", "context"],
                [f"vl_api_{N}_ifindex_t", "sw_if_index"],
                {"crc": "0x0badcafe"},
            ],
        ],
        "imports": ["vnet/interface_types.api"],
    }
    (tmp_path / "types.api.json").write_text(json.dumps(types))
    (tmp_path / "iface.api.json").write_text(json.dumps(msgs))
    with pytest.raises(ValueError, match="unknown type"):
        apijson.load(tmp_path / "iface.api.json")
    mod = apijson.load([tmp_path / "iface.api.json", tmp_path / "types.api.json"])
    assert mod.name == "iface" and mod[f"{N}_up"].name_crc() == f"{N}_up_0badcafe"
    assert mod[f"{N}_up"](sw_if_index=3).encode(1)[-4:] == b"\x00\x00\x00\x03"


def test_malformed_definitions_are_named() -> None:
    with pytest.raises(ValueError, match="unknown type 'vl_api_nope_t'"):
        apijson.load({"messages": [["m", ["u16", "_vl_msg_id"], ["vl_api_nope_t", "x"]]]})
    with pytest.raises(ValueError, match="no _vl_msg_id"):
        apijson.load({"messages": [["m", ["u32", "x"], {"crc": "0x1"}]]})
    with pytest.raises(ValueError, match="bad crc"):
        apijson.load({"messages": [["m", ["u16", "_vl_msg_id"], {"crc": "zz"}]]})
    with pytest.raises(ValueError, match="contains itself"):
        apijson.load({"types": [["loop", ["vl_api_loop_t", "x"]]]})
    with pytest.raises(ValueError, match="length field"):
        apijson.load({"messages": [["m", ["u16", "_vl_msg_id"], ["u8", "x", 0, "n"]]]})
    with pytest.raises(ValueError):
        apijson.load("[1, 2]")


def test_truncated_and_hostile_bytes() -> None:
    rng = random.Random(SEED)
    wire = everything(rng).encode(1)
    for cut in range(len(wire)):
        with pytest.raises(MessageError):
            Everything.decode(wire[:cut])
    # A count far beyond the bytes present is refused before anything is allocated.
    counted = define(f"{N}_counted", [("n", u32), ("xs", vla(u64, "n"))])
    wire = bytearray(counted(n=1, xs=[5]).encode(1))
    wire[10:14] = b"\xff\xff\xff\xff"
    with pytest.raises(MessageError, match="truncated"):
        counted.decode(bytes(wire))
    with pytest.raises(MessageError, match="whole number"):  # a ragged array-to-the-end
        Tailed.decode(b"\x00\x01" + b"\x00" * 4 + b"\x00\x00\x00\x01" + b"\x00")
    with pytest.raises(MessageError, match="truncated"):  # a string longer than the bytes
        mc.GetApiJsonReply.decode(b"\x00\x1c" + bytes(8) + b"\x00\x00\x01\x00" + b"{}")


# ---------------------------------------------------------------- from a server


def test_server_get_api_json_and_api_versions(root: str, tmp_path: Path) -> None:
    vpp_papi()
    from vpp_papi.vpp_papi import VPPApiJSONFiles

    server = Server("api", root=root)
    server.register(Everything, Tailed, module="things")

    @server.handle(Plain, reply=Bare)
    def plain_(msg: Message, client: object) -> Message:
        return Bare(v=1)

    server.start()
    try:
        with Client.connect("api", "c", root=root) as c:
            modules = c.api_json()
            versions = c.call(mc.ApiVersions())
        messages, services = VPPApiJSONFiles.process_json_array_str(json.dumps(modules))
        for t in (*mc.VPP_IDS, Everything, Tailed, Plain, Bare):
            assert messages[t._name].crc == f"0x{t._crc:08x}"
        assert services[Plain._name] == {"reply": Bare._name}
        assert services["control_ping"] == {"reply": "control_ping_reply"}
        loaded = apijson.load(modules)
        assert loaded[Everything._name].name_crc() == Everything.name_crc()
        by_name = {v.name: (v.major, v.minor, v.patch) for v in versions.api_versions}
        assert by_name["memclnt"] == (2, 1, 0) and by_name["things"] == (1, 0, 0)
        assert versions.count == len(versions.api_versions) and versions.retval == 0
        # the CLI: one module file, that vpp_papi's apifiles= and shmkit's load() read
        out = tmp_path / "api.api.json"
        cmd = ["shmkit.cli", "api", "json", "api", "--root", root, "-o", str(out)]
        subprocess.run([sys.executable, "-m", *cmd], check=True, timeout=60)
        module = json.loads(out.read_text())
        assert isinstance(module, dict)
        with out.open() as f:
            msgs, _ = VPPApiJSONFiles.process_json_file(f)
        assert msgs[Plain._name].crc == f"0x{Plain._crc:08x}"
        assert apijson.load(out)[Everything._name].name_crc() == Everything.name_crc()
    finally:
        server.close()
        server.region.unlink()
