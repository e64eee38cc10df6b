"""benchmarks/ua_core.py runs in the SIP core's steady state: more calls in a row than the
transaction layer's cap would hold if their transactions never expired (it failed its first
3,000-call round when its calls came 1 ms apart: 4,096 calls' INVITE and BYE transactions filled
the 8,192 live ones and the next INVITE got a stateless 503)."""

from __future__ import annotations

from benchmarks import ua_core
from sip.endpoint import Endpoint
from sip.ua import UserAgent


def test_the_sip_core_benchmark_places_more_calls_than_the_transaction_cap_holds() -> None:
    ua = UserAgent(
        local_endpoints={"udp": Endpoint("udp", "127.0.0.1", 5060)},
        trusted_source=lambda ip: "pbx",
    )
    now = ua_core.run(ua, 0, 4500, 0.0)  # asserts every INVITE becomes an IncomingCall
    assert abs(now - 4500 * ua_core.CALL_INTERVAL) < 1e-6
    assert ua.stats.overloaded == 0 and not ua.calls
