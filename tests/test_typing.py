"""A user's script that defines API messages as classes and calls a server type-checks under
``mypy --strict`` (the package ships ``py.typed`` and stubs), and mypy really checks it: a
wrong type in the same script is reported."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Annotated

from shmkit.api.messages import Message, define, string, u32

USER_SCRIPT = """
from __future__ import annotations

from typing import Annotated

import shmkit
from shmkit.api import Client, Message
from shmkit.api.messages import REPLY, array, enum_type, i32, string, u8, u32, vla
from shmkit.stats import QueueStats


class Point(Message, name="point", struct=True):
    x: Annotated[int, u32]
    y: Annotated[int, u32]


class Plot(Message, name="plot"):
    n: Annotated[int, u32]
    points: Annotated[list[Point], vla(Point, "n")]
    label: Annotated[str, string(16)]


class PlotReply(Message, name="plot_reply"):
    retval: Annotated[int, u32]


Color = enum_type("color", [("RED", 1), ("GREEN", 2)])


class Paint(Message, name="paint"):
    color: Annotated[int, Color]
    label: Annotated[str, string()]
    mac: Annotated[bytes, array(u8, 6)]


class PaintReply(Message, name="paint_reply", header=REPLY, crc=0x1234ABCD):
    retval: Annotated[int, i32]


def paint(c: Client) -> int:
    reply = c.call(Paint(color=Color.GREEN, label="x", mac=b"abcdef"), reply=PaintReply)
    return reply.retval + len(c.api_json())


def plot(c: Client, points: list[Point]) -> int:
    reply = c.call(Plot(n=len(points), points=points, label="p"), reply=PlotReply)
    return reply.retval


def backlog(q: shmkit.Queue) -> int:
    s: QueueStats = q.stats()
    q.put(b"x", True, 0.5)
    got: bytes = q.get(False)
    return s["puts"] - s["gets"] + len(got)
"""


def mypy(tmp_path: pathlib.Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user.py"
    script.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )


def test_message_classes_type_check_under_mypy_strict(tmp_path: pathlib.Path) -> None:
    ok = mypy(tmp_path, USER_SCRIPT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = mypy(tmp_path, USER_SCRIPT + "\n\ndef wrong(r: PlotReply) -> str:\n    return r.retval\n")
    assert bad.returncode == 1 and "Incompatible return value type" in bad.stdout, bad.stdout


def test_message_classes_equal_define() -> None:
    class Greet(Message, name="greet"):
        n: Annotated[int, u32]
        who: Annotated[str, string(8)]

    same = define("greet", [("n", u32), ("who", string(8))])
    assert Greet.name_crc() == same.name_crc()
    assert Greet(n=1, who="a").encode(50) == same(n=1, who="a").encode(50)
    back = Greet.decode(same(n=7, who="bob").encode(50))
    assert isinstance(back, Greet) and (back.n, back.who) == (7, "bob")
