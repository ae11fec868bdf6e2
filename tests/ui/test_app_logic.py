"""The Streamlit app's behaviour, driven through ``AppTest``.

Only the HTTP boundary is faked (the ``responses`` library, fixture ``mocked_api_http``): the app's
own code, Streamlit's widgets and ``requests`` all run for real. The "API down" case needs no fake
at all: it points the app at a closed loopback port.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import responses
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.plugins.aws_servers import free_port

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"
API = "http://api.test:8000"

FACETS = {
    "gender": [{"value": "Men", "count": 20}, {"value": "Women", "count": 10}],
    "baseColour": [{"value": "Blue", "count": 7}, {"value": "Black", "count": 9}],
    "productDisplayName": [{"value": "Roadster Men Blue Jeans", "count": 1}],
}


def _hit(image_id: str, url: str, **tags: str) -> dict[str, object]:
    return {"image_id": image_id, "key": f"{image_id}.jpg", "score": 0.87, "url": url, "tags": tags}


TEXT_RESULTS = {
    "results": [
        _hit(
            "a1",
            "/images/a1/file",
            productDisplayName="Roadster Men *Blue* Jeans",
            gender="Men",
            articleType="Jeans",
            baseColour="Blue",
        )
        | {"matched_terms": ["blue", "jean"]},
        _hit("b2", "https://bucket.s3.amazonaws.com/b2.jpg?X-Amz-Signature=abc", gender="Women"),
    ],
    "took_ms": 12.5,
}
SIMILAR_RESULTS = {"results": [_hit("c3", "/images/c3/file", productDisplayName="Nike Men Blue Tshirt")]}


@pytest.fixture
def mocked_api_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[responses.RequestsMock]:
    """Fakes the API at the HTTP boundary; tests add routes and read back what the app sent."""
    monkeypatch.setenv("FASHION_SEARCH_API_URL", API)
    monkeypatch.delenv("FASHION_SEARCH_API_KEY", raising=False)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{API}/facets", json=FACETS)
        yield rsps


def _app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=20)
    at.run()
    assert not at.exception
    return at


def _search_text(at: AppTest, text: str) -> AppTest:
    at.text_input(key="text_query").input(text)
    _button(at, "Search").click()
    return at.run()


def _button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r} among {[b.label for b in at.button]}"
    return matches[0]


def _bodies(rsps: responses.RequestsMock, path: str) -> list[dict[str, object]]:
    return [json.loads(c.request.body) for c in rsps.calls if c.request.url == f"{API}{path}"]


def _page_text(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error])


def test_text_search_renders_cards_with_names_tags_and_browser_loadable_urls(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", json=TEXT_RESULTS)
    at = _search_text(_app(), "blue jeans")

    assert not at.exception
    assert _bodies(mocked_api_http, "/get_image_by_text") == [{"text": "blue jeans", "top_k": 12}]
    # Relative local-mode URLs are made absolute on the API; presigned S3 URLs are left alone.
    assert [img.value[0] for img in at.image] == [
        f"{API}/images/a1/file",
        "https://bucket.s3.amazonaws.com/b2.jpg?X-Amz-Signature=abc",
    ]
    page = _page_text(at)
    assert "Results for “blue jeans”" in page
    assert "2 products" in page
    # The display name is shown verbatim (escaped, not read as markdown); without one, the key.
    assert "Roadster Men *Blue* Jeans" in page
    assert "b2.jpg" in page
    for tag in ("Men", "Jeans", "Blue"):
        assert f'<span class="fs-chip" title="{tag}">{tag}</span>' in page
    # Why a result ranks: the query's words found in its tags, when the API reports them.
    assert (
        '<div class="fs-score" title="Words found in its tags: blue, jean">match 0.87 · blue, jean</div>'
        in page
    )
    assert '<div class="fs-score">match 0.87</div>' in page


def test_more_like_this_sends_the_image_id_and_shows_the_similars(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", json=TEXT_RESULTS)
    mocked_api_http.post(f"{API}/get_similar_images", json=SIMILAR_RESULTS)
    at = _search_text(_app(), "blue jeans")

    at.button(key="more_a1").click()
    at.run()

    assert not at.exception
    assert _bodies(mocked_api_http, "/get_similar_images") == [{"image_id": "a1", "top_k": 12}]
    assert "More like “Roadster Men *Blue* Jeans”" in _page_text(at)
    # The source product heads the results; the grid now holds only the similar product.
    assert [img.value[0] for img in at.image] == [f"{API}/images/a1/file", f"{API}/images/c3/file"]


def test_filters_come_from_facets_and_travel_in_the_request_body(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", json=TEXT_RESULTS)
    at = _app()
    # Free-text tags (product names) are not offered as filters.
    assert [m.label for m in at.sidebar.multiselect] == ["Gender", "Colour"]
    assert at.multiselect(key="filter_baseColour").options == ["Black (9)", "Blue (7)"]

    at.multiselect(key="filter_gender").select("Women").run()
    at.slider(key="top_k").set_value(5).run()
    _search_text(at, "dress")
    assert _bodies(mocked_api_http, "/get_image_by_text")[-1] == {
        "text": "dress",
        "top_k": 5,
        "filters": {"gender": ["Women"]},
    }

    # Changing a filter asks the same question again with the new filters.
    at.multiselect(key="filter_baseColour").select("Black").select("Blue").run()
    assert _bodies(mocked_api_http, "/get_image_by_text")[-1]["filters"] == {
        "gender": ["Women"],
        "baseColour": ["Black", "Blue"],
    }
    _button(at, "Clear filters").click().run()
    assert "filters" not in _bodies(mocked_api_http, "/get_image_by_text")[-1]


def _page_of(ids: list[str], next_offset: int | None) -> dict[str, object]:
    return {
        "results": [_hit(i, f"/images/{i}/file", productDisplayName=f"Product {i}") for i in ids],
        "took_ms": 3,
        "next_offset": next_offset,
    }


def test_show_more_appends_the_next_page_until_the_last(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", json=_page_of(["p1", "p2"], 2))
    at = _app()
    at.slider(key="top_k").set_value(2).run()
    _search_text(at, "shirt")
    assert [img.value[0] for img in at.image] == [f"{API}/images/p1/file", f"{API}/images/p2/file"]

    mocked_api_http.replace(responses.POST, f"{API}/get_image_by_text", json=_page_of(["p3"], None))
    _button(at, "Show more").click().run()

    assert not at.exception
    assert _bodies(mocked_api_http, "/get_image_by_text") == [
        {"text": "shirt", "top_k": 2},
        {"text": "shirt", "top_k": 2, "offset": 2},
    ]
    assert [img.value[0] for img in at.image] == [f"{API}/images/p{n}/file" for n in (1, 2, 3)]
    assert "3 products" in _page_text(at)
    # The last page (no next_offset) takes the button away; other clicks do not ask again.
    assert "Show more" not in [b.label for b in at.button]
    at.run()
    assert len(_bodies(mocked_api_http, "/get_image_by_text")) == 2


def test_a_failed_later_page_keeps_the_shown_products_and_show_more_retries(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", json=_page_of(["p1", "p2"], 2))
    at = _app()
    at.slider(key="top_k").set_value(2).run()
    _search_text(at, "shirt")

    mocked_api_http.replace(
        responses.POST, f"{API}/get_image_by_text", json={"error": "internal"}, status=500
    )
    _button(at, "Show more").click().run()
    assert "had a problem (HTTP 500)" in at.error[0].value
    assert len(at.image) == 2

    mocked_api_http.replace(responses.POST, f"{API}/get_image_by_text", json=_page_of(["p3", "p4"], 4))
    _button(at, "Show more").click().run()
    assert not at.error
    assert len(at.image) == 4
    assert [b.get("offset") for b in _bodies(mocked_api_http, "/get_image_by_text")] == [None, 2, 2]


def test_changing_a_filter_starts_again_from_the_first_page(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", json=_page_of(["p1", "p2"], 2))
    at = _app()
    at.slider(key="top_k").set_value(2).run()
    _search_text(at, "shirt")
    _button(at, "Show more").click().run()
    assert len(at.image) == 2  # the same two came back: shown once each, not twice

    at.multiselect(key="filter_gender").select("Men").run()
    last = _bodies(mocked_api_http, "/get_image_by_text")[-1]
    assert "offset" not in last and last["filters"] == {"gender": ["Men"]}


def test_uploaded_photo_is_sent_as_base64(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_similar_images", json=SIMILAR_RESULTS)
    photo = io.BytesIO()
    Image.new("RGB", (60, 80), (200, 30, 30)).save(photo, format="PNG")
    at = _app()

    at.file_uploader(key="photo").upload("dress.png", photo.getvalue(), "image/png")
    at.run()

    assert not at.exception
    (body,) = _bodies(mocked_api_http, "/get_similar_images")
    assert base64.b64decode(body["image_base64"]) == photo.getvalue()
    assert body["top_k"] == 12
    assert "Products like your photo" in _page_text(at)
    assert at.image[-1].value == [f"{API}/images/c3/file"]


def test_big_photos_are_shrunk_before_upload(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_similar_images", json=SIMILAR_RESULTS)
    noise = np.random.default_rng(0).integers(0, 255, (1600, 1200, 3), dtype=np.uint8)
    photo = io.BytesIO()
    Image.fromarray(noise).save(photo, format="PNG")
    assert len(photo.getvalue()) > 1_000_000
    at = _app()

    at.file_uploader(key="photo").upload("big.png", photo.getvalue(), "image/png")
    at.run()

    (body,) = _bodies(mocked_api_http, "/get_similar_images")
    sent = Image.open(io.BytesIO(base64.b64decode(body["image_base64"])))
    assert sent.format == "JPEG"
    assert sent.size == (768, 1024)


def test_image_link_is_sent_as_url_and_a_non_link_is_refused_on_the_page(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_similar_images", json=SIMILAR_RESULTS)
    at = _app()

    at.text_input(key="url_query").input("not a link")
    _button(at, "Find similar").click().run()
    assert "starting with http:// or https://" in _page_text(at)
    assert _bodies(mocked_api_http, "/get_similar_images") == []

    at.text_input(key="url_query").input("https://shop.example/p/123.jpg")
    _button(at, "Find similar").click().run()
    assert _bodies(mocked_api_http, "/get_similar_images") == [
        {"url": "https://shop.example/p/123.jpg", "top_k": 12}
    ]
    assert at.image[-1].value == [f"{API}/images/c3/file"]


def test_empty_query_and_empty_results_get_messages(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", json={"results": [], "took_ms": 1})
    at = _search_text(_app(), "   ")
    assert "Type a few words" in _page_text(at)
    assert _bodies(mocked_api_http, "/get_image_by_text") == []

    at.multiselect(key="filter_gender").select("Men").run()
    _search_text(at, "purple tuxedo")
    assert "No products match this search. Try removing some filters." in [i.value for i in at.info]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": "text_too_long", "detail": "Text is longer than 1000 characters."},
            "longer than 1000",
        ),
        (403, {"error": "forbidden", "detail": "bad key"}, "refused this page's API key"),
        (422, {"detail": [{"loc": ["body", "text"], "msg": "too long"}]}, "refused the request (HTTP 422)"),
        (500, {"error": "internal"}, "had a problem (HTTP 500)"),
        (200, {"unexpected": True}, "shape this page does not understand"),
    ],
)
def test_api_errors_become_readable_messages(mocked_api_http, status, body, expected) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", json=body, status=status)
    at = _search_text(_app(), "jeans")

    assert not at.exception
    assert len(at.error) == 1
    assert expected in at.error[0].value
    assert "Traceback" not in _page_text(at)


def test_slow_api_gets_a_timeout_message_and_try_again_retries(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", body=requests.ReadTimeout("read timed out"))
    at = _search_text(_app(), "jeans")
    assert "did not answer within 30 seconds" in at.error[0].value

    mocked_api_http.replace(responses.POST, f"{API}/get_image_by_text", json=TEXT_RESULTS)
    _button(at, "Try again").click().run()
    assert not at.error
    assert len(at.image) == 2


def test_api_key_from_streamlit_secrets_is_sent(mocked_api_http) -> None:
    mocked_api_http.post(f"{API}/get_image_by_text", json=TEXT_RESULTS)
    at = AppTest.from_file(str(APP), default_timeout=20)
    at.secrets["FASHION_SEARCH_API_KEY"] = "s3cret"
    at.run()
    _search_text(at, "jeans")

    assert {c.request.headers.get("x-api-key") for c in mocked_api_http.calls} == {"s3cret"}


def test_api_down_shows_messages_and_the_page_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # a loopback port nothing listens on
    monkeypatch.setenv("FASHION_SEARCH_API_URL", closed)

    at = _search_text(_app(), "jeans")

    assert not at.exception
    assert f"Filters are unavailable: Can't reach the search service at {closed}" in at.warning[0].value
    assert "Can't reach the search service" in at.error[0].value
    _button(at, "New search").click().run()
    assert not at.exception
    assert "Start with a description" in _page_text(at)


def test_photos_behind_a_keyed_local_api_are_fetched_by_the_app_with_the_key(
    mocked_api_http, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASHION_SEARCH_API_KEY", "k1")
    photo = io.BytesIO()
    Image.new("RGB", (60, 80), (10, 60, 200)).save(photo, format="PNG")
    mocked_api_http.post(f"{API}/get_image_by_text", json=TEXT_RESULTS)
    mocked_api_http.get(f"{API}/images/a1/file", body=photo.getvalue(), content_type="image/png")

    at = _search_text(_app(), "jeans")

    (fetch,) = [c for c in mocked_api_http.calls if c.request.url == f"{API}/images/a1/file"]
    assert fetch.request.headers["x-api-key"] == "k1"
    served, presigned = (img.value[0] for img in at.image)
    assert not served.startswith(API)  # handed to the browser by Streamlit's media server
    assert presigned.startswith("https://bucket.s3.amazonaws.com/")
