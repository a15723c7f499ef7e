"""The student side's wire format (standard library only; see ../codec.py for the grader's side).

A frame is a 20-byte prefix (magic, header length, payload length; see pack_frame), a header, then the payload:
the raw bytes of every array, back to back, whose lengths the header lists in "buffers". Replies carry a JSON
header (ASCII, NaN and Infinity allowed), which the grader parses and checks without trusting anything; requests
come from the trusted grader and carry a marshal header (fast to load, no import). Values inside a header are
scalars (None, bool, int, float, str) or tagged objects:
    {"t": "tuple" | "list", "v": [...]}                   containers (requests may also carry
    {"t": "dict", "v": [[key, value], ...]}                 dicts with str keys)
    {"t": "nd", "dtype": "<f8", "shape": [2, 3], "b": i}   array, C order, bytes in buffer i
    {"t": "sc", "dtype": "<f8", "b": i}                    numpy scalar, bytes in buffer i
    {"t": "h", "id": n, "type": "MyCache"}                 handle to an object kept in this process
The grader imports this module too, for the constants and the frame prefix.
"""

import os
import sys

try:
    from _json import encode_basestring_ascii as _json_str  # the C helper alone: `import json` costs ~20 ms
except ImportError:  # an interpreter built without the accelerator
    from json.encoder import encode_basestring_ascii as _json_str

MAGIC = b"AGSB"
FRAME_SIZE = 20
# Array dtypes that may cross the boundary (numpy dtype.str, little-endian).
DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"})
MAX_DEPTH = 32  # nesting of tuples/lists; deeper containers become handles
MAX_HEADER = 1 << 20  # a reply's JSON header; arrays travel as raw buffers beside it
TEXT_CAP = 4096  # error messages and tracebacks are cut to this many characters
MAX_INT_BITS = 1024  # larger Python ints stay in here as handles

def pack_frame(header_len, payload_len):
    return MAGIC + header_len.to_bytes(8, "big") + payload_len.to_bytes(8, "big")


def unpack_frame(prefix):
    """(magic, header length, payload length) of a 20-byte frame prefix."""
    return bytes(prefix[:4]), int.from_bytes(prefix[4:12], "big"), int.from_bytes(prefix[12:20], "big")


def to_json(obj, out):
    """Appends the JSON text of obj (None, bool, int, float, str, list, tuple, dict with str keys) to out."""
    t = type(obj)
    if obj is None:
        out.append("null")
    elif t is bool:
        out.append("true" if obj else "false")
    elif t is int:
        out.append(int.__repr__(obj))
    elif t is float:
        if obj != obj:
            out.append("NaN")
        elif obj in (float("inf"), float("-inf")):
            out.append("Infinity" if obj > 0 else "-Infinity")
        else:
            out.append(float.__repr__(obj))  # shortest repr: round-trips exactly
    elif t is str:
        out.append(_json_str(obj))
    elif t is list or t is tuple:
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            to_json(item, out)
        out.append("]")
    elif t is dict:
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if i:
                out.append(",")
            out.append(_json_str(str(key)))
            out.append(":")
            to_json(value, out)
        out.append("}")
    else:
        raise TypeError(f"cannot write a {t.__name__} as JSON")


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _numpy():
    import numpy  # only when an array crosses: keeps start-up cheap for code that never needs it

    return numpy


class _Encoder:
    """Turns a return value into header nodes plus buffers; anything not exactly plain becomes a handle."""

    def __init__(self, handles):
        self.handles = handles
        self.buffers = []

    def node(self, obj, depth=0):
        t = type(obj)
        if obj is None or t is bool or t is float or t is str:
            return obj
        if t is int and obj.bit_length() <= MAX_INT_BITS:
            return obj
        if (t is tuple or t is list) and depth < MAX_DEPTH:
            return {"t": t.__name__, "v": [self.node(item, depth + 1) for item in obj]}
        np = sys.modules.get("numpy")
        if np is not None:
            if t is np.ndarray:
                dtype = self._plain_dtype(obj.dtype)
                if dtype is not None:
                    return {"t": "nd", "dtype": dtype.str, "shape": list(obj.shape),
                            "b": self._buffer(obj.astype(dtype, copy=False).tobytes(order="C"))}
            elif isinstance(obj, np.generic) and t is obj.dtype.type:
                dtype = self._plain_dtype(obj.dtype)
                if dtype is not None:
                    return {"t": "sc", "dtype": dtype.str, "b": self._buffer(obj.astype(dtype).tobytes())}
        return self.handle(obj)

    @staticmethod
    def _plain_dtype(dtype):
        if dtype.kind not in "biuf" or dtype.hasobject:
            return None
        if dtype.byteorder == ">":
            dtype = dtype.newbyteorder("<")
        return dtype if dtype.str in DTYPES else None

    def _buffer(self, data):
        self.buffers.append(data)
        return len(self.buffers) - 1

    def handle(self, obj):
        hid = len(self.handles) + 1
        self.handles[hid] = obj
        try:
            name = type(obj).__qualname__
            module = type(obj).__module__
            if module not in ("builtins", "__main__"):
                name = f"{module}.{name}"
        except BaseException:
            name = "?"
        return {"t": "h", "id": hid, "type": str(name)[:100]}


def _decode(node, buffers, handles):
    """Rebuilds request arguments. Requests come from the trusted parent, so this checks little."""
    if not isinstance(node, dict):
        return node
    tag = node["t"]
    if tag == "tuple":
        return tuple(_decode(v, buffers, handles) for v in node["v"])
    if tag == "list":
        return [_decode(v, buffers, handles) for v in node["v"]]
    if tag == "dict":
        return {k: _decode(v, buffers, handles) for k, v in node["v"]}
    if tag == "h":
        try:
            return handles[node["id"]]
        except KeyError:
            raise LookupError(f"unknown handle {node['id']}") from None
    np = _numpy()
    data = buffers[node["b"]]
    if tag == "nd":
        # A fresh, writable array the student may do anything with.
        return np.frombuffer(data, dtype=node["dtype"]).reshape(node["shape"]).copy()
    if tag == "sc":
        return np.frombuffer(data, dtype=node["dtype"])[0]
    raise ValueError(f"unknown tag {tag!r}")


def _json_bytes(header):
    out = []
    to_json(header, out)
    return "".join(out).encode("ascii")


def _text(fn, default):
    """Student objects may have hostile __str__/__repr__: never let them break the reply."""
    try:
        return str(fn())[:TEXT_CAP]
    except BaseException:
        return default


