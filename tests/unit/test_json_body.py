"""The nesting check on raw JSON agrees with a recursive parse; types know their depth."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import NUL_MESSAGE, decode_body, loc_from_msgspec, nul_path
from app.json_depth import nesting_exceeds, type_depth

# Strings full of what the check must see through: brackets, quotes and escapes.
tricky_text = st.text(alphabet='[]{}"\\ a', max_size=6)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4)
    ),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(documents, st.integers(min_value=0, max_value=5))
def test_nesting_check_agrees_with_a_parser(document: Any, limit: int) -> None:
    body = json.dumps(document, ensure_ascii=False).encode()
    assert nesting_exceeds(body, limit) == (depth(document) > limit)


def test_many_empty_strings_between_brackets_do_not_hide_depth() -> None:
    body = b'["", "", [["]", ""], {"": [""]}]]'
    assert nesting_exceeds(body, 3) is True
    assert nesting_exceeds(body, 4) is False


class Leaf(msgspec.Struct):
    name: str
    tags: list[str]


class Tree(msgspec.Struct):
    children: list[Tree]


def test_type_depth_is_finite_only_for_types_that_cannot_nest_further() -> None:
    assert type_depth(int) == 0
    assert type_depth(Annotated[list[Leaf], msgspec.Meta(max_length=3)]) == 3
    assert type_depth(Leaf | None) == 2
    assert type_depth(dict[str, Any]) == math.inf
    assert type_depth(Tree) == math.inf


class Named(msgspec.Struct):
    names: list[str]


def test_nul_is_refused_once_per_body_at_its_path() -> None:
    body = b'{"names": ["a", "b\\u0000c"]}'
    with pytest.raises(msgspec.ValidationError) as caught:
        decode_body(body, Named)
    assert loc_from_msgspec(str(caught.value)) == (["body", "names", 1], NUL_MESSAGE)


def test_a_backslash_before_u0000_is_no_nul() -> None:
    assert decode_body(b'{"names": ["\\\\u0000"]}', Named) == Named(["\\u0000"])


def test_nul_path_names_keys_and_values() -> None:
    assert nul_path({"a": [{"b": "x"}, {"c\x00": 1}]}) == ".a[1].c\x00"
    assert nul_path({"a.b": ["\x00"]}) == '["a.b"][0]'
    assert nul_path(["ok", {"k": "fine"}]) is None
