"""The claim check on the planted-sentence probe (tests/probes/claims.yaml): faithful paraphrases must keep their
citation and distortions (changed outcome, measure direction, therapy action, negation, severity, order, wrong
case) must lose it. Counts only; timings are for bench/verifier.py.

Targets (issue 16): at least 95% of each. Not met yet: the floors below are the counts measured on 2026-12-02
(tests/probes/probe.py, the check tuned on the shipped probes only, the heldout probes written before any run on
them), so a regression fails; the targets stay in the issue."""

from __future__ import annotations

import pytest

from bot.embedding import MiniLMEmbeddings
from bot.lexicon import Lexicon
from bot.settings import load_settings
from bot.verification import CitationVerifier
from probes.probe import Result, library_passages, load_probes, run

# library -> (faithful kept, distortions caught): measured 2026-12-02 at shipped 76/81 and 75/100, heldout
# 28/32 and 41/50 (see the module docstring); one sentence of slack for another machine's floating point.
FLOORS = {"shipped": (75, 74), "heldout": (27, 40)}
# The issue asks for at least 200 planted sentences.
MIN_PROBES = 200
KINDS = {"faithful", "outcome", "measure", "action", "negation", "severity", "order", "case"}


@pytest.fixture(scope="module")
def results() -> list[Result]:
    settings = load_settings()
    lexicon = Lexicon.load(settings.lexicon_path)
    verifier = CitationVerifier(lexicon, MiniLMEmbeddings(), settings.verify_min_similarity)
    return run(verifier.verify, load_probes(), library_passages(lexicon))


def test_the_probe_plants_enough_sentences_of_every_kind_in_both_libraries():
    probes = load_probes()
    assert len(probes) >= MIN_PROBES
    for library in FLOORS:
        assert {p.kind for p in probes if p.library == library} == KINDS, library


@pytest.mark.parametrize("library", sorted(FLOORS))
def test_faithful_paraphrases_keep_their_citation_and_distortions_lose_it(results, library):
    mine = [r for r in results if r.probe.library == library]
    kept = sum(r.kept for r in mine if r.probe.faithful)
    caught = sum(not r.kept for r in mine if not r.probe.faithful)
    wrong = [f"{'rejected' if r.probe.faithful else 'missed ' + r.probe.kind}: {r.probe.sentence} {r.problems}"
             for r in mine if not r.right]
    floor_kept, floor_caught = FLOORS[library]
    assert kept >= floor_kept and caught >= floor_caught, "\n".join(wrong)
