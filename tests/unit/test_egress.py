"""Where webhooks may go: the address policy, and the pinned connection that sends them."""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clearline import egress
from clearline.config import (
    WEBHOOK_ALLOW_LOOPBACK_ENV,
    WEBHOOK_SECRETS_KEY_ENV,
    parse_loopback_setting,
)
from clearline.egress import EgressPolicy, IPAddress, Refused, Unresolvable, refusal
from clearline.topology import TOPOLOGY
from clearline_local.environment import function_environment

STRICT = EgressPolicy()
LOCAL = EgressPolicy(loopback_for_test_mode=True, refused_loopback_ports=frozenset({4242, 5000}))


# ---- the address policy ---------------------------------------------------------------------

REFUSED = [
    # (address, what the refusal must name)
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "instance metadata service"),
    ("169.254.170.2", "container credentials endpoint"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fd00:ec2::254", "instance metadata service"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"),
    ("224.0.1.1", "multicast"),  # globally scoped multicast: is_global alone lets it through
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("0.1.2.3", "private"),  # "this network": Linux connects it to the local host
    ("fd00::1", "unique local"),
    ("fc00::1", "unique local"),
    ("fec0::1", "site-local"),  # deprecated, and not flagged by is_global on 3.11
    ("192.0.2.1", "private"),  # documentation ranges
    ("198.18.0.1", "private"),  # benchmarking
    ("2001:db8::1", "private"),
    ("::8.8.8.8", "reserved"),  # the deprecated IPv4-compatible form
    # IPv4-mapped forms: judged by the IPv4 address they lead to
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, a loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, a private"),
    ("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254, a link-local"),
    ("::ffff:100.64.0.1", "IPv4-mapped form of 100.64.0.1, in the carrier-grade NAT"),
    # NAT64, the well-known prefix (64:ff9b::/96)
    ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1, a loopback"),
    ("64:ff9b::a00:1", "NAT64 form of 10.0.0.1, a private"),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254, a link-local"),
    # NAT64, the local-use prefix (64:ff9b:1::/48): never globally reachable, wherever its
    # operator places the IPv4 address (here as for a /96, then as for a /48)
    ("64:ff9b:1::a00:1", "NAT64 form of 10.0.0.1, a private"),
    ("64:ff9b:1:a00:0:100::", "local-use NAT64 prefix"),
    ("64:ff9b:1::808:808", "local-use NAT64 prefix"),
    # 6to4 and Teredo
    ("2002:a00:1::1", "6to4 form of 10.0.0.1, a private"),
    ("2002:a9fe:a9fe::1", "6to4 form of 169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo form of 10.0.0.1, a private"),
]

PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "named"), REFUSED, ids=[a for a, _ in REFUSED])
def test_addresses_that_are_not_public_are_refused(address: str, named: str) -> None:
    why = refusal(ip_address(address))
    assert why is not None
    assert why.startswith(f"{ip_address(address)} is ")
    assert named in why


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ip_address(address)) is None


@pytest.mark.parametrize(("address", "named"), REFUSED, ids=[a for a, _ in REFUSED])
def test_allowing_loopback_allows_nothing_else(address: str, named: str) -> None:
    plain_loopback = address in ("127.0.0.1", "127.8.9.10", "::1")
    assert (refusal(ip_address(address), loopback_ok=True) is None) == plain_loopback


# ---- URLs: scheme, mode, resolution ---------------------------------------------------------


