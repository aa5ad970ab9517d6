"""resolve_batch's plan-per-key-set fast path answers exactly as the field-by-field rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.batches.schemas import (
    BATCH_KEYS,
    BatchFeed,
    BatchInput,
    _resolve_checked,
    resolve_batch,
    resolve_feed,
)
from app.errors import InputInvalid

TEXT = st.sampled_from(["Линия 1", "  padded  ", " ", "", "x"])
INSTANT = st.sampled_from(
    [
        dt.datetime(2025, 1, 1, 8),
        dt.datetime(2025, 1, 1, 20, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime(1, 1, 1, 0),
        dt.datetime(2025, 1, 1, 8, tzinfo=dt.UTC),
    ]
)
VALUES: dict[str, Any] = {
    "is_closed": st.booleans(),
    "batch_number": st.integers(1, 10),
    "batch_date": st.just(dt.date(2025, 1, 1)),
    "shift_start": INSTANT,
    "shift_end": INSTANT,
}


@st.composite
def inputs(draw: st.DrawFn) -> BatchInput:
    """Each field under none, one or (rarely) two of its keys."""
    sent: dict[str, Any] = {}
    for field, names in BATCH_KEYS.items():
        keys = draw(st.sampled_from([(), *[(n,) for n in names], names[:2]]))
        for key in keys:
            sent[key] = draw(VALUES.get(field, TEXT))
    return BatchInput(**sent)


def outcome(resolve: Any, item: BatchInput, partial: bool) -> Any:
    try:
        fields = resolve(item, ["body", 3], partial=partial)
    except InputInvalid as exc:
        return ("invalid", exc.detail, msgspec.to_builtins(exc.errors))
    return (fields.values, fields.keys, fields.loc)


@settings(max_examples=600, deadline=None)
@given(inputs(), st.booleans())
def test_fast_path_answers_as_the_rules(item: BatchInput, partial: bool) -> None:
    assert outcome(resolve_batch, item, partial) == outcome(_resolve_checked, item, partial)


def test_a_feed_in_one_key_set_is_resolved_by_the_plan() -> None:
    item = BatchInput(
        РабочийЦентр=" Линия 1 ",
        ИдентификаторРЦ="WC1",
        ПредставлениеЗаданияНаСмену="Задание",
        Смена="1",
        Бригада="Бригада",
        НомерПартии=7,
        ДатаПартии=dt.date(2025, 1, 1),
        Номенклатура="Изделие",
        КодЕКН="1",
        ДатаВремяНачалаСмены=dt.datetime(2025, 1, 1, 8, tzinfo=dt.UTC),
        ДатаВремяОкончанияСмены=dt.datetime(2025, 1, 1, 20, tzinfo=dt.UTC),
    )
    fields = resolve_batch(item, ["body", 0], partial=False)
    assert fields.values["work_center_name"] == "Линия 1"
    assert fields.values["is_closed"] is False
    assert fields.keys["batch_number"] == "НомерПартии"


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_text_is_named_by_its_key(blank: str) -> None:
    with pytest.raises(InputInvalid) as caught:
        resolve_batch(BatchInput(shift=blank), ["body"], partial=True)
    assert msgspec.to_builtins(caught.value.errors)[0]["loc"] == ["body", "shift"]


@st.composite
def feeds(draw: st.DrawFn) -> list[BatchInput]:
    """Mostly one set of keys for every item (as 1C sends), sometimes a mix."""
    if draw(st.booleans()):
        return draw(st.lists(inputs(), min_size=1, max_size=5))
    keys = {field: draw(st.sampled_from(names)) for field, names in BATCH_KEYS.items()}
    closed = draw(st.booleans())
    items = []
    for _ in range(draw(st.integers(1, 5))):
        sent = {
            key: draw(VALUES.get(field, TEXT))
            for field, key in keys.items()
            if field != "is_closed" or closed
        }
        items.append(BatchInput(**sent))
    return items


def feed_outcome(resolve: Any, items: list[BatchInput]) -> Any:
    try:
        feed = resolve(items)
    except InputInvalid as exc:
        return ("invalid", exc.detail, msgspec.to_builtins(exc.errors))
    # is_closed may be left out (defaulted): no key of its own to name.
    named = [field for field in BATCH_KEYS if field != "is_closed"]
    locs = [[feed.loc(i, field) for field in named] for i in range(len(items))]
    return (feed.columns, locs)


@settings(max_examples=500, deadline=None)
@given(feeds())
def test_a_feed_resolved_by_column_answers_as_item_by_item(items: list[BatchInput]) -> None:
    def item_by_item(feed: list[BatchInput]) -> BatchFeed:
        return BatchFeed.of(
            [resolve_batch(item, ["body", i], partial=False) for i, item in enumerate(feed)]
        )

    by_column = feed_outcome(lambda feed: resolve_feed(feed, ["body"]), items)
    assert by_column == feed_outcome(item_by_item, items)
