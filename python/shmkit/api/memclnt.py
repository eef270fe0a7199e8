"""VPP's memclnt messages (client registration, keepalive, ping), with VPP's message ids."""

from __future__ import annotations

from shmkit.api.messages import array, boolean, define, i32, string, struct_type, u16, u32, vla

__all__ = [
    "BUILTIN_IDS",
    "TABLE_TOO_BIG",
    "UNSPECIFIED",
    "ControlPing",
    "ControlPingReply",
    "GetFirstMsgId",
    "GetFirstMsgIdReply",
    "MemclntCreate",
    "MemclntCreateReply",
    "MemclntDelete",
    "MemclntDeleteReply",
    "MemclntKeepalive",
    "MemclntKeepaliveReply",
    "MessageTableEntry",
]

MemclntCreate = define(
    "memclnt_create",
    [
        ("ctx_quota", i32),
        ("pid", u32),
        ("input_queue", string(96)),  # the client's queue, by object name in the region
        ("name", string(64)),
        ("api_versions", array(u32, 8)),
        ("keepalive", boolean),
    ],
)
MessageTableEntry = struct_type("message_table_entry", [("index", u16), ("name", string(64))])
MemclntCreateReply = define(
    "memclnt_create_reply",
    [
        ("response", i32),
        ("handle", u32),
        ("index", u32),
        ("server_pid", u32),
        ("count", u16),
        ("message_table", vla(MessageTableEntry, "count")),
    ],
)
MemclntDelete = define("memclnt_delete", [("index", u32), ("handle", u32), ("do_cleanup", boolean)])
MemclntDeleteReply = define("memclnt_delete_reply", [("response", i32), ("handle", u32)])
MemclntKeepalive = define("memclnt_keepalive")
MemclntKeepaliveReply = define("memclnt_keepalive_reply", [("retval", i32)])
ControlPing = define("control_ping")
ControlPingReply = define(
    "control_ping_reply", [("retval", i32), ("client_index_reply", u32), ("vpe_pid", u32)]
)
GetFirstMsgId = define("get_first_msg_id", [("name", string(64))])
GetFirstMsgIdReply = define("get_first_msg_id_reply", [("retval", i32), ("first_msg_id", u16)])

#: ``memclnt_create_reply.response`` when every client slot is taken (VPP's
#: ``VNET_API_ERROR_TABLE_TOO_BIG``).
TABLE_TOO_BIG = -99
#: ``retval`` of the error reply a server sends when a handler fails (VPP's
#: ``VNET_API_ERROR_UNSPECIFIED``).
UNSPECIFIED = -1

#: VPP's fixed ids for the memclnt module.
BUILTIN_IDS = {
    MemclntCreate: 1,
    MemclntCreateReply: 2,
    MemclntDelete: 3,
    MemclntDeleteReply: 4,
    GetFirstMsgId: 10,
    GetFirstMsgIdReply: 11,
    MemclntKeepalive: 21,
    MemclntKeepaliveReply: 22,
    ControlPing: 23,
    ControlPingReply: 24,
}
