"""SSRF-safe, bounded download of an image given by URL.

A search API that fetches URLs for anonymous clients is a classic server-side request forgery
vector: without care it reads cloud metadata credentials (169.254.169.254), internal admin pages
or the loopback interface on the client's behalf. So this module:

- accepts only http/https, without credentials in the URL;
- resolves the host itself and vets *every* resolved address (IPv4 and IPv6; embedded IPv4 in
  mapped / NAT64 / 6to4 forms included) before connecting;
- connects to a vetted address it pinned, never resolving again, so a DNS answer that changes
  between the check and the connect (DNS rebinding) cannot redirect the request; the Host header
  and the TLS SNI / certificate check still use the URL's host name;
- follows redirects by hand, re-running every check on every hop;
- bounds connect time per attempt and the whole download (all hops, headers and body) by one
  deadline enforced by a watchdog that shuts the socket, so a server dripping one byte at a time
  cannot hold a worker for longer than the budget (per-read timeouts alone never fire then);
- streams the body and stops at ``max_image_bytes``.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

from fashion_search.config import Settings
from fashion_search.errors import InputError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 2048
CHUNK_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
USER_AGENT = "fashion-search-url-fetch/1"

# Cloud instance metadata endpoints: blocked even when private addresses are allowed, because a
# lab that allows its own LAN still never wants to hand out instance credentials.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """One hop's request, already checked for scheme, host, port and length."""

    url: str
    scheme: str
    host: str  # as used for DNS, SNI and certificate checks (IDNA-encoded, no brackets)
    port: int
    path: str  # path + query, percent-encoded
    host_header: str


