"""The wire codec, grader side: arguments encoded for the student process, and replies decoded from untrusted
JSON and bytes into plain data (arrays, numbers, strings, tuples and lists) or Handles; nothing is unpickled.
Unit-testable without any process."""

from __future__ import annotations

from typing import Any

import numpy as np

from autograder.sandbox.student import wire
from autograder.sandbox.errors import InvalidResult, StudentError
from autograder.sandbox.policy import MAX_NDIM, MAX_STR, MAX_TEXT, MAX_TYPE_NAME


class Handle:
    """An object that stays in the student process (a cache, an odd return value); pass it back to `call`."""

    __slots__ = ("type_name", "id", "_owner", "_generation")

    def __init__(self, type_name: str, id: int, owner: object, generation: int):
        self.type_name = type_name  # reported by the child: untrusted text
        self.id = id
        self._owner = owner  # the sandbox's identity token (not the Sandbox: a Handle must not keep it alive)
        self._generation = generation

    def __repr__(self) -> str:
        return f"<Handle #{self.id} to a student object of type {self.type_name!r}>"


def _encode_arg(value: Any, buffers: list[bytes], owner: object, generation: int, depth: int = 0) -> Any:
    """Request arguments: plain data and Handles of this sandbox's current process."""
    if depth > wire.MAX_DEPTH:
        raise ValueError("arguments are nested too deeply")
    if isinstance(value, Handle):
        if value._owner is not owner:
            raise ValueError(f"{value!r} belongs to a different sandbox")
        if value._generation != generation:
            raise StudentError(f"the student object {value.type_name!r} was lost when the student process was "
                               f"restarted (after an earlier timeout or crash)")
        return {"t": "h", "id": value.id}
    if value is None or type(value) in (bool, str):
        return value
    if isinstance(value, np.ndarray):
        dtype = _wire_dtype(value.dtype)
        buffers.append(np.ascontiguousarray(value, dtype=dtype).tobytes())
        return {"t": "nd", "dtype": dtype.str, "shape": list(value.shape), "b": len(buffers) - 1}
    if isinstance(value, np.generic):
        dtype = _wire_dtype(value.dtype)
        buffers.append(np.asarray(value, dtype=dtype).tobytes())
        return {"t": "sc", "dtype": dtype.str, "b": len(buffers) - 1}
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (tuple, list)):
        return {"t": "tuple" if isinstance(value, tuple) else "list",
                "v": [_encode_arg(v, buffers, owner, generation, depth + 1) for v in value]}
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            raise TypeError("dicts passed to student code must have str keys")
        return {"t": "dict", "v": [[k, _encode_arg(v, buffers, owner, generation, depth + 1)]
                                   for k, v in value.items()]}
    raise TypeError(f"cannot pass a {type(value).__name__} to student code")


def _wire_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind in "biuf" and dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype.str not in wire.DTYPES:
        raise TypeError(f"cannot pass arrays of dtype {dtype} to student code")
    return dtype


class _Decoder:
    """Rebuilds a reply value from untrusted JSON and bytes; anything unexpected is InvalidResult."""

    def __init__(self, header: dict, payload: memoryview, owner: object, generation: int):
        sizes = header.get("buffers")
        if type(sizes) is not list or not all(type(n) is int and n >= 0 for n in sizes) \
                or sum(sizes) != len(payload):
            raise InvalidResult("the reply's buffer table does not match its payload")
        self.buffers, offset = [], 0
        for n in sizes:
            self.buffers.append(payload[offset:offset + n])
            offset += n
        self.owner = owner
        self.generation = generation

    def value(self, node: Any) -> Any:
        try:
            return self._value(node, 0)
        except InvalidResult:
            raise
        except (TypeError, ValueError, OverflowError, MemoryError, RecursionError) as exc:  # e.g. absurd shapes
            raise InvalidResult(f"malformed value in the reply ({type(exc).__name__})") from None

    def _value(self, node: Any, depth: int) -> Any:
        if depth > wire.MAX_DEPTH:
            raise InvalidResult("the result is nested too deeply")
        t = type(node)
        if node is None or t is bool or t is int or t is float:
            return node
        if t is str:
            if len(node) > MAX_STR:
                raise InvalidResult("the result holds an overlong string")
            return node
        if t is not dict:
            raise InvalidResult(f"unexpected {t.__name__} in the reply")
        tag = node.get("t")
        if tag in ("tuple", "list") and node.keys() == {"t", "v"} and type(node["v"]) is list:
            items = [self._value(v, depth + 1) for v in node["v"]]
            return tuple(items) if tag == "tuple" else items
        if tag == "nd" and node.keys() == {"t", "dtype", "shape", "b"}:
            shape = node["shape"]
            if type(shape) is not list or len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
                raise InvalidResult("bad array shape in the reply")
            dtype, data = self._dtype_and_buffer(node)
            count = 1
            for d in shape:
                count *= d
            if count * dtype.itemsize != len(data):
                raise InvalidResult("array bytes do not match the array's shape")
            # A fresh, writable array owned by this process.
            return np.frombuffer(data, dtype=dtype, count=count).reshape(shape).copy() if count \
                else np.empty(shape, dtype=dtype)
        if tag == "sc" and node.keys() == {"t", "dtype", "b"}:
            dtype, data = self._dtype_and_buffer(node)
            if len(data) != dtype.itemsize:
                raise InvalidResult("scalar bytes do not match its dtype")
            return np.frombuffer(data, dtype=dtype, count=1)[0]
        if tag == "h" and node.keys() == {"t", "id", "type"} and type(node["id"]) is int \
                and type(node["type"]) is str:
            return Handle(node["type"][:MAX_TYPE_NAME], node["id"], self.owner, self.generation)
        raise InvalidResult("malformed value in the reply")

    def _dtype_and_buffer(self, node: dict) -> tuple[np.dtype, memoryview]:
        if type(node["dtype"]) is not str or node["dtype"] not in wire.DTYPES:
            raise InvalidResult(f"dtype {str(node['dtype'])[:20]!r} is not allowed in a reply")
        index = node["b"]
        if type(index) is not int or not 0 <= index < len(self.buffers):
            raise InvalidResult("bad buffer reference in the reply")
        return np.dtype(node["dtype"]), self.buffers[index]


def _cap_text(value: Any, cap: int = MAX_TEXT) -> str:
    text = value if type(value) is str else ""
    return text if len(text) <= cap else text[:cap] + " [...]"


def _seconds(t: float) -> str:
    return f"{t:g} s"
