"""Which country a client's address is in: what fraud rules read as `:ip_country:`.

A table of networks and the country each is in, searched by bisection, so a full table of
a few hundred thousand networks costs one lookup of about twenty comparisons. A deployment
points `CLEARLINE_IP_COUNTRIES` at a CSV of `network,country` rows (a geolocation vendor's
country table, reduced to those two columns). Without one, the sandbox's table places only
the documentation networks (RFC 5737, RFC 3849), so that tests and examples can name an
address in a known country; any other address is in no known country, and a rule on
`:ip_country:` stays undecided for it rather than guessing.
"""

from __future__ import annotations

import bisect
import csv
import ipaddress
import itertools
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path

IP_COUNTRIES_ENV = "CLEARLINE_IP_COUNTRIES"

SANDBOX_NETWORKS: tuple[tuple[str, str], ...] = (
    ("192.0.2.0/24", "US"),
    ("198.51.100.0/24", "GB"),
    ("203.0.113.0/24", "BR"),
    ("2001:db8::/32", "DE"),
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpCountries:
    """Networks and their countries. Networks may not overlap: a table where they do has
    no one answer for an address in both, so it is refused when loaded."""

    def __init__(self, rows: Iterable[tuple[str, str]]) -> None:
        networks: list[tuple[int, int, int, str]] = []
        for network_text, country in rows:
            network: Network = ipaddress.ip_network(network_text.strip(), strict=False)
            code = country.strip().upper()
            if len(code) != 2 or not code.isalpha():
                raise ValueError(f"{code!r} (for {network_text}) is not a two-letter country")
            first, last = int(network.network_address), int(network.broadcast_address)
            networks.append((network.version, first, last, code))
        networks.sort()
        for before, after in itertools.pairwise(networks):
            if before[0] == after[0] and after[1] <= before[2]:
                raise ValueError("the table's networks overlap")
        self._starts = [(version, first) for version, first, _, _ in networks]
        self._entries = networks

    @classmethod
    def from_csv(cls, path: Path) -> IpCountries:
        with path.open(newline="", encoding="utf-8") as rows:
            found = [
                (row[0], row[1])
                for row in csv.reader(rows)
                if len(row) >= 2 and row[0].strip() and not row[0].startswith(("#", "network"))
            ]
        return cls(found)

    def country(self, address: str | None) -> str | None:
        """The country of an address, or None: no address, not an address, or not in the
        table."""
        if not address:
            return None
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener's view of an IPv4 client
        at = bisect.bisect_right(self._starts, (ip.version, int(ip))) - 1
        if at < 0:
            return None
        version, first, last, code = self._entries[at]
        return code if version == ip.version and first <= int(ip) <= last else None


@cache
def ip_countries() -> IpCountries:
    """This environment's table, loaded once per process."""
    path = os.environ.get(IP_COUNTRIES_ENV, "")
    return IpCountries.from_csv(Path(path)) if path else IpCountries(SANDBOX_NETWORKS)