def parse_target(url: str) -> Target:
    """Check the URL's shape; ``InputError('invalid_url')`` for anything but a plain http(s) URL."""
    if len(url) > MAX_URL_CHARS:
        raise InputError("invalid_url", f"URL longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InputError("invalid_url", f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InputError(
            "invalid_url", f"only http and https URLs are fetched, not {scheme or 'no scheme'!r}"
        )
    if not parts.hostname:
        raise InputError("invalid_url", "the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InputError("invalid_url", "credentials in URLs are not supported")
    try:
        host = parts.hostname.encode("idna").decode("ascii") if not _is_ip(parts.hostname) else parts.hostname
    except UnicodeError:
        raise InputError("invalid_url", "the host name is not a valid domain name") from None
    port = port or DEFAULT_PORTS[scheme]
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port == DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return Target(url=url, scheme=scheme, host=host, port=port, path=path, host_header=host_header)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4), which is what gets reached."""
    if ip.version != 6:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why connecting to ``ip`` is refused, or None when it is allowed.

    Metadata, link-local, multicast, unspecified and reserved addresses are refused always;
    loopback and private (non-global) addresses only unless ``allow_private``.
    """
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return address_problem(embedded, allow_private=allow_private)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:  # before is_reserved: ::1 lies in the reserved ::/8
        return None if allow_private else "a loopback address"
    for attribute, label in (
        ("is_unspecified", "an unspecified address"),
        ("is_multicast", "a multicast address"),
        ("is_link_local", "a link-local address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(ip, attribute):
            return label
    if allow_private:
        return None
    if not ip.is_global:
        return "a private address"
    return None


def resolve_vetted(target: Target, settings: Settings) -> list[str]:
    """All addresses the host resolves to, if every one of them is allowed.

    Refusing the whole host when any address is bad (rather than picking a good one) keeps a
    round-robin record with one internal address from being probed by retrying.
    """
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InputError("url_fetch_failed", f"could not resolve host {target.host!r}") from None
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        problem = address_problem(ip, allow_private=settings.url_allow_private)
        if problem is not None:
            log.info("url refused", extra={"host": target.host, "address": str(ip), "reason": problem})
            raise InputError("url_forbidden", f"the URL's host resolves to {problem}")
        if str(ip) not in addresses:
            addresses.append(str(ip))
    if not addresses:
        raise InputError("url_fetch_failed", f"host {target.host!r} has no usable address")
    return addresses


class Deadline:
    """One time budget shared by every hop of a download."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def check(self) -> None:
        if self.expired:
            raise InputError("url_timeout", f"the URL did not deliver within {self.seconds:g} s")


def _connect(target: Target, address: str, settings: Settings, deadline: Deadline) -> HTTPConnection:
    """An open connection to the pinned ``address``, speaking to ``target.host``."""
    timeout = min(settings.url_connect_timeout_s, deadline.remaining())
    if timeout <= 0:
        deadline.check()
    conn: HTTPConnection
    if target.scheme == "https":
        conn = HTTPSConnection(
            address,
            target.port,
            timeout=timeout,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
        )
    else:
        conn = HTTPConnection(address, target.port, timeout=timeout)
    conn.connect()
    assert conn.sock is not None
    conn.sock.settimeout(max(0.001, min(settings.url_read_timeout_s, deadline.remaining())))
    return conn


def _connect_any(
    target: Target, addresses: list[str], settings: Settings, deadline: Deadline
) -> HTTPConnection:
    last: Exception | None = None
    for address in addresses:
        try:
            return _connect(target, address, settings, deadline)
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            last = exc
            deadline.check()
    raise InputError("url_fetch_failed", f"could not connect to {target.host_header} ({type(last).__name__})")


@contextmanager
def _watchdog(sock: socket.socket, deadline: Deadline) -> Iterator[None]:
    """Shut the socket when the deadline passes, unblocking a read stuck on a slow server.

    Holds the socket itself: ``http.client`` drops the connection's reference once the response
    owns the stream. The socket is shut on the way out too, because closing alone leaves it open
    while the response's file object still references it, and the server would keep sending.
    """

    def cut() -> None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(deadline.remaining(), cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        cut()
        sock.close()


def _read_body(resp: urllib3.BaseHTTPResponse, max_bytes: int, deadline: Deadline) -> bytes:
    declared = resp.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = resp.read1(CHUNK_BYTES)
        if not chunk:
            # A watchdog cut looks like the end of the stream: tell the two apart.
            deadline.check()
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
        deadline.check()


def _too_large(max_bytes: int) -> InputError:
    return InputError("too_large", f"the image is larger than {max_bytes} bytes", status_code=413)


def _fetch_hop(target: Target, settings: Settings, deadline: Deadline) -> tuple[int, str | None, bytes]:
    """(status, redirect location, body); the body only for 2xx answers."""
    addresses = resolve_vetted(target, settings)
    deadline.check()
    conn = _connect_any(target, addresses, settings, deadline)
    assert conn.sock is not None
    with _watchdog(conn.sock, deadline):
        try:
            conn.request(
                "GET",
                target.path,
                headers={
                    "Host": target.host_header,
                    "User-Agent": USER_AGENT,
                    "Accept": "image/*",
                    "Accept-Encoding": "identity",
                    "Connection": "close",
                },
                preload_content=False,
                decode_content=False,
            )
            # Closing the response releases the last reference to the socket, so it really closes.
            with conn.getresponse() as resp:
                if resp.status in REDIRECT_STATUSES:
                    return resp.status, resp.headers.get("location"), b""
                if not 200 <= resp.status < 300:
                    return resp.status, None, b""
                return resp.status, None, _read_body(resp, settings.max_image_bytes, deadline)
        except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            deadline.check()
            if isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError):
                raise InputError("url_timeout", "the URL stopped sending data") from None
            raise InputError(
                "url_fetch_failed", f"the download from {target.host_header} failed ({type(exc).__name__})"
            ) from None


def fetch_image_url(url: str, settings: Settings) -> bytes:
    """The body of ``url`` (following at most ``settings.url_max_redirects`` redirects).

    Raises ``InputError``: 'invalid_url', 'url_forbidden', 'url_timeout', 'url_fetch_failed'
    (unreachable, too many redirects, non-2xx answer) or 'too_large' (413).
    """
    deadline = Deadline(settings.url_read_timeout_s)
    for _ in range(settings.url_max_redirects + 1):
        target = parse_target(url)
        status, location, body = _fetch_hop(target, settings, deadline)
        if status not in REDIRECT_STATUSES:
            if not 200 <= status < 300:
                raise InputError("url_fetch_failed", f"the URL answered HTTP {status}")
            return body
        if not location:
            raise InputError("url_fetch_failed", f"the URL answered HTTP {status} without a Location")
        url = urljoin(target.url, location)
    raise InputError("url_fetch_failed", f"more than {settings.url_max_redirects} redirects")
