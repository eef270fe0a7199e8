"""The TypedDicts of shmkit.stats name exactly the keys the native calls return."""

from __future__ import annotations

import os
import shutil
import tempfile
import typing

import shmkit
import shmkit.netmap
from shmkit import stats
from shmkit.memif import Interface


def keys(td: type) -> set[str]:
    return set(typing.get_type_hints(td))


def test_stats_dicts_match_their_typeddicts(root: str) -> None:
    r = shmkit.Region.create("st", 4 << 20, root=root)
    try:
        q = shmkit.Queue.create(r, "q", 4, 8)
        assert set(q.stats()) == keys(stats.QueueStats)
        assert set(q.repair()) == keys(stats.QueueRepair)
        assert set(r.stats()) == keys(stats.RegionStats)
        assert set(r.check()) == keys(stats.HeapCheck)
        mq = shmkit.MsgQueue.create(r, "mq", 4)
        assert set(mq.stats()) == keys(stats.MsgQueueStats)
        assert set(mq.stats()["rings"][0]) == keys(stats.MsgQueueRingStats)
        assert set(mq.gc()) == keys(stats.MsgQueueGc)
        assert set(mq.repair()) == keys(stats.MsgQueueRepair)
        port = shmkit.netmap.open("pipe{st", root=root)
        assert set(port.stats()) == keys(stats.NetmapStats)
        port.close()
    finally:
        r.unlink()
        r.close()


def test_memif_details_match_their_typeddict() -> None:
    d = tempfile.mkdtemp(prefix="shmkit-st-")
    try:
        with Interface(os.path.join(d, "s.sock"), role="server") as m:
            assert set(m.details()) == keys(stats.MemifDetails)
            assert set(m.stats()) == keys(stats.MemifStats)
            assert set(m.stats()["tx"]) == keys(stats.MemifQueueStats)
    finally:
        shutil.rmtree(d, ignore_errors=True)
