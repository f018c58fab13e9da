"""benchmarks/tissue_agreement.py reads the H&E patients of H&E-only and joint runs."""

from __future__ import annotations

from tests.conftest import load_benchmark


def test_each_row_names_its_histo_patients() -> None:
    histo_patients = load_benchmark("tissue_agreement").histo_patients
    # A joint run's pseudo-pair, an H&E-only run's unit, and a unit of two H&E patients.
    assert histo_patients({"unit_id": "pseudo-0012", "histo_patients": "ucsb-a"}) == ["ucsb-a"]
    assert histo_patients({"unit_id": "breakhis-b"}) == ["breakhis-b"]
    assert histo_patients({"unit_id": "pair-7", "histo_patients": "h1;h2"}) == ["h1", "h2"]
