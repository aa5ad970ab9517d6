"""How deep JSON nests: the limit, a check on raw bytes, and the depth a type allows.

msgspec decodes recursively: a body nested thousands of levels deep raises RecursionError
inside a decoder (a 500). A body is refused as `json_invalid` past MAX_JSON_DEPTH levels,
but a body that decoded into a type which cannot nest that deep needs no check at all
(app.errors.decode_body): the check runs only where it can find something.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec.inspect as mi

MAX_JSON_DEPTH = 64
TOO_DEEP = f"arrays and objects nest deeper than {MAX_JSON_DEPTH} levels"

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKET_OR_QUOTE = bytes(b for b in range(256) if b not in b'[]{}"')
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")


def nesting_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays/objects nest deeper than `limit`, without a recursive parser.

    Escapes and strings are removed (brackets inside strings do not count), then innermost
    `[]`/`{}` pairs are peeled off one level per pass, all in C: a 100,000-item bulk body
    takes two passes. Unbalanced brackets are left for the JSON decoder to report.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    # Down to quotes and brackets first: the strings left are mostly `""` (a feed of 1,000
    # batches has 24,000), dropped by one replace instead of one regex match each. Dropping
    # a closing quote with the next opening one merges two strings that had nothing between.
    skeleton = _ESCAPE.sub(b"", body).translate(None, _NOT_BRACKET_OR_QUOTE).replace(b'""', b"")
    brackets = _STRING.sub(b"", skeleton)
    for _ in range(limit):
        peeled = _INNERMOST_PAIR.sub(b"", brackets)
        if not peeled or peeled == brackets:
            return False
        brackets = peeled
    return _INNERMOST_PAIR.search(brackets) is not None


def type_depth(annotation: Any) -> float:
    """How many levels of arrays/objects a value decoded as `annotation` can have (math.inf
    for Any, raw JSON or a type that contains itself)."""
    return _depth(mi.type_info(annotation), frozenset())


def _depth(info: mi.Type, enclosing: frozenset[int]) -> float:
    if isinstance(info, mi.AnyType | mi.RawType) or id(info) in enclosing:
        return math.inf
    inside = enclosing | {id(info)}
    if isinstance(info, mi.Metadata):
        return _depth(info.type, inside)
    if isinstance(info, mi.UnionType):
        return max(_depth(member, inside) for member in info.types)
    if isinstance(info, mi.CollectionType):  # list, set, frozenset, tuple[T, ...]
        return 1 + _depth(info.item_type, inside)
    if isinstance(info, mi.TupleType):
        return 1 + max((_depth(item, inside) for item in info.item_types), default=0)
    if isinstance(info, mi.DictType):
        return 1 + max(_depth(info.key_type, inside), _depth(info.value_type, inside))
    if isinstance(info, mi.StructType | mi.DataclassType | mi.TypedDictType | mi.NamedTupleType):
        return 1 + max((_depth(field.type, inside) for field in info.fields), default=0)
    return 0  # a scalar
