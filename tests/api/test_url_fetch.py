"""The SSRF-safe URL fetcher against a real HTTP server on loopback."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from fashion_search.config import Settings
from fashion_search.errors import InputError
from fashion_search.url_fetch import address_problem, fetch_image_url, parse_target

LAB = {"url_allow_private": True}  # the test server is on loopback


def fetch_error(url: str, **settings: Any) -> InputError:
    with pytest.raises(InputError) as info:
        fetch_image_url(url, Settings(**settings))
    return info.value


def test_fetches_the_image_when_private_addresses_are_allowed(url_server: Any) -> None:
    assert fetch_image_url(url_server.url("/image.jpg"), Settings(**LAB)) == url_server.image


def test_the_same_url_is_refused_by_default_because_it_is_loopback(url_server: Any) -> None:
    err = fetch_error(url_server.url("/image.jpg"))
    assert (err.code, err.status_code) == ("url_forbidden", 400)
    assert "loopback" in err.detail


def test_a_host_name_keeps_its_host_header_while_the_address_is_pinned(url_server: Any) -> None:
    # "localhost" resolves to ::1 as well on most machines; the server only listens on IPv4, so
    # this also exercises falling back to the next vetted address.
    port = url_server.base_url.rsplit(":", 1)[1]
    assert fetch_image_url(f"http://localhost:{port}/image.jpg", Settings(**LAB)) == url_server.image
    assert url_server.hosts[-1] == f"localhost:{port}"


def test_localhost_by_name_is_refused_by_default(url_server: Any) -> None:
    port = url_server.base_url.rsplit(":", 1)[1]
    assert fetch_error(f"http://localhost:{port}/image.jpg").code == "url_forbidden"


def test_https_verifies_the_certificate_for_the_host_name_while_connecting_to_the_pinned_address(
    tls_server: Any, monkeypatch: pytest.MonkeyPatch, url_server: Any
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca_file))  # trust the test CA
    before = len(tls_server.server_names)
    assert fetch_image_url(tls_server.base_url + "/image.jpg", Settings(**LAB)) == url_server.image
    assert set(tls_server.server_names[before:]) == {"localhost"}  # SNI carried the name, not the IP


def test_https_with_an_untrusted_certificate_fails(tls_server: Any) -> None:
    err = fetch_error(tls_server.base_url + "/image.jpg", **LAB)
    assert err.code == "url_fetch_failed"


def test_redirects_are_followed_up_to_the_limit(url_server: Any) -> None:
    assert (
        fetch_image_url(url_server.url("/chain/3"), Settings(url_max_redirects=3, **LAB)) == url_server.image
    )
    err = fetch_error(url_server.url("/chain/4"), url_max_redirects=3, **LAB)
    assert err.code == "url_fetch_failed" and "redirects" in err.detail


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:80/",
        "http://169.254.1.1/",
    ],
)
def test_a_redirect_to_a_metadata_or_link_local_address_is_refused(url_server: Any, target: str) -> None:
    """Every hop is re-checked; these stay refused even where private addresses are allowed."""
    err = fetch_error(url_server.url(f"/redirect?to={target}"), **LAB)
    assert (err.code, err.status_code) == ("url_forbidden", 400)


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/image.jpg", "file:///etc/passwd"])
def test_a_redirect_to_another_scheme_is_refused(url_server: Any, target: str) -> None:
    assert fetch_error(url_server.url(f"/redirect?to={target}"), **LAB).code == "invalid_url"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "gopher://example.com/",
        "example.com/a.jpg",
        "http://",
        "http://user:secret@example.com/a.jpg",
        "http://example.com:99999/a.jpg",
        "http://example.com/" + "a" * 3000,
    ],
)
def test_malformed_or_non_http_urls_are_refused_before_any_lookup(url: str) -> None:
    err = fetch_error(url)
    assert (err.code, err.status_code) == ("invalid_url", 400)


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers"])
def test_a_slow_drip_is_cut_off_by_the_total_deadline(url_server: Any, path: str) -> None:
    """One byte every 50 ms never trips a per-read timeout; only the total deadline stops it.

    The server drips for up to 30 s; it must see the client hang up ("cut") rather than get to
    the end of its own budget ("finished").
    """
    before = len(url_server.drips)
    err = fetch_error(url_server.url(path), url_read_timeout_s=1.0, **LAB)
    assert err.code == "url_timeout"
    assert url_server.wait_for(lambda: url_server.drips[before:]) == ["cut"]


def test_an_endless_body_is_cut_off_at_the_size_limit(url_server: Any) -> None:
    before = len(url_server.endless_sent)
    err = fetch_error(url_server.url("/endless"), max_image_bytes=100_000, **LAB)
    assert (err.code, err.status_code) == ("too_large", 413)
    # The server saw the connection close long before it could send everything.
    from_server = url_server.wait_for(lambda: url_server.endless_sent[before:])
    assert from_server[0] < 64 * 1024 * 1024


def test_a_declared_oversized_body_is_refused_without_reading_it(url_server: Any) -> None:
    err = fetch_error(url_server.url("/declared-huge"), max_image_bytes=100_000, **LAB)
    assert (err.code, err.status_code) == ("too_large", 413)


@pytest.mark.parametrize("status", [404, 500])
def test_an_upstream_error_status_is_a_client_error(url_server: Any, status: int) -> None:
    err = fetch_error(url_server.url(f"/status?code={status}"), **LAB)
    assert (err.code, err.status_code) == ("url_fetch_failed", 400)
    assert str(status) in err.detail


def test_a_closed_port_is_a_fetch_failure() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert fetch_error(f"http://127.0.0.1:{port}/x.jpg", **LAB).code == "url_fetch_failed"


def test_an_unresolvable_host_is_a_fetch_failure() -> None:
    assert fetch_error("http://no-such-host.invalid/x.jpg").code == "url_fetch_failed"


@pytest.mark.parametrize(
    ("address", "by_default", "when_private_allowed"),
    [
        ("93.184.216.34", None, None),
        ("2606:4700:4700::1111", None, None),
        ("127.0.0.1", "a loopback address", None),
        ("::1", "a loopback address", None),
        ("10.1.2.3", "a private address", None),
        ("192.168.0.10", "a private address", None),
        ("100.64.0.1", "a private address", None),
        ("fd12:3456::1", "a private address", None),
        ("::ffff:127.0.0.1", "a loopback address", None),
        ("169.254.169.254", "a cloud metadata address", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address", "a cloud metadata address"),
        ("64:ff9b::a9fe:a9fe", "a cloud metadata address", "a cloud metadata address"),
        ("2002:a9fe:a9fe::1", "a cloud metadata address", "a cloud metadata address"),
        ("169.254.10.10", "a link-local address", "a link-local address"),
        ("fe80::1", "a link-local address", "a link-local address"),
        ("224.0.0.1", "a multicast address", "a multicast address"),
        ("ff02::1", "a multicast address", "a multicast address"),
        ("0.0.0.0", "an unspecified address", "an unspecified address"),
        ("::", "an unspecified address", "an unspecified address"),
        ("240.0.0.1", "a reserved address", "a reserved address"),
    ],
)
def test_address_policy(address: str, by_default: str | None, when_private_allowed: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert address_problem(ip, allow_private=False) == by_default
    assert address_problem(ip, allow_private=True) == when_private_allowed


def test_targets_keep_the_host_for_the_host_header_and_encode_the_path() -> None:
    t = parse_target("https://Example.COM/a b.jpg?size=large#frag")
    assert (t.host, t.port, t.host_header, t.path) == (
        "example.com",
        443,
        "example.com",
        "/a%20b.jpg?size=large",
    )
    v6 = parse_target("http://[::1]:8080/")
    assert (v6.host, v6.host_header) == ("::1", "[::1]:8080")
