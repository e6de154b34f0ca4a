"""Where inline steps may connect: the operator's network policy.

An inline http or llm step runs inside the operator, with the operator's
network position: without a policy, a tenant could reach the cloud's metadata
service, the operator's own loopback, the API server or other pods. So inline
steps refuse loopback, link-local (the metadata address among them),
unspecified, multicast and reserved addresses, the API server's addresses and
the CIDRs the operator is told to deny (``--inline-deny-cidr``: the cluster's
pod and service ranges). An operator's allowlist (``--inline-allow-cidr``,
``--inline-allow-host``) lets chosen ones through.

The check is pure, takes an address that was already resolved, and is the one
place that decides; the transport (kwf.steps.transport) resolves, asks it about
every address, and connects to a checked address only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from kwf.steps.transport import IPAddress, as_address, system_resolve

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Address classes refused unless allowed, in the words a refusal uses.
ALWAYS_DENIED: tuple[tuple[str, tuple[Network, ...]], ...] = tuple(
    (why, tuple(ipaddress.ip_network(n) for n in networks))
    for why, networks in (
        ("a loopback address", ("127.0.0.0/8", "::1/128")),
        ("a link-local address", ("169.254.0.0/16", "fe80::/10")),
        ("a cloud metadata address", ("fd00:ec2::254/128",)),
        ("an unspecified address", ("0.0.0.0/8", "::/128")),
        ("a multicast address", ("224.0.0.0/4", "ff00::/8")),
        ("a reserved address", ("240.0.0.0/4",)),
    )
)
#: IPv6 forms that carry an IPv4 address: checked as that address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_networks(values: Iterable[str], flag: str) -> tuple[Network, ...]:
    """CIDRs (or single addresses) given to ``flag``; ValueError naming the flag."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as error:
            raise ValueError(f"{flag}: {value!r} is not a CIDR or an address ({error})") from None
    return tuple(networks)


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped or NAT64 IPv6 address stands for, else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@dataclasses.dataclass(frozen=True)
class NetworkPolicy:
    """What inline steps may reach. ``api_server`` holds the API server's addresses."""

    deny: tuple[Network, ...] = ()
    allow: tuple[Network, ...] = ()
    allow_hosts: frozenset[str] = frozenset()
    api_server: frozenset[IPAddress] = frozenset()

    @classmethod
    def from_flags(
        cls, deny_cidrs: Iterable[str] = (), allow_cidrs: Iterable[str] = (), allow_hosts: Iterable[str] = ()
    ) -> NetworkPolicy:
        return cls(
            deny=parse_networks(deny_cidrs, "--inline-deny-cidr"),
            allow=parse_networks(allow_cidrs, "--inline-allow-cidr"),
            allow_hosts=frozenset(h.strip().lower().rstrip(".") for h in allow_hosts if h.strip()),
        )

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why ``host``, resolved to ``address``, must not be reached; None: it may be."""
        if host.lower().rstrip(".") in self.allow_hosts:
            return None
        plain = unwrap(address)
        if any(plain in network for network in self.allow if network.version == plain.version):
            return None
        for why, networks in ALWAYS_DENIED:
            if any(plain in network for network in networks if network.version == plain.version):
                return why
        if plain in self.api_server or address in self.api_server:
            return "an address of the Kubernetes API server"
        for network in self.deny:
            if network.version == plain.version and plain in network:
                return f"in {network}, denied by --inline-deny-cidr"
        return None

    async def with_api_server(self, server_url: str) -> NetworkPolicy:
        """This policy with the addresses the API server's host resolves to (now)."""
        host = urlsplit(server_url).hostname or ""
        literal = as_address(host)
        if literal is not None:
            found = {literal}
        else:
            try:
                found = set(await system_resolve(host, 443))
            except OSError:
                found = set()  # not resolvable from here: nothing of it to refuse
        found |= {unwrap(a) for a in found}
        return dataclasses.replace(self, api_server=self.api_server | frozenset(found))

    def describe(self) -> str:
        parts = []
        if self.allow or self.allow_hosts:
            allowed = [str(n) for n in self.allow] + sorted(self.allow_hosts)
            parts.append("allowing " + ", ".join(allowed))
        if self.deny:
            parts.append("denying " + ", ".join(str(n) for n in self.deny))
        return "; ".join(parts) or "the default inline network policy"
