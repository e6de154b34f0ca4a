"""The inline network policy. Addresses off this machine (link-local, private,
the API server's) are checked through the address check alone, never
connected to; the only traffic goes to 127.0.0.1."""

from __future__ import annotations

import ipaddress

import httpx2
import pytest

from kwf.operator.network import NetworkPolicy
from kwf.steps.transport import AddressRefused, IPAddress, bounded_client
from tests.fakes import Reply, ScriptedServer

DEFAULT = NetworkPolicy()
CLUSTER = NetworkPolicy.from_flags(deny_cidrs=["10.96.0.0/12", "192.168.0.0/16", "fd00:10::/64"])


def refusal(policy: NetworkPolicy, address: str, host: str | None = None) -> str | None:
    return policy.refusal(host or address, ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "a link-local address"),  # the cloud metadata service
        ("169.254.10.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("::ffff:169.254.169.254", "a link-local address"),  # the same, IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "a link-local address"),  # the same, through NAT64
        ("fd00:ec2::254", "a cloud metadata address"),
        ("127.0.0.1", "a loopback address"),
        ("127.3.2.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.251", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("255.255.255.255", "a reserved address"),
    ],
)
def test_addresses_refused_by_default(address: str, why: str) -> None:
    assert refusal(DEFAULT, address) == why
    assert refusal(CLUSTER, address) == why


def test_private_addresses_are_refused_where_the_operator_denies_their_range() -> None:
    assert refusal(DEFAULT, "10.96.0.10") is None  # private, but no range denied
    assert refusal(CLUSTER, "10.96.0.10") == "in 10.96.0.0/12, denied by --inline-deny-cidr"
    assert refusal(CLUSTER, "10.111.255.255") == "in 10.96.0.0/12, denied by --inline-deny-cidr"
    assert refusal(CLUSTER, "10.112.0.1") is None  # just past the range
    assert refusal(CLUSTER, "192.168.1.20") == "in 192.168.0.0/16, denied by --inline-deny-cidr"
    assert refusal(CLUSTER, "::ffff:192.168.1.20") == "in 192.168.0.0/16, denied by --inline-deny-cidr"
    assert refusal(CLUSTER, "fd00:10::7") == "in fd00:10::/64, denied by --inline-deny-cidr"
    assert refusal(CLUSTER, "172.16.0.1") is None
    assert refusal(CLUSTER, "93.184.215.14") is None


async def test_the_api_servers_addresses_are_refused() -> None:
    policy = await DEFAULT.with_api_server("https://10.0.0.1:6443")
    assert refusal(policy, "10.0.0.1") == "an address of the Kubernetes API server"
    assert refusal(policy, "::ffff:10.0.0.1") == "an address of the Kubernetes API server"
    assert refusal(policy, "10.0.0.2") is None
    named = await DEFAULT.with_api_server("https://localhost:6443")  # resolved, not connected to
    assert ipaddress.ip_address("127.0.0.1") in named.api_server


def test_the_allowlist_wins() -> None:
    policy = NetworkPolicy.from_flags(
        deny_cidrs=["10.0.0.0/8"],
        allow_cidrs=["10.1.0.0/16", "127.0.0.1/32"],
        allow_hosts=["LLM.internal."],
    )
    assert refusal(policy, "10.1.2.3") is None
    assert refusal(policy, "10.2.0.1") == "in 10.0.0.0/8, denied by --inline-deny-cidr"
    assert refusal(policy, "127.0.0.1") is None
    assert refusal(policy, "127.0.0.2") == "a loopback address"  # only what the list says
    assert refusal(policy, "169.254.169.254", host="llm.internal") is None
    assert refusal(policy, "169.254.169.254", host="other.internal") == "a link-local address"


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"deny_cidrs": ["10.0.0.0/33"]}, "--inline-deny-cidr: '10.0.0.0/33' is not a CIDR"),
        ({"allow_cidrs": ["localhost"]}, "--inline-allow-cidr: 'localhost' is not a CIDR"),
    ],
)
def test_a_bad_flag_is_named(flags: dict[str, list[str]], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        NetworkPolicy.from_flags(**flags)


# ------------------------------------------------ the transport, on 127.0.0.1 only


def client(policy: NetworkPolicy) -> httpx2.AsyncClient:
    return bounded_client(check=policy.refusal, follow_redirects=True)


async def test_loopback_is_refused_by_default_and_allowed_through_the_allowlist() -> None:
    with ScriptedServer({"/": Reply(200, "hello")}) as server:
        async with client(DEFAULT) as refused:
            with pytest.raises(AddressRefused, match=r"^127\.0\.0\.1 is a loopback address"):
                await refused.get(server.url + "/")
        assert server.requests == []
        async with client(NetworkPolicy.from_flags(allow_cidrs=["127.0.0.1/32"])) as allowed:
            assert (await allowed.get(server.url + "/")).text == "hello"
        assert len(server.requests) == 1


class Names:
    """A resolver with fixed answers, counting its questions (the I/O edge, faked)."""

    def __init__(self, **answers: list[str]) -> None:
        self.answers = {name.replace("_", "."): answer for name, answer in answers.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        return [ipaddress.ip_address(a) for a in self.answers[host]]


async def test_every_address_a_name_resolves_to_is_checked() -> None:
    names = Names(mixed_test=["127.0.0.1", "169.254.169.254"])
    with ScriptedServer({"/": Reply(200, "hello")}) as server:
        policy = NetworkPolicy.from_flags(allow_cidrs=["127.0.0.1/32"])
        async with bounded_client(check=policy.refusal, resolve=names) as checked:
            with pytest.raises(
                AddressRefused, match=r"^mixed\.test resolves to 169\.254\.169\.254, a link-local"
            ):
                await checked.get(f"http://mixed.test:{server.port}/")
        assert server.requests == []


async def test_the_connection_goes_to_the_checked_address_not_to_the_name_again() -> None:
    # No system resolver knows "service.test": the request can only arrive if the
    # connection used the address that was resolved and checked, once.
    names = Names(service_test=["127.0.0.1"])
    with ScriptedServer({"/": Reply(200, "hello")}) as server:
        policy = NetworkPolicy.from_flags(allow_cidrs=["127.0.0.1/32"])
        async with bounded_client(check=policy.refusal, resolve=names) as checked:
            answer = await checked.get(f"http://service.test:{server.port}/")
        (request,) = server.requests
    assert answer.text == "hello"
    assert names.asked == ["service.test"]
    assert request.headers["host"] == f"service.test:{server.port}"  # the name is kept for the server


async def test_each_redirect_hop_is_checked_again() -> None:
    # 127.0.0.1 is allowed, 127.0.0.2 (loopback too) is not: the redirect's hop is refused.
    with ScriptedServer() as server:
        server.script("/start", Reply(302, headers={"Location": f"http://127.0.0.2:{server.port}/next"}))
        server.script("/same", Reply(302, headers={"Location": f"{server.url}/end"}))
        server.script("/end", Reply(200, "end"))
        async with client(NetworkPolicy.from_flags(allow_cidrs=["127.0.0.1/32"])) as checked:
            with pytest.raises(AddressRefused, match=r"^127\.0\.0\.2 is a loopback address"):
                await checked.get(f"{server.url}/start")
            assert (await checked.get(f"{server.url}/same")).text == "end"
        assert [r.path for r in server.requests] == ["/start", "/same", "/end"]
