"""Which country a client's address is in, for `:ip_country:`."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearline.ip_geolocation import IP_COUNTRIES_ENV, IpCountries, ip_countries


def test_the_sandbox_places_the_documentation_networks() -> None:
    table = IpCountries((("192.0.2.0/24", "US"), ("198.51.100.0/24", "gb")))
    assert table.country("192.0.2.0") == "US"
    assert table.country("192.0.2.255") == "US"
    assert table.country("198.51.100.9") == "GB"  # codes are kept upper case
    assert table.country("::ffff:198.51.100.9") == "GB"  # an IPv4 client on a dual stack
    for nowhere in ("192.0.3.0", "10.0.0.1", "2001:db8::1", "not an address", "", None):
        assert table.country(nowhere) is None, nowhere


def test_versions_are_searched_apart() -> None:
    # 0.0.0.0/8 and ::/104 hold the same integers: only an address's own version answers.
    table = IpCountries((("0.0.0.0/8", "AQ"), ("2001:db8::/32", "DE")))
    assert table.country("0.0.0.1") == "AQ"
    assert table.country("::1") is None
    assert table.country("2001:db8:ffff::1") == "DE"


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ((("192.0.2.0/24", "US"), ("192.0.2.128/25", "GB")), "overlap"),
        ((("192.0.2.0/24", "USA"),), "two-letter"),
        ((("192.0.2.0/33", "US"),), "192.0.2.0/33"),
    ],
)
def test_a_table_without_one_answer_per_address_is_refused(
    rows: tuple[tuple[str, str], ...], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        IpCountries(rows)


def test_a_deployment_loads_its_own_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "countries.csv"
    table.write_text("network,country\n# reduced from a vendor's table\n100.64.0.0/10,NL\n")
    monkeypatch.setenv(IP_COUNTRIES_ENV, str(table))
    ip_countries.cache_clear()
    try:
        assert ip_countries().country("100.64.1.2") == "NL"
        assert ip_countries().country("192.0.2.1") is None  # the sandbox's is not merged in
    finally:
        ip_countries.cache_clear()
    monkeypatch.delenv(IP_COUNTRIES_ENV)
    assert ip_countries().country("192.0.2.1") == "US"
