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
    """Rebuilds a reply value from untrusted JSON and bytes; anything unexpected is InvalidResult.

    A reply decodes to at most what was sent. Each buffer belongs to exactly one array or scalar: a buffer named
    twice would be copied once per reference (a 1 MB header can name a 60 MB buffer 20,000 times inside one legal
    frame), and an unused one is bytes the value does not account for; the honest worker makes neither, so both
    are forged replies. On top, the decoded bytes (array and scalar data, the characters of strings and of
    handles' type names, an int's bytes, and one for every node) must stay within `budget`, the sandbox's
    reply_bytes, whatever objects the parsed header shares: an honest reply always fits, since every node takes at
    least one byte of its header, every character at least one, every array its own buffer. (Replies have no
    dicts, hence no keys to count; Python's own overhead per node is bounded by the 1 MB header.) The whole value
    is checked before anything is built, so a refused reply costs no memory beyond its own frame."""

    def __init__(self, header: dict, payload: memoryview, owner: object, generation: int, budget: int):
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
        self.budget = budget
        self._left = budget
        self._used = bytearray(len(self.buffers))
        self._arrays: list[tuple[np.dtype, int, list | None, memoryview]] = []  # checked, in depth-first order

    def value(self, node: Any) -> Any:
        try:
            self._spend(1)
            self._check(node, 0)
            if self._used.count(0):
                raise InvalidResult(f"the reply carries {self._used.count(0)} buffer(s) that its value does not use")
            self._next_array = iter(self._arrays)
            return self._build(node)
        except InvalidResult:
            raise
        except (TypeError, ValueError, OverflowError, MemoryError, RecursionError) as exc:  # e.g. absurd shapes
            raise InvalidResult(f"malformed value in the reply ({type(exc).__name__})") from None

    def _spend(self, n: int) -> None:
        self._left -= n
        if self._left < 0:
            raise InvalidResult(f"the reply's value decodes to more than {self.budget} bytes, the limit for a reply")

    def _check(self, node: Any, depth: int) -> None:
        """Validates a node and counts what it would decode to beyond the one byte its container counted for it;
        allocates nothing."""
        t = type(node)
        if node is None or t is bool or t is float:
            return None
        if t is int:  # json caps ints at 4300 digits
            return self._spend(node.bit_length() // 8)
        if t is str:
            if len(node) > MAX_STR:
                raise InvalidResult("the result holds an overlong string")
            return self._spend(len(node))
        if t is not dict:
            raise InvalidResult(f"unexpected {t.__name__} in the reply")
        tag = node.get("t")
        if tag in ("tuple", "list") and node.keys() == {"t", "v"} and type(node["v"]) is list:
            items = node["v"]
            if items and depth >= wire.MAX_DEPTH:
                raise InvalidResult("the result is nested too deeply")
            self._spend(len(items))
            for item in items:
                if type(item) is not float:  # the common plain item, without a call
                    self._check(item, depth + 1)
            return None
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
            self._spend(len(data))
            self._arrays.append((dtype, count, shape, data))
            return None
        if tag == "sc" and node.keys() == {"t", "dtype", "b"}:
            dtype, data = self._dtype_and_buffer(node)
            if len(data) != dtype.itemsize:
                raise InvalidResult("scalar bytes do not match its dtype")
            self._spend(len(data))
            self._arrays.append((dtype, 1, None, data))
            return None
        if tag == "h" and node.keys() == {"t", "id", "type"} and type(node["id"]) is int \
                and type(node["type"]) is str:
            return self._spend(min(len(node["type"]), MAX_TYPE_NAME) + node["id"].bit_length() // 8)
        raise InvalidResult("malformed value in the reply")

    def _dtype_and_buffer(self, node: dict) -> tuple[np.dtype, memoryview]:
        if type(node["dtype"]) is not str or node["dtype"] not in wire.DTYPES:
            raise InvalidResult(f"dtype {str(node['dtype'])[:20]!r} is not allowed in a reply")
        index = node["b"]
        if type(index) is not int or not 0 <= index < len(self.buffers):
            raise InvalidResult("bad buffer reference in the reply")
        if self._used[index]:
            raise InvalidResult(f"the reply names buffer {index} more than once (each array or scalar must come "
                                "with bytes of its own)")
        self._used[index] = 1
        return np.dtype(node["dtype"]), self.buffers[index]

    def _build(self, node: Any) -> Any:
        """The value of a node that _check accepted."""
        if type(node) is not dict:
            return node  # None, bool, int, float or str
        tag = node["t"]
        if tag == "list":
            return [self._build(item) if type(item) is dict else item for item in node["v"]]
        if tag == "tuple":
            return tuple([self._build(item) if type(item) is dict else item for item in node["v"]])
        if tag == "h":
            return Handle(node["type"][:MAX_TYPE_NAME], node["id"], self.owner, self.generation)
        dtype, count, shape, data = next(self._next_array)
        if shape is None:
            return np.frombuffer(data, dtype=dtype, count=1)[0]
        # A fresh, writable array owned by this process.
        return np.frombuffer(data, dtype=dtype, count=count).reshape(shape).copy() if count \
            else np.empty(shape, dtype=dtype)


def _cap_text(value: Any, cap: int = MAX_TEXT) -> str:
    text = value if type(value) is str else ""
    return text if len(text) <= cap else text[:cap] + " [...]"


def _seconds(t: float) -> str:
    return f"{t:g} s"
