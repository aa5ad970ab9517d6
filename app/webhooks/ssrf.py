"""SSRF guard for outbound webhooks: which addresses a delivery may connect to.

The host is resolved at delivery time (not at subscription time, when DNS may still point
elsewhere) and the request then goes to the vetted address itself, so a second lookup by the
HTTP client cannot be answered differently (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance-metadata endpoints of the common clouds (AWS/GCP/Azure/OpenStack, AWS IPv6,
# ECS task metadata, Alibaba). Refused even when private addresses are allowed: no
# development setup needs them and they hand out credentials.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)


class DeliveryRefused(Exception):
    """The target may not be contacted; the message says why (shown in the delivery log)."""


class HostUnresolved(OSError):
    """DNS gave no answer: a network fault like any other, so the attempt is retried."""


def refusal_reason(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why `address` is off limits, or None when a webhook may connect to it."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if allow_private:
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if not address.is_global:  # shared (CGNAT), reserved, documentation ranges
        return "a non-public address"
    return None


async def resolve_public_address(host: str, port: int, *, allow_private: bool) -> str:
    """Resolve `host` and return an address to connect to; DeliveryRefused if none may be used.

    Every address the name resolves to must pass: a name that mixes public and private
    answers is refused rather than raced.
    """
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise HostUnresolved(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
        except UnicodeError as exc:
            raise DeliveryRefused(f"invalid host name {host!r}: {exc}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise DeliveryRefused(f"host {host!r} has no address")
    for address in addresses:
        reason = refusal_reason(address, allow_private=allow_private)
        if reason is not None:
            lifted = refusal_reason(address, allow_private=True) is None
            hint = " (WEBHOOK_ALLOW_PRIVATE=true allows it for development)" if lifted else ""
            raise DeliveryRefused(f"host {host!r} resolves to {address}, {reason}{hint}")
    return str(addresses[0])
