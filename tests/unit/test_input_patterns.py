"""Documented patterns admit only what the service accepts (what the contract test relies on).

Each pattern validates the field (msgspec) and is what the OpenAPI document states; the
checks after it (the URL's parse, the email header) must take every string it admits.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import get_settings
from app.errors import DOCUMENTED_TEXT, NO_NUL, loc_from_msgspec
from app.notifications import schemas as notifications
from app.notifications.jobs import build_message
from app.webhooks.schemas import URL_PATTERN, WebhookUpdate
from app.webhooks.service import check_url
from tests.factories import shift_task_en, shift_task_ru, without

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@EXAMPLES
@given(st.from_regex(URL_PATTERN, fullmatch=True))
def test_every_url_the_pattern_admits_is_accepted(url: str) -> None:
    allowed = msgspec.structs.replace(get_settings(), webhook_allow_private=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("app.webhooks.service.get_settings", lambda: allowed)
        assert check_url(url, ["body", "url"]) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://erp.example.com/hooks/production",
        "HTTP://localhost:8080",
        "http://127.0.0.1:65535/a?b=c#d",
        "http://[::1]/hook",
        "http://[::ffff:10.0.0.1]:1/",
        "https://xn--e1afmkfd.xn--p1ai/путь",
    ],
)
def test_ordinary_urls_match(url: str) -> None:
    msgspec.convert({"url": url}, WebhookUpdate)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com:0/",
        "https://example.com:65536/",
        "https://user:pw@example.com/",
        "http://exa mple.com/",
        "http://example.com/a\x85b",
        "http://-example.com/",
        "http://1.2.3/",
        "http://256.1.1.1/",
        "http://[1:2:3]/",
        "http://[::1%eth0]/",
        "ftp://example.com/",
    ],
)
def test_malformed_urls_are_refused_in_plain_words(url: str) -> None:
    with pytest.raises(msgspec.ValidationError) as refused:
        msgspec.convert({"url": url}, WebhookUpdate)
    loc, msg = loc_from_msgspec(str(refused.value))
    assert loc == ["body", "url"]
    assert msg.startswith("must be an http:// or https:// URL"), msg


@EXAMPLES
@given(
    st.from_regex(notifications.EMAIL_PATTERN, fullmatch=True).filter(
        lambda email: len(email) <= 254
    )
)
def test_every_email_the_pattern_admits_fits_a_message(email: str) -> None:
    msgspec.convert({"email": email, "message": "m"}, notifications.TestNotification)
    message = build_message(
        notifications.Notification(to=email, subject="s", body="b"), "pc@example.com"
    )
    assert message.as_bytes()


@pytest.mark.parametrize(
    "char", ["\n", "\x0b", "\x1c", "\x85", "\u2028", " ", "\xa0", "\x00", "[", "<", ","]
)
def test_line_breaks_and_spaces_are_not_email_characters(char: str) -> None:
    with pytest.raises(msgspec.ValidationError) as refused:
        msgspec.convert(
            {"email": f"a{char}b@c.example", "message": "m"}, notifications.TestNotification
        )
    loc, msg = loc_from_msgspec(str(refused.value))
    assert loc == ["body", "email"]
    assert msg.startswith("must be an email address: name@domain.tld"), msg


@pytest.mark.parametrize("text", ["a@b.example\n", "https://erp.example.com/hook\n"])
def test_a_final_newline_is_refused_as_json_schema_does(text: str) -> None:
    assert not re.search(notifications.EMAIL_PATTERN, text)
    assert not re.search(URL_PATTERN, text)


@EXAMPLES
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(" \t\n\x00\x1c\x85\u3000")))
def test_documented_text_is_no_nul_and_not_blank(text: str) -> None:
    assert bool(re.search(DOCUMENTED_TEXT, text)) == (
        bool(re.search(NO_NUL, text)) and bool(text.strip())
    )


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    from litestar._openapi.plugin import OpenAPIPlugin

    from app.main import create_app

    document = create_app().plugins.get(OpenAPIPlugin).provide_openapi_schema()  # as served
    schemas: dict[str, Any] = document["components"]["schemas"]
    return schemas


def _valid(components: dict[str, Any], name: str, value: Any) -> bool:
    return bool(jsonschema_rs.validator_for(components[name]).is_valid(value))


def test_the_document_states_the_1c_synonym_rules(components: dict[str, Any]) -> None:
    assert _valid(components, "BatchInput", shift_task_ru())
    assert _valid(components, "BatchInput", shift_task_en())
    assert _valid(components, "BatchInput", without(shift_task_en(), "is_closed"))
    assert not _valid(components, "BatchInput", shift_task_ru(batch_number=1))  # both keys
    assert not _valid(components, "BatchInput", without(shift_task_ru(), "Смена"))
    assert not _valid(components, "BatchInput", shift_task_en(work_center_name="Line"))
    assert not _valid(components, "BatchInput", shift_task_en(shift_start="0001-01-01T00:00Z"))
    assert "x-not-before" in components["BatchInput"]
    assert _valid(components, "BatchUpdate", {"Смена": "2"})
    assert _valid(components, "BatchUpdate", {})
    assert not _valid(components, "BatchUpdate", {"Смена": "2", "shift": "2"})
    assert not _valid(components, "BatchUpdate", {"shift": "  "})


@pytest.mark.parametrize(
    ("product", "valid"),
    [
        ({"unique_code": "A", "batch_id": 1}, True),
        ({"УникальныйКодПродукта": "A", "НомерПартии": 1, "ДатаПартии": "2024-01-30"}, True),
        ({"unique_code": "A", "batch_number": 1, "ДатаПартии": "2024-01-30"}, True),
        ({"unique_code": "A"}, False),
        ({"unique_code": "A", "batch_number": 1}, False),
        ({"unique_code": "A", "batch_id": 1, "batch_date": "2024-01-30"}, False),
        ({"unique_code": "A", "УникальныйКодПродукта": "A", "batch_id": 1}, False),
        ({"unique_code": " ", "batch_id": 1}, False),
    ],
)
def test_the_document_states_how_a_product_names_its_batch(
    components: dict[str, Any], product: dict[str, Any], valid: bool
) -> None:
    assert _valid(components, "ProductInput", product) == valid
