"""The grader side of the wire codec, with no process: what a student process may send back is plain data or an
InvalidResult, never anything else, however the reply is forged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autograder.sandbox.codec import Handle, _Decoder, _encode_arg
from autograder.sandbox.errors import InvalidResult, StudentError
from autograder.sandbox.student import wire

OWNER = object()
MB = 2**20


def decode(value, buffers=(), budget=64 * MB):
    payload = memoryview(b"".join(buffers))
    return _Decoder({"buffers": [len(b) for b in buffers]}, payload, OWNER, 1, budget).value(value)


def test_plain_values_and_arrays_round_trip():
    data = np.arange(6, dtype="<f8").reshape(2, 3)
    got = decode({"t": "tuple", "v": [{"t": "nd", "dtype": "<f8", "shape": [2, 3], "b": 0}, 1.5, "s", None,
                                      {"t": "list", "v": [True, 3]}]}, [data.tobytes()])
    assert np.array_equal(got[0], data) and got[0].flags.writeable and got[1:] == (1.5, "s", None, [True, 3])
    handle = decode({"t": "h", "id": 7, "type": "Cache" * 100})
    assert isinstance(handle, Handle) and handle.id == 7 and len(handle.type_name) == 100


FORGED = {
    "bytes do not match the shape": ({"t": "nd", "dtype": "<f8", "shape": [1000], "b": 0}, [b"x" * 8]),
    "object dtype": ({"t": "nd", "dtype": "|O", "shape": [1], "b": 0}, [b"x" * 8]),
    "negative shape": ({"t": "nd", "dtype": "<f8", "shape": [-1], "b": 0}, [b"x" * 8]),
    "buffer out of range": ({"t": "nd", "dtype": "<f8", "shape": [1], "b": 5}, [b"x" * 8]),
    "bool as buffer index": ({"t": "nd", "dtype": "<f8", "shape": [1], "b": True}, [b"x" * 8]),
    "absurd shape": ({"t": "nd", "dtype": "<f8", "shape": [0, 10**30], "b": 0}, [b""]),
    "too many dimensions": ({"t": "nd", "dtype": "<f8", "shape": [1] * 33, "b": 0}, [b"x" * 8]),
    "unknown tag": ({"t": "pickle", "v": "gASVAAAAAAAAAAB9lC4="}, []),
    "extra keys": ({"t": "list", "v": [], "x": 1}, []),
    "bare dict": ({"a": 1}, []),
    "long string": ("x" * (2**20 + 1), []),
    "handle without type": ({"t": "h", "id": 1}, []),
    "scalar of the wrong size": ({"t": "sc", "dtype": "<f8", "b": 0}, [b"x" * 4]),
}


@pytest.mark.parametrize("how", list(FORGED))
def test_forged_values_are_invalid_results(how):
    value, buffers = FORGED[how]
    with pytest.raises(InvalidResult):
        decode(value, buffers)


def test_too_deep_and_buffer_table_mismatch():
    value = 1
    for _ in range(40):
        value = {"t": "tuple", "v": [value]}
    with pytest.raises(InvalidResult, match="nested too deeply"):
        decode(value)
    with pytest.raises(InvalidResult, match="buffer table"):
        _Decoder({"buffers": [8]}, memoryview(b"x" * 4), OWNER, 1, MB)


def test_arguments_carry_only_plain_data_and_this_sandbox_handles():
    buffers: list[bytes] = []
    encoded = _encode_arg((np.ones(2, dtype=">f8"), [1, "a"], {"k": None}), buffers, OWNER, 1)
    assert encoded["t"] == "tuple" and encoded["v"][0]["dtype"] == "<f8" and len(buffers) == 1
    with pytest.raises(TypeError):
        _encode_arg(object(), [], OWNER, 1)
    with pytest.raises(ValueError, match="different sandbox"):
        _encode_arg(Handle("C", 1, object(), 1), [], OWNER, 1)
    with pytest.raises(StudentError, match="lost when the student process was restarted"):
        _encode_arg(Handle("C", 1, OWNER, 1), [], OWNER, 2)


# ---- a reply decodes to at most what was sent

def _array_node(index, n_floats):
    return {"t": "nd", "dtype": "<f8", "shape": [n_floats], "b": index}


def test_a_buffer_named_twice_is_refused_before_any_copy(monkeypatch):
    monkeypatch.setattr(np, "frombuffer", lambda *a, **k: pytest.fail("built a value from a refused reply"))
    with pytest.raises(InvalidResult, match="names buffer 0 more than once"):
        decode({"t": "list", "v": [_array_node(0, 1000)] * 48}, [bytes(8000)])
    scalar = {"t": "sc", "dtype": "<f8", "b": 0}
    with pytest.raises(InvalidResult, match="more than once"):
        decode({"t": "tuple", "v": [scalar, scalar]}, [bytes(8)])


def test_a_buffer_its_value_does_not_use_is_refused():
    with pytest.raises(InvalidResult, match="1 buffer.* that its value does not use"):
        decode(_array_node(0, 1), [bytes(8), bytes(8)])
    with pytest.raises(InvalidResult, match="does not use"):
        decode(None, [b""])


OVER_BUDGET = {  # (items of a list, buffers, budget)
    "floats": ([1.5] * 2000, [], 1000),
    "big ints": ([2**64] * 200, [], 1000),  # 1 + 8 bytes each
    "None": ([None] * 2000, [], 1000),
    "numpy scalars": ([{"t": "sc", "dtype": "<f8", "b": i} for i in range(200)], [bytes(8)] * 200, 1000),
    "strings": (["x" * 99 for _ in range(20)], [], 1000),
    "handles' type names": ([{"t": "h", "id": i, "type": "T" * 99} for i in range(20)], [], 1000),
    "nested lists": ([{"t": "list", "v": [{"t": "tuple", "v": ["ab"] * 10}] * 10}] * 10, [], 1000),
    # a JSON parser that shared equal strings would hand the decoder one object many times: 100 MB of text
    "one string object named many times": (["x" * (MB // 2)] * 200, [], 64 * MB),
}


@pytest.mark.parametrize("how", list(OVER_BUDGET))
def test_many_small_nodes_over_the_budget_are_refused(how):
    items, buffers, budget = OVER_BUDGET[how]
    with pytest.raises(InvalidResult, match=f"decodes to more than {budget} bytes"):
        decode({"t": "list", "v": items}, buffers, budget)


def test_the_budget_counts_each_node_once_so_a_value_just_under_it_passes():
    assert decode({"t": "list", "v": [1.5] * 999}, budget=1000) == [1.5] * 999  # the list node and 999 floats
    with pytest.raises(InvalidResult, match="decodes to more than"):
        decode({"t": "list", "v": [1.5] * 1000}, budget=1000)
    data = np.arange(1000, dtype="<f8")
    assert np.array_equal(decode(_array_node(0, 1000), [data.tobytes()], budget=8001), data)
    with pytest.raises(InvalidResult, match="decodes to more than 8000"):
        decode(_array_node(0, 1000), [data.tobytes()], budget=8000)


class _Kept:
    pass


def _honest_reply(value):
    """What the honest worker sends for `value` (as Worker.send): the parsed header, the payload, the frame size."""
    encoder = wire._Encoder({})
    header = {"id": 1, "status": "ok", "value": encoder.node(value)}
    header["buffers"] = [len(b) for b in encoder.buffers]
    text = wire._json_bytes(header)
    return json.loads(text), memoryview(b"".join(encoder.buffers)), wire.FRAME_SIZE + len(text) + sum(header["buffers"])


@pytest.mark.parametrize("how", ["large array", "arrays of every dtype", "many small ints", "empty things",
                                 "strings and handles", "nested lists"])
def test_an_honest_reply_decodes_within_its_own_size(how):
    """The budget never refuses what the honest worker sends: its own frame size is enough."""
    value = {
        "large array": lambda: np.random.default_rng(0).standard_normal((1024, 1024)),  # 8 MB
        "arrays of every dtype": lambda: tuple(np.arange(5).astype(d) for d in sorted(wire.DTYPES))
        + tuple(np.arange(5).astype(d)[2] for d in sorted(wire.DTYPES)),
        "many small ints": lambda: list(range(10)) * 20_000,
        "empty things": lambda: ([], (), "", np.zeros((0, 3)), [[]] * 1000, [""] * 1000),
        "strings and handles": lambda: ["é" * 1000, "\U0001f600" * 100, _Kept(), [_Kept()] * 100, 2**1000],
        "nested lists": lambda: [[[[i, float(i), str(i)] for i in range(10)]] * 10] * 10,
    }[how]()
    header, payload, size = _honest_reply(value)
    _assert_same(_Decoder(header, payload, OWNER, 1, size).value(header["value"]), value)


def _assert_same(got, expected):
    if isinstance(expected, np.ndarray) or isinstance(expected, np.generic):
        assert type(got) is type(expected) and got.dtype == expected.dtype and np.array_equal(got, expected)
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected)
        for g, e in zip(got, expected):
            _assert_same(g, e)
    elif isinstance(expected, _Kept):
        assert isinstance(got, Handle) and got.type_name.endswith("_Kept")
    else:
        assert type(got) is type(expected) and got == expected


def test_a_large_honest_array_is_one_copy_of_its_buffer():
    data = np.random.default_rng(1).standard_normal(4 * MB // 8)
    got = decode(_array_node(0, data.size), [data.tobytes()], budget=4 * MB + 1)
    assert np.array_equal(got, data) and got.flags.writeable and got.flags.owndata
