"""VPP's memclnt module: every message with VPP's name, layout, CRC and message id.

The definitions are those of VPP's ``memclnt.api`` (as ``vpp_papi`` ships it in
``data/memclnt.api.json``, version 2.1.0); their ids are VPP's too (the order of the file,
from 1: ``memclnt_create`` 1 ... ``get_api_json_reply`` 28), so a message table built by
shmkit matches VPP's for these messages and stock VPP clients find them where they expect.

shmkit's clients register over shared memory with these messages too
(``memclnt_create_v2``: the ``input_queue`` offset names the client's queue object in the API
region; the reply's ``message_table`` is the offset of a table object,
:mod:`shmkit.api.msgtable`; ``memclnt_delete`` names the client by handle and index).
"""

from __future__ import annotations

from shmkit.api.messages import (
    BARE,
    REPLY,
    Message,
    array,
    boolean,
    define,
    i32,
    string,
    struct_type,
    u8,
    u16,
    u32,
    u64,
    vla,
)

__all__ = [
    "BUILTIN_IDS",
    "MEMCLNT_VERSION",
    "SERVICES",
    "TABLE_TOO_BIG",
    "UNSPECIFIED",
    "VPP_IDS",
    "ApiVersions",
    "ApiVersionsReply",
    "ControlPing",
    "ControlPingReply",
    "GetApiJson",
    "GetApiJsonReply",
    "GetFirstMsgId",
    "GetFirstMsgIdReply",
    "MemclntCreate",
    "MemclntCreateReply",
    "MemclntCreateV2",
    "MemclntCreateV2Reply",
    "MemclntDelete",
    "MemclntDeleteReply",
    "MemclntKeepalive",
    "MemclntKeepaliveReply",
    "MemclntReadTimeout",
    "MemclntRxThreadSuspend",
    "MessageTableEntry",
    "ModuleVersion",
    "RpcCall",
    "RpcCallReply",
    "RxThreadExit",
    "SockInitShm",
    "SockInitShmReply",
    "SockclntCreate",
    "SockclntCreateReply",
    "SockclntDelete",
    "SockclntDeleteReply",
    "TracePluginMsgIds",
]

#: The version of VPP's memclnt.api.json (its ``options.version``, 2.1.0).
MEMCLNT_VERSION = (2, 1, 0)

_DEPRECATED = {"deprecated": None}

ModuleVersion = struct_type(
    "module_version", [("major", u32), ("minor", u32), ("patch", u32), ("name", string(64))]
)
MessageTableEntry = struct_type("message_table_entry", [("index", u16), ("name", string(64))])

