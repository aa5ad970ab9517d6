"""The nesting check of the JSON body gate agrees with a recursive parse."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.json_body import nesting_exceeds

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
