"""Repeated dicts through ``put_obj``/``get_obj``: each side keeps the shapes of the dicts it
met, with their short immutable values, and writes or builds a dict like one before from
them (``rust/src/py/objcodec``). With real processes: every dict arrives exactly as sent
while its values stay, change, change back or change in place; mutable values are never
shared between the dicts received; a shape is not reused at another depth; and a hostile
message shaped like a known dict is still checked whole."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import shmkit
from test_objects_native import NATIVE, echoed, same

MAX_DEPTH = 64
LIST, DICT, STR, TUPLE, INT = 0x09, 0x0A, 0x05, 0x08, 0x03


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("repeated", 64 << 20, root=root)
    yield r
    r.unlink()
    r.close()


def reading(i: int) -> dict[str, Any]:
    return {
        "seq": i,
        "name": "sensor-7",
        "value": 21.5,
        "unit": "C",
        "ok": True,
        "tags": ("a", "b"),
        "raw": b"\x00\x01",
        "source": None,
    }


def test_dicts_arrive_exactly_as_their_values_stay_change_and_change_back(
    region: shmkit.Region,
) -> None:
    objs: list[Any] = [reading(i) for i in range(30)]
    # most values new each time: the shapes learn these, then the first ones come back
    objs += [
        {**reading(i), "name": f"s{i}", "value": i / 3, "tags": ("a", str(i)), "ok": i % 2 == 0}
        for i in range(30)
    ]
    objs += [reading(i) for i in range(10)]
    # the same keys as other objects (made at run time), in another order, fewer, more
    objs.append({"".join(["se", "q"]): 1, "name".upper().lower(): "sensor-7", "value": 21.5})
    objs.append(dict(reversed(list(reading(2).items()))))
    objs.append({k: v for k, v in reading(3).items() if k != "unit"})
    objs.append({**reading(4), "extra": [1, 2]})
    # the same keys with values of other types, mutable ones among them
    objs.append(
        {"seq": "one", "name": None, "value": [1], "unit": {"x": 1}, "ok": bytearray(b"b")}
        | {"tags": ((1, 2), tuple("xy")), "raw": 2**63 - 1, "source": -0.0}
    )
    objs += [reading(i) for i in range(3)]
    # dicts of this shape nested in one another and in a list
    objs.append({"seq": 0, "name": reading(1), "value": [reading(2), reading(2)]})
    for o, g in zip(objs, echoed(region, objs)):
        assert same(o, g), f"{o!r:.100} came back as {g!r:.100}"


def test_a_value_changed_in_place_is_sent_as_it_is_now(region: shmkit.Region) -> None:
    """The sender reuses what it wrote for a value only if it is the same immutable object:
    a list, a dict, a bytearray, or a tuple holding one, changed between two puts of the
    same dict, arrives changed."""
    q = shmkit.MsgQueue.create(region, "q", 64)
    inner, held = [1], [2]
    d: dict[str, Any] = {
        "list": inner,
        "tuple": (held, "x"),
        "bytes": bytearray(b"ab"),
        "dict": {"k": 0},
        "str": "constant",
        "int": 7,
    }
    sent = []
    q.put_obj(d)
    assert q.get()[0] == NATIVE  # no container in it twice: it goes natively
    for i in range(10):
        q.put_obj(d)
        sent.append(copy.deepcopy(d))
        inner.append(i)
        held.append(i)
        d["bytes"].append(i)
        d["dict"]["k"] = i
        if i % 3 == 0:
            d["int"] = i  # another object now and then
    for s in sent:
        assert same(s, q.get_obj())


def test_mutable_values_are_never_shared_between_the_dicts_received(
    region: shmkit.Region,
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 64)
    for _ in range(8):
        q.put_obj({"l": [1, 2], "d": {"a": 1}, "b": bytearray(b"x"), "t": (1, "a"), "s": "s"})
    got = [q.get_obj() for _ in range(8)]
    for a, b in zip(got, got[1:]):
        assert a is not b
        for k in ("l", "d", "b"):
            assert a[k] is not b[k]
    got[0]["l"].append(3)
    got[0]["d"]["z"] = 0
    got[0]["b"].append(1)
    got[1]["s"] = "changed"
    for g in got[2:]:
        assert g == {"l": [1, 2], "d": {"a": 1}, "b": bytearray(b"x"), "t": (1, "a"), "s": "s"}
    # immutable values may be one object in several dicts, as short strings and small ints are
    assert got[-1]["t"] is got[-2]["t"]


def test_a_dict_written_before_is_walked_again_at_another_depth(region: shmkit.Region) -> None:
    """Its innermost tuple is at the deepest level the format carries in one message, and
    one level too deep in the next: the first goes natively, the second by pickle, and both
    arrive exactly (the bytes written for the dict at the first depth are not reused)."""
    q = shmkit.MsgQueue.create(region, "q", 64)
    d = {"a": (((1,),),), "b": 2}
    for levels in (MAX_DEPTH - 4, MAX_DEPTH - 3, MAX_DEPTH - 4, MAX_DEPTH - 3):
        obj: Any = d
        for _ in range(levels):
            obj = [obj]
        for _ in range(3):
            q.put_obj(obj)
            first = q.get()[0]
            assert first == (NATIVE if levels == MAX_DEPTH - 4 else 0x80), levels
            q.put_obj(obj)
            assert same(obj, q.get_obj())


def native(*body: int) -> bytes:
    return bytes([NATIVE, 1, *body])


def test_a_message_shaped_like_a_known_dict_is_still_checked_whole(
    region: shmkit.Region,
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 64)
    for _ in range(4):  # the receiver learns {"a": (1,)}: its value is read past from now on
        q.put_obj({"a": (1,)})
        assert q.get_obj() == {"a": (1,)}
    shaped = [DICT, 1, STR, 1, ord("a"), TUPLE, 1, INT, 2]
    q.put(native(*shaped))
    assert q.get_obj() == {"a": (1,)}
    # the same dict, with the known tuple one level deeper than the format allows
    q.put(native(*[LIST, 1] * (MAX_DEPTH - 1), *shaped))
    with pytest.raises(shmkit.CorruptionError, match="nested deeper"):
        q.get_obj()
    # one level less is fine
    q.put(native(*[LIST, 1] * (MAX_DEPTH - 2), *shaped))
    got = q.get_obj()
    for _ in range(MAX_DEPTH - 2):
        (got,) = got
    assert got == {"a": (1,)}
    # cut inside the known value, or followed by more
    for bad in (shaped[:-1], shaped[:-2], [*shaped, 0]):
        q.put(native(*bad))
        with pytest.raises(shmkit.CorruptionError):
            q.get_obj()
    # the known bytes under another key, and a count that claims more items than there are
    q.put(native(DICT, 2, STR, 1, ord("a"), TUPLE, 1, INT, 2))
    with pytest.raises(shmkit.CorruptionError):
        q.get_obj()
    q.put(native(DICT, 1, STR, 1, ord("b"), TUPLE, 1, INT, 2))
    assert q.get_obj() == {"b": (1,)}
    q.put_obj({"a": (1,)})
    assert q.get_obj() == {"a": (1,)}
    assert q.stats()["in_use"] == 0


def test_kept_items_in_a_row_are_read_past_together_and_checked_where_they_sit(
    region: shmkit.Region,
) -> None:
    """The receiver compares the kept items that follow one another (a nested tuple among
    them) with the message at once: a change anywhere in the row, a value of another length,
    and the row one level deeper than the format allows are each caught. Dicts with holes
    left by deleted keys are walked as they are."""

    def d(**changes: Any) -> dict[str, Any]:
        return {"seq": 0, "a": (1, ("x",)), "b": 2, "c": "text", "d": None, **changes}

    changes: list[dict[str, Any]] = [{}, {"seq": 5}, {"a": (1, ("y",))}, {"a": (1, "x")}]
    changes += [{"b": 3}, {"b": 300_000}, {"c": "texts"}, {"c": "t"}, {"d": 0}]
    changes += [{"seq": 1, "d": 1.5}, {"b": [2]}, {}]
    holes = d(seq=9)
    for k in ("b", "c"):
        del holes[k]
    holes["c"] = "moved"
    many = {f"k{i}": i for i in range(40)}
    for i in range(0, 40, 3):
        del many[f"k{i}"]
    objs = [d() for _ in range(6)] + [d(**c) for c in changes] + [holes, many, d()]
    for o, g in zip(objs, echoed(region, objs)):
        assert same(o, g), f"{o!r:.100} came back as {g!r:.100}"
    # the row's bytes at the deepest level they fit, then one deeper
    q = shmkit.MsgQueue.create(region, "q", 64)
    for _ in range(6):
        q.put_obj(d())
        assert same(q.get_obj(), d())
    q.put_obj(d())
    body = list(q.get()[2:])
    # the dict inside k lists: its tuples open at k + 1 and k + 2
    for k, fits in ((MAX_DEPTH - 3, True), (MAX_DEPTH - 2, False), (MAX_DEPTH - 3, True)):
        q.put(native(*[LIST, 1] * k, *body))
        if not fits:
            with pytest.raises(shmkit.CorruptionError, match="nested deeper"):
                q.get_obj()
            continue
        got = q.get_obj()
        for _ in range(k):
            (got,) = got
        assert same(got, d())
    q.put_obj(d(seq=3))
    assert same(q.get_obj(), d(seq=3))
    assert q.stats()["in_use"] == 0
