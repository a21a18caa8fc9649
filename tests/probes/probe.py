"""The claim probe: the planted sentences of claims.yaml (beside this file), each checked by a citation
verifier against its case's passages, counted per library and kind. Shared by tests/test_claims.py (counts
asserted) and bench/verifier.py (counts and timings printed)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bot.cases import load_cases
from bot.chunking import chunk_case
from bot.lexicon import Lexicon
from bot.settings import PROJECT_ROOT

PROBES = Path(__file__).with_name("claims.yaml")
LIBRARIES = {"shipped": PROJECT_ROOT / "knowledge" / "cases", "heldout": PROJECT_ROOT / "tests" / "heldout" / "cases"}
FAITHFUL = "faithful"


@dataclass(frozen=True)
class Probe:
    library: str
    case: str
    kind: str
    sentence: str
    neighbours: tuple[str, ...] = ()  # other cases the "model" was given

    @property
    def faithful(self) -> bool:
        return self.kind == FAITHFUL


@dataclass
class Result:
    probe: Probe
    kept: bool  # the sentence kept its citation
    problems: list[str] = field(default_factory=list)
    ms: float = 0.0

    @property
    def right(self) -> bool:
        return self.kept == self.probe.faithful


def load_probes(path: Path = PROBES) -> list[Probe]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [Probe(library, p["case"], p["kind"], p["sentence"], tuple(p.get("with", ())))
            for library in LIBRARIES for p in data.get(library) or []]


def library_passages(lexicon: Lexicon) -> dict[str, dict[str, list[str]]]:
    """library -> case id -> the case's passages as a model would be given them: title, summary, sections."""
    out: dict[str, dict[str, list[str]]] = {}
    for library, folder in LIBRARIES.items():
        cases, _ = load_cases([folder], lexicon)
        out[library] = {case.id: [case.title] + [doc.metadata["text"] for doc in chunk_case(case, 1000, 100)]
                        for case in cases}
    return out


def run(verify, probes: list[Probe], passages: dict[str, dict[str, list[str]]]) -> list[Result]:
    """Each probe through `verify(text, passages)` (a CitationVerifier's verify), cited as the model would."""
    results = []
    for probe in probes:
        given = {cid: passages[probe.library][cid] for cid in (probe.case, *probe.neighbours)}
        started = time.perf_counter()
        checked = verify(f"{probe.sentence} [{probe.case}]", given)
        ms = (time.perf_counter() - started) * 1000
        kept = any(probe.case in check.supporting for check in checked.verified)
        problems = [p for check in checked.checks for p in check.problems]
        results.append(Result(probe, kept, problems, ms))
    return results


def tally(results: list[Result]) -> dict[tuple[str, str], tuple[int, int]]:
    """(library, kind) -> (right, total): faithful kept, or distortion caught."""
    right, total = Counter(), Counter()
    for r in results:
        key = (r.probe.library, r.probe.kind)
        total[key] += 1
        right[key] += r.right
    return {key: (right[key], total[key]) for key in sorted(total)}
