"""The fuzz corpus, sampled (every corruption at least once): ingest accounts for every
file, admits nothing that preprocessing refuses, and the service answers every file with
200 or a JSON 4xx and keeps serving. The whole corpus: ``benchmarks/fuzz_corpus.py``."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.fuzz_corpus import audit_ingest, audit_service, make_corpus
from tests.serve.conftest import mammogram, png

# One file per (modality, corruption) and a few more: the whole corpus is for the benchmark.
SAMPLE = 90


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "corpus"
    make_corpus(root, sample=SAMPLE, seed=0)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["mammo", "histo"])
def test_every_file_is_admitted_or_skipped_with_a_reason(corpus, modality, tmp_path):
    audit = audit_ingest(corpus, modality, tmp_path, workers=2)
    assert len(audit.files) > 40
    assert audit.unaccounted == []
    assert all(reason.strip() for reason in audit.skipped.values())
    assert audit.preprocessing_failures == {}
    # Both outcomes occur: the corpus holds valid files and broken ones.
    assert len(audit.admitted) >= 5 and len(audit.skipped) >= 30


@pytest.mark.slow
def test_the_service_answers_every_file_with_200_or_a_json_4xx(client, corpus):
    answers = audit_service(client, corpus, png(mammogram()))
    statuses = Counter(status for status, _ in answers.values())
    assert set(statuses) <= {200, 408, 413, 415, 422}, statuses
    assert all(kind.startswith("application/json") for _, kind in answers.values())
    assert statuses[200] >= 8 and sum(statuses.values()) - statuses[200] >= 30, statuses
    assert client.get("/v1/health").json()["status"] == "ok"