def resolving(answers: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in answers:
            raise Unresolvable(f"Cannot resolve {host}.")
        return [ip_address(a) for a in answers[host]]

    return resolve


@pytest.mark.parametrize(
    ("url", "livemode", "message"),
    [
        ("ftp://shop.example/hooks", False, "absolute http(s) URL"),
        ("/hooks", False, "absolute http(s) URL"),
        ("https://shop.example:99999/hooks", False, "absolute http(s) URL"),
        ("http://93.184.216.34/hooks", False, "must use https"),  # http only to loopback
        ("http://93.184.216.34/hooks", True, "Live-mode webhook URLs must use https"),
        ("https://127.0.0.1/hooks", False, "127.0.0.1 is a loopback address"),
        ("https://localhost/hooks", False, "localhost resolves to 127.0.0.1, a loopback"),
        ("https://[::ffff:a9fe:a9fe]/latest", False, "instance metadata service"),
        ("https://2130706433/hooks", False, "loopback"),  # 127.0.0.1 as one number
        ("https://split.example/hooks", False, "split.example resolves to 10.0.0.1"),
    ],
)
def test_strict_policy_refuses(url: str, livemode: bool, message: str) -> None:
    policy = EgressPolicy(
        resolver=resolving(
            {
                "localhost": ["127.0.0.1"],
                "2130706433": ["127.0.0.1"],
                "split.example": ["93.184.216.34", "10.0.0.1"],  # one bad address is enough
            }
        )
    )
    with pytest.raises(Refused) as refused:
        policy.check(url, livemode=livemode)
    assert message in refused.value.message


def test_strict_policy_resolves_once_and_keeps_every_address() -> None:
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[IPAddress]:
        calls.append((host, port))
        return [ip_address("93.184.216.34"), ip_address("2606:2800:220:1::")]

    destination = EgressPolicy(resolver=resolve).check(
        "https://shop.example/hooks?v=1", livemode=True
    )
    assert calls == [("shop.example", 443)]
    assert destination.addresses == (ip_address("93.184.216.34"), ip_address("2606:2800:220:1::"))
    assert (destination.scheme, destination.host, destination.port) == (
        "https",
        "shop.example",
        443,
    )
    assert destination.target == "/hooks?v=1"


def test_an_unresolvable_host_is_refused_as_such() -> None:
    with pytest.raises(Unresolvable):
        EgressPolicy(resolver=resolving({})).check("https://nowhere.example/", livemode=True)


def test_the_local_policy_allows_loopback_in_test_mode_only() -> None:
    destination = LOCAL.check("http://127.0.0.1:3000/hooks", livemode=False)
    assert destination.addresses == (ip_address("127.0.0.1"),)
    for url in ("http://127.0.0.1:3000/hooks", "https://127.0.0.1:3000/hooks"):
        with pytest.raises(Refused):
            LOCAL.check(url, livemode=True)  # live mode: always the strict rules


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:4242/v1/charges",  # the stack's own ports
        "http://[::1]:5000/_sandbox/faults",
        "http://10.0.0.1:3000/hooks",  # everything but loopback stays refused
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[::ffff:127.0.0.1]:3000/",  # loopback in another form does not count
        "http://0.0.0.0:3000/",
    ],
)
def test_the_local_policy_refuses_everything_else(url: str) -> None:
    with pytest.raises(Refused):
        LOCAL.check(url, livemode=False)


def test_the_loopback_setting_lists_the_ports_that_stay_refused() -> None:
    assert parse_loopback_setting(None) is None
    assert parse_loopback_setting("") is None
    assert parse_loopback_setting("4242, 5000") == frozenset({4242, 5000})
    for bad in ("yes", "70000"):
        with pytest.raises(ValueError):
            parse_loopback_setting(bad)


def test_resolve_host_answers_literals_without_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a literal needs no lookup")

    monkeypatch.setattr(egress.socket, "getaddrinfo", no_dns)
    assert egress.resolve_host("10.0.0.1", 80) == [ip_address("10.0.0.1")]
    assert egress.resolve_host("::1", 80) == [ip_address("::1")]


# ---- the pinned connection ------------------------------------------------------------------


class Receiver:
    """Records every request it gets (path, Host header, SNI over TLS) and answers `status`
    (with a Location header, for a redirect)."""

    def __init__(
        self, status: int = 200, tls: ssl.SSLContext | None = None, location: str = ""
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.server_names: list[str | None] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {"path": self.path, "host": self.headers["Host"], "body": body}
                )
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: receiver.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.close()


