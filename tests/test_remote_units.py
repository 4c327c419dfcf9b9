"""The ZAP decision and the tenant limiter, without sockets."""

from __future__ import annotations

import zmq
import zmq.utils.z85

from convergiod.security.limits import TenantLimiter, TenantLimits
from convergiod.security.registry import ClientRecord
from convergiod.security.zap import answer

PUBLIC, _ = zmq.curve_keypair()
KEY = PUBLIC.decode()
LISTED = {KEY: ClientRecord(name="phone", public_key=KEY, tenant="a", role="user", created=0)}


def _request(mechanism: bytes, *creds: bytes, domain: bytes = b"convergio") -> list[bytes]:
    return [b"peer", b"", b"1.0", b"7", domain, b"10.0.0.2", b"", mechanism, *creds]


def test_zap_accepts_a_listed_curve_key_with_its_key_as_user_id() -> None:
    reply, line = answer(_request(b"CURVE", zmq.utils.z85.decode(PUBLIC)), LISTED.get)
    assert reply == [b"peer", b"", b"1.0", b"7", b"200", b"OK", PUBLIC, b""]
    assert "phone" in line


def test_zap_refuses_unlisted_keys_other_mechanisms_and_other_domains() -> None:
    other, _ = zmq.curve_keypair()
    cases = [
        _request(b"CURVE", zmq.utils.z85.decode(other)),
        _request(b"NULL"),
        _request(b"PLAIN", b"user", b"pass"),
        _request(b"CURVE", zmq.utils.z85.decode(PUBLIC), domain=b""),
    ]
    for frames in cases:
        reply, _ = answer(frames, LISTED.get)
        assert reply[4] == b"400" and reply[6] == b"", frames


def test_zap_drops_malformed_requests() -> None:
    assert answer([b"peer", b"x"], LISTED.get)[0] == []


def test_limiter_refills_at_the_rate_and_counts_in_flight_per_tenant() -> None:
    now = [0.0]
    limiter = TenantLimiter(
        limits_for=lambda t: TenantLimits(rate=10.0, burst=2, max_in_flight=1),
        clock=lambda: now[0],
    )
    assert limiter.admit("a") is None and limiter.admit("a") is None
    wait = limiter.admit("a")
    assert wait is not None and abs(wait - 0.1) < 1e-9
    assert limiter.admit("b") is None  # another tenant has its own bucket
    now[0] = 0.1
    assert limiter.admit("a") is None
    assert limiter.enter("a") is None and limiter.enter("a") == 1
    assert limiter.enter("b") is None
    limiter.leave("a")
    assert limiter.enter("a") is None