MemclntCreate = define(
    "memclnt_create",
    [
        ("ctx_quota", i32),
        ("input_queue", u64),
        ("name", string(64)),
        ("api_versions", array(u32, 8)),
    ],
    header=REPLY,
    crc=0x9C5E1C2F,
    options=_DEPRECATED,
)
MemclntCreateReply = define(
    "memclnt_create_reply",
    [("response", i32), ("handle", u64), ("index", u32), ("message_table", u64)],
    header=REPLY,
    crc=0x42EC4560,
    options=_DEPRECATED,
)
MemclntDelete = define(
    "memclnt_delete",
    [("index", u32), ("handle", u64), ("do_cleanup", boolean)],
    header=BARE,
    crc=0x7E1C04E3,
)
MemclntDeleteReply = define(
    "memclnt_delete_reply", [("response", i32), ("handle", u64)], header=BARE, crc=0x3D3B6312
)
RxThreadExit = define("rx_thread_exit", [("dummy", u8)], header=BARE, crc=0xC3A3A452)
MemclntRxThreadSuspend = define(
    "memclnt_rx_thread_suspend", [("dummy", u8)], header=BARE, crc=0xC3A3A452
)
MemclntReadTimeout = define("memclnt_read_timeout", [("dummy", u8)], header=BARE, crc=0xC3A3A452)
RpcCall = define(
    "rpc_call",
    [
        ("function", u64),
        ("multicast", u8),
        ("need_barrier_sync", u8),
        ("send_reply", u8),
        ("data_len", u32),
        ("data", vla(u8, "data_len")),
    ],
    crc=0x7E8A2C95,
)
RpcCallReply = define("rpc_call_reply", [("retval", i32)], header=REPLY, crc=0xE8D4E804)
GetFirstMsgId = define("get_first_msg_id", [("name", string(64))], crc=0xEBF79A66)
GetFirstMsgIdReply = define(
    "get_first_msg_id_reply",
    [("retval", i32), ("first_msg_id", u16)],
    header=REPLY,
    crc=0x7D337472,
)
ApiVersions = define("api_versions", crc=0x51077D14)
ApiVersionsReply = define(
    "api_versions_reply",
    [("retval", i32), ("count", u32), ("api_versions", vla(ModuleVersion, "count"))],
    header=REPLY,
    crc=0x5F0D99D6,
)
TracePluginMsgIds = define(
    "trace_plugin_msg_ids",
    [("plugin_name", string(128)), ("first_msg_id", u16), ("last_msg_id", u16)],
    crc=0xF476D3CE,
)
SockclntCreate = define("sockclnt_create", [("name", string(64))], header=REPLY, crc=0x455FB9C4)
SockclntCreateReply = define(
    "sockclnt_create_reply",
    [
        ("response", i32),
        ("index", u32),
        ("count", u16),
        ("message_table", vla(MessageTableEntry, "count")),
    ],
    crc=0x35166268,
)
SockclntDelete = define("sockclnt_delete", [("index", u32)], crc=0x8AC76DB6)
SockclntDeleteReply = define(
    "sockclnt_delete_reply", [("response", i32)], header=REPLY, crc=0x8F38B1EE
)
SockInitShm = define(
    "sock_init_shm",
    [("requested_size", u32), ("nitems", u8), ("configs", vla(u64, "nitems"))],
    crc=0x51646D92,
)
SockInitShmReply = define("sock_init_shm_reply", [("retval", i32)], header=REPLY, crc=0xE8D4E804)
MemclntKeepalive = define("memclnt_keepalive", crc=0x51077D14)
MemclntKeepaliveReply = define(
    "memclnt_keepalive_reply", [("retval", i32)], header=REPLY, crc=0xE8D4E804
)
ControlPing = define("control_ping", crc=0x51077D14)
ControlPingReply = define(
    "control_ping_reply",
    [("retval", i32), ("client_index", u32), ("vpe_pid", u32)],
    header=REPLY,
    crc=0xF6B0B8CA,
)
MemclntCreateV2 = define(
    "memclnt_create_v2",
    [
        ("ctx_quota", i32),
        ("input_queue", u64),
        ("name", string(64)),
        ("api_versions", array(u32, 8)),
        ("keepalive", boolean, {"default": "true"}),
    ],
    header=REPLY,
    crc=0xC4BD4882,
)
MemclntCreateV2Reply = define(
    "memclnt_create_v2_reply",
    [("response", i32), ("handle", u64), ("index", u32), ("message_table", u64)],
    header=REPLY,
    crc=0x42EC4560,
)
GetApiJson = define("get_api_json", crc=0x51077D14)
GetApiJsonReply = define(
    "get_api_json_reply", [("retval", i32), ("json", string())], header=REPLY, crc=0xEA715B59
)

#: VPP's memclnt messages with VPP's ids (the order of memclnt.api.json, from 1).
VPP_IDS: dict[type[Message], int] = {
    t: i
    for i, t in enumerate(
        (
            MemclntCreate,
            MemclntCreateReply,
            MemclntDelete,
            MemclntDeleteReply,
            RxThreadExit,
            MemclntRxThreadSuspend,
            MemclntReadTimeout,
            RpcCall,
            RpcCallReply,
            GetFirstMsgId,
            GetFirstMsgIdReply,
            ApiVersions,
            ApiVersionsReply,
            TracePluginMsgIds,
            SockclntCreate,
            SockclntCreateReply,
            SockclntDelete,
            SockclntDeleteReply,
            SockInitShm,
            SockInitShmReply,
            MemclntKeepalive,
            MemclntKeepaliveReply,
            ControlPing,
            ControlPingReply,
            MemclntCreateV2,
            MemclntCreateV2Reply,
            GetApiJson,
            GetApiJsonReply,
        ),
        start=1,
    )
}

#: Every message of the memclnt module, with its id (VPP's).
BUILTIN_IDS: dict[type[Message], int] = dict(VPP_IDS)

#: The services of the memclnt module (request -> reply, as memclnt.api.json lists them;
#: "null": no reply).
SERVICES: dict[str, dict[str, str]] = {
    "memclnt_rx_thread_suspend": {"reply": "null"},
    "memclnt_read_timeout": {"reply": "null"},
    "rx_thread_exit": {"reply": "null"},
    "trace_plugin_msg_ids": {"reply": "null"},
    **{
        t._name: {"reply": t._name + "_reply"}
        for t in (
            MemclntCreate,
            MemclntDelete,
            RpcCall,
            GetFirstMsgId,
            ApiVersions,
            SockclntCreate,
            SockclntDelete,
            SockInitShm,
            MemclntKeepalive,
            ControlPing,
            MemclntCreateV2,
            GetApiJson,
        )
    },
}

#: ``*_create_reply.response`` when every client slot is taken (VPP's
#: ``VNET_API_ERROR_TABLE_TOO_BIG``).
TABLE_TOO_BIG = -99
#: ``retval`` of the error reply a server sends when a handler fails (VPP's
#: ``VNET_API_ERROR_UNSPECIFIED``).
UNSPECIFIED = -1
