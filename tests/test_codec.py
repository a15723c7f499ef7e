"""The grader side of the wire codec, with no process: what a student process may send back is plain data or an
InvalidResult, never anything else, however the reply is forged."""

from __future__ import annotations

import numpy as np
import pytest

from autograder.sandbox.codec import Handle, _Decoder, _encode_arg
from autograder.sandbox.errors import InvalidResult, StudentError

OWNER = object()


def decode(value, buffers=()):
    payload = memoryview(b"".join(buffers))
    return _Decoder({"buffers": [len(b) for b in buffers]}, payload, OWNER, 1).value(value)


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
        _Decoder({"buffers": [8]}, memoryview(b"x" * 4), OWNER, 1)


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