def once(answers: dict[str, str]) -> Any:
    """A resolver that answers each host once; a second lookup fails the test."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[IPAddress]:
        assert host not in asked, f"{host} was resolved twice"
        asked.append(host)
        return [ip_address(answers[host])]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def test_the_post_goes_to_the_checked_address_with_the_host_name(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve = once({"hooks.test": "127.0.0.1"})
    policy = EgressPolicy(loopback_for_test_mode=True, resolver=resolve)
    destination = policy.check(f"http://hooks.test:{receiver.port}/in?x=1", livemode=False)

    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the connection must not look the host up again")

    monkeypatch.setattr(egress.socket, "getaddrinfo", no_dns)
    reply = egress.post(destination, b'{"ok": true}', {"X-Test": "1"}, timeout=5)
    assert (reply.status, reply.error) == (200, None)
    assert resolve.asked == ["hooks.test"]
    (request,) = receiver.requests
    assert request == {
        "path": "/in?x=1",
        "host": f"hooks.test:{receiver.port}",
        "body": b'{"ok": true}',
    }


def test_an_address_that_does_not_answer_is_skipped_for_the_next_checked_one(
    receiver: Receiver,
) -> None:
    destination = egress.Destination(
        url="http://hooks.test/",
        scheme="http",
        host="hooks.test",
        port=receiver.port,
        target="/",
        addresses=(ip_address("127.0.0.2"), ip_address("127.0.0.1")),
    )
    # 127.0.0.2 refuses the connection (nothing listens there on this port).
    reply = egress.post(destination, b"{}", {}, timeout=5)
    assert reply.status == 200
    assert len(receiver.requests) == 1


def test_a_redirect_is_a_failed_answer_and_is_never_followed() -> None:
    target = Receiver()
    redirecting = Receiver(status=302, location=f"http://127.0.0.1:{target.port}/stolen")
    try:
        destination = LOCAL.check(f"http://127.0.0.1:{redirecting.port}/hooks", livemode=False)
        reply = egress.post(destination, b"{}", {}, timeout=5)
        assert reply.status == 302
        assert reply.error is not None and "redirects are not followed" in reply.error
        assert len(redirecting.requests) == 1
        assert target.requests == []
    finally:
        target.close()
        redirecting.close()


# ---- TLS: SNI and certificate checks are for the host name, not the address -----------------


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, bytes]:
    """A server context with a self-signed certificate for `name`, and the certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return server, pem


def test_https_is_pinned_yet_verified_against_the_host_name(tmp_path: Path) -> None:
    server_context, pem = _certificate(tmp_path, "hooks.test")
    receiver = Receiver(tls=server_context)
    try:
        trusting = ssl.create_default_context(cadata=pem.decode())
        policy = EgressPolicy(
            loopback_for_test_mode=True, resolver=once({"hooks.test": "127.0.0.1"})
        )
        destination = policy.check(f"https://hooks.test:{receiver.port}/in", livemode=False)
        reply = egress.post(destination, b"{}", {}, timeout=5, context=trusting)
        assert (reply.status, reply.error) == (200, None)
        assert receiver.server_names == ["hooks.test"]  # SNI names the host, not 127.0.0.1
        assert receiver.requests[0]["host"] == f"hooks.test:{receiver.port}"
    finally:
        receiver.close()


def test_https_refuses_a_certificate_for_another_name(tmp_path: Path) -> None:
    server_context, pem = _certificate(tmp_path, "other.test")
    receiver = Receiver(tls=server_context)
    try:
        trusting = ssl.create_default_context(cadata=pem.decode())
        policy = EgressPolicy(
            loopback_for_test_mode=True, resolver=once({"hooks.test": "127.0.0.1"})
        )
        destination = policy.check(f"https://hooks.test:{receiver.port}/in", livemode=False)
        reply = egress.post(destination, b"{}", {}, timeout=5, context=trusting)
        assert reply.status is None
        assert reply.error is not None and "CERTIFICATE_VERIFY_FAILED" in reply.error
        assert receiver.requests == []
    finally:
        receiver.close()


# ---- the local stack's allowance --------------------------------------------------------------


def test_the_local_stack_tells_only_the_api_and_the_dispatcher() -> None:
    extra = {WEBHOOK_ALLOW_LOOPBACK_ENV: "4242", WEBHOOK_SECRETS_KEY_ENV: "arn:key", "X": "1"}
    for spec in TOPOLOGY.functions:
        env = function_environment(
            TOPOLOGY,
            spec.key,
            aws_endpoint_url="http://127.0.0.1:1",
            processor_url="http://127.0.0.1:2",
            extra=extra,
        )
        told = spec.key in ("api", "webhooks")
        assert (WEBHOOK_ALLOW_LOOPBACK_ENV in env) == told, spec.key
        assert (WEBHOOK_SECRETS_KEY_ENV in env) == told, spec.key
        assert env["X"] == "1"  # the stack's other settings reach every function
