"""The cloud price catalogue: every entry dated and sourced, the offerings the issue names."""

from __future__ import annotations

import re

import pytest

from toolkit.costs.pricing import load_catalogue, lookup
from toolkit.errors import BadInput


def test_every_entry_is_dated_and_sourced():
    catalogue = load_catalogue()
    assert len(catalogue) >= 20
    for name, entry in catalogue.items():
        assert entry.name == name, f"{name}: file name and name differ"
        assert re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", entry.as_of), f"{name}: as_of {entry.as_of!r}"
        assert len(entry.source) > 10, name
        assert entry.currency == "USD"
        for workload, figure in entry.throughput.items():
            assert figure.get("source") and figure.get("conditions"), f"{name} {workload}"


def test_the_offerings_the_issue_asks_for():
    instances = [e for e in load_catalogue().values() if e.kind == "instance"]
    accelerators = " ".join(e.accelerator for e in instances)
    for chip in ("T4", "A10G", "L4", "Inferentia2", "H100", "CPU"):
        assert chip in accelerators, chip
    apis = [e for e in load_catalogue().values() if e.kind == "api"]
    assert any("price_per_1m_input_tokens" in e.prices for e in apis)
    assert any("price_per_request" in e.prices for e in apis)


def test_lookup_by_alias_and_close_matches():
    assert lookup("g4dn.xlarge", "instance").name == "aws-g4dn-xlarge"
    assert lookup("GPT-4o-mini", "api").prices == {"price_per_1m_input_tokens": "0.15",
                                                   "price_per_1m_output_tokens": "0.6"}
    with pytest.raises(BadInput, match=r"unknown instance 'aws-g5-xlarg' \(did you mean aws-g5-xlarge"):
        lookup("aws-g5-xlarg", "instance")
    with pytest.raises(BadInput, match="unknown instance 'gpt-4o'"):
        lookup("gpt-4o", "instance")  # an API is not an instance
