"""transforms.phones: the vectorized fast paths give exactly libphonenumber's answer, in every region."""
from __future__ import annotations

import random

import phonenumbers
import pyarrow as pa
import pytest

from transforms import phones
from transforms.phone_metadata import library, tables


def _numbers(region: str, rng: random.Random, n: int) -> list[str]:
    """Numbers as people write them in ``region`` and abroad: with and without the country code,
    the national prefix, 00, random lengths and the region's own example numbers."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    code, prefix = str(metadata.country_code), metadata.national_prefix or ""
    example = metadata.general_desc.example_number or (metadata.mobile.example_number if metadata.mobile else None) or ""
    out = []
    for _ in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 14)))
        if example and rng.random() < 0.4:
            digits = example[:-3] + "".join(rng.choice("0123456789") for _ in range(3))
        if rng.random() < 0.5:
            out.append("+" + code + rng.choice(["", prefix, "0"]) + digits)
        else:
            out.append(rng.choice(["", prefix, "00", "0", code]) + digits)
    return out


def test_fast_paths_agree_with_the_library_in_every_region():
    rng = random.Random(5)
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        values = _numbers(region, rng, 60)
        expected = [library(v, None if v.startswith("+") else region) for v in values]
        assert phones.to_e164(pa.array(values), region).to_pylist() == expected, region


def test_common_numbers_take_the_vectorized_paths(monkeypatch):
    calls = []
    monkeypatch.setattr(phones, "library", lambda v, r: calls.append(v) or library(v, r))
    values = ["+33 6 12 34 56 78", "+33612345678", "06 12 34 56 78", "+44 7700 900123", "+1 212-555-0142",
              "+49 30 123456", "09 87 65 43 21"]
    out = phones.to_e164(pa.array(values), "FR").to_pylist()
    assert out[:5] == ["+33612345678", "+33612345678", "+33612345678", "+447700900123", "+12125550142"]
    assert calls == []  # FR's national numbers and plain international ones never reach the library
    phones.to_e164(pa.array(["+44 (0)7700 900123", "0033 (0)6 12 34 56 78"]), "FR")
    assert len(calls) == 2  # a written trunk prefix, an IDD under a region: the library decides


@pytest.mark.parametrize("region", ["FR", "GB", "US", "DE", "JP", "AR", "BR"])
def test_region_tables_build(region):
    info = tables().region(region)
    assert info is None or info.country.code == phonenumbers.country_code_for_region(region)


def test_a_placeholder_under_the_shortest_national_number_is_never_taken_for_one_without_its_country_code():
    """without_country_code (a number only a default region reads) leaves out what no region reads:
    under libphonenumber's shortest possible national number of any country ('0', '000': a CRM's
    placeholders), which failed an international extract's export asking for a default region."""
    from transforms.phone_metadata import MIN_NATIONAL, _possible_lengths

    shortest = min(int(_possible_lengths(code).nonzero()[0][0]) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
                   if _possible_lengths(code).any())
    assert shortest == MIN_NATIONAL
    assert [library("0" * MIN_NATIONAL, r) for r in ("SH", "NU")] != [None, None]
    values = ["0", "000", "12 3", "1234", "06 12 34 56 78", "+33612345678", "0033612345678", "", None]
    assert phones.without_country_code(pa.array(values)).tolist() == [False, False, False, True, True,
                                                                      False, False, False, False]
