"""The library audit behind `casebot check`: the claim check (bot/claims.py) pointed at the case files themselves.

A case whose front matter contradicts its own narrative would make the answer check vouch for the wrong thing
(the front matter outranks passage sentences there), so the library is checked before it is trusted: a
therapy recorded as failed that the text says worked, a therapy both failed and next, a therapy recorded as
given that the text says was not, an outcome the Outcome section contradicts, an organ listed but never
described, a missing section, a duplicated or near-duplicated case, keyword-stuffed text. Each finding names the
file, the field and the sentence.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from bot.cases import Case
from bot.claims import ClaimReader, FrontMatter
from bot.text import sentences, stem, tokenize

SECTIONS = ("Presentation", "Prior treatment", "Resistance", "Next therapy", "Outcome", "Teaching points")
# Teaching points speak of SSc in general ("rituximab can work"), not of this patient's course.
GENERAL = "Teaching points"
# Share of word 5-grams two case texts have in common above which one is a near-copy of the other. The most
# alike pair in the shipped library (two renal-crisis vignettes) shares 9%, in the heldout library 8%.
NEAR_DUPLICATE = 0.5
_SHINGLE = 5
# Keyword stuffing: words (as the index stems them, stop words dropped) repeated far beyond what any case report
# does. Distinct words grow about as the square root of the text's length: for n words a shipped case holds at least
# 7.1 x sqrt(n) distinct ones, a heldout case 7.8 x sqrt(n), the whole shipped library read as one text 16 x sqrt(n),
# a 10,000-word case of the lexicon's terms repeated 1.7 x sqrt(n). Below 4 x sqrt(n), in a text of at least
# STUFFING_MIN_WORDS, is stuffing.
STUFFING_DISTINCT = 4.0
STUFFING_MIN_WORDS = 200
# One word above this share of a text, and more often than STUFFING_WORD_COUNT, is stuffing too: the most repeated
# word of a shipped or heldout case is at most 7% of its text and 14 occurrences.
STUFFING_WORD_SHARE = 0.15
STUFFING_WORD_COUNT = 50


@dataclass(frozen=True)
class Finding:
    path: str
    field: str
    problem: str
    sentence: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.problem}" + (f': "{self.sentence}"' if self.sentence else "")


def sections(body: str) -> dict[str, str]:
    """The body's `## Heading` sections, heading -> text."""
    parts = re.split(r"^##\s+(.+?)\s*$", body, flags=re.MULTILINE)
    return {heading.strip(): text.strip() for heading, text in zip(parts[1::2], parts[2::2])}


def has_front_matter(case: Case) -> bool:
    path = Path(case.path)
    return path.suffix.lower() in (".md", ".markdown") and path.read_text(encoding="utf-8-sig").startswith("---")


def audit(cases: list[Case], reader: ClaimReader) -> list[Finding]:
    """Every finding in `cases`, file by file, then the duplicates."""
    findings: list[Finding] = []
    for case in cases:
        if has_front_matter(case):
            findings += audit_case(case, reader)
        problem = stuffing(case.body)
        if problem:
            findings.append(Finding(case.path, "body", problem))
    return findings + duplicates(cases)


def stuffing(text: str) -> str | None:
    """Why `text` reads as keyword stuffing rather than a case report, naming the words repeated; else None.

    Retrieval keeps a stuffed case's words out of its word statistics (bot/index.py), yet the case is still
    noise in the library, so the web app's "Add a case" refuses it and ingest and `casebot check` name it."""
    return stuffed(tokenize([text])[0], text)


def stuffed(words: list[str], text: str = "") -> str | None:
    """`stuffing` over words as the index tokenises them; `text`, when given, spells the words named."""
    counts = Counter(words)
    if not counts:
        return None
    common = counts.most_common(3)
    most, distinct, floor = common[0][1], len(counts), STUFFING_DISTINCT * math.sqrt(len(words))
    few_words = len(words) >= STUFFING_MIN_WORDS and distinct < floor
    one_word = most > STUFFING_WORD_COUNT and most > STUFFING_WORD_SHARE * len(words)
    if not (few_words or one_word):
        return None
    wanted = dict(common)
    surface = {stem(w): w for w in reversed(re.findall(r"\w+", text.lower())) if stem(w) in wanted}
    named = [(surface.get(word, word), n) for word, n in common]
    if few_words:
        top = ", ".join(f"'{word}' {n} times" for word, n in named)
        return (f"keyword stuffing: {len(words):,} words but only {distinct:,} distinct ({top}); a case report of "
                f"that length has at least {math.ceil(floor):,}")
    return (f"keyword stuffing: '{named[0][0]}' is {most:,} of its {len(words):,} words ({most / len(words):.0%}); "
            "no case report repeats one word that often")


def audit_case(case: Case, reader: ClaimReader) -> list[Finding]:
    """What one front-matter case's narrative contradicts in its own front matter, its missing sections and
    the organs it lists but never describes."""
    found = contradictions(case, reader)
    parts = sections(case.body)
    for heading in SECTIONS:
        if heading not in parts:
            found.append(Finding(case.path, "body", f"the section '## {heading}' is missing"))
    narrative = " ".join(text for heading, text in parts.items() if heading != GENERAL) or case.body
    text = f"{case.title} {narrative}"
    named = {organ for organ, pattern in reader.organ_patterns if pattern.search(text)}
    named |= {organ for organ, words in reader.v.get("organ_words", {}).items()
              if re.search(rf"\b(?:{'|'.join(map(re.escape, words))})\b", text, re.IGNORECASE)}
    for organ in case.organs:
        if organ not in named:
            found.append(Finding(case.path, "organs", f"{organ} is listed but the text never describes it"))
    return found


def contradictions(case: Case, reader: ClaimReader) -> list[Finding]:
    """Where the front matter and the case's own narrative disagree: a therapy both failed and next, an Outcome
    sentence denying what failed_therapies or next_therapies record, an outcome the Outcome section rules out.
    These are what `casebot ingest --strict` refuses a file for (the front matter outranks the passages when
    answers are checked, so a contradicted one would vouch for the wrong sentence)."""
    lexicon = reader.lexicon
    failed = frozenset(lexicon.canonical("therapies", t) or t for t in case.failed_therapies)
    following = frozenset(lexicon.canonical("therapies", t) or t for t in case.next_therapies)
    front = FrontMatter(failed, following, case.outcome)
    found: list[Finding] = []
    for therapy in sorted(failed & following):
        found.append(Finding(case.path, "failed_therapies, next_therapies", f"{therapy} is both failed and next"))
    parts = sections(case.body)
    # The Outcome section tells how this patient's course ended; other sections describe earlier stages and
    # trials ("rituximab plus MMF improved FVC in EVER-ILD"), which the front matter does not summarise.
    outcome = [reader.read(sentence) for sentence in sentences(parts.get("Outcome", ""))]
    for sentence, reading in zip(sentences(parts.get("Outcome", "")), outcome):
        for field_name, problem in reader.action_conflicts(reading, front):
            found.append(Finding(case.path, field_name, problem, sentence))
    # An outcome is contradicted when the section states what it rules out and nothing it states
    # ("hard months with complications, but he recovered" is an improvement).
    supported = reader.outcome_supports.get(case.outcome, set())
    if not any(values & supported for reading in outcome for _, _, values in reading.clauses):
        for sentence, reading in zip(sentences(parts.get("Outcome", "")), outcome):
            for problem in reader.outcome_conflicts(reading, front):
                found.append(Finding(case.path, "outcome", problem, sentence))
    return found


def duplicates(cases: list[Case]) -> list[Finding]:
    """Cases whose texts are the same or nearly so: one finding on the later file of each pair."""
    shingles = {case.path: _shingles(case.body) for case in cases}
    found = []
    for a, b in combinations(sorted(cases, key=lambda c: c.path), 2):
        x, y = shingles[a.path], shingles[b.path]
        shared = len(x & y) / max(1, min(len(x), len(y)))
        if shared >= NEAR_DUPLICATE:
            what = "a copy" if shared == 1 else f"a near-copy ({shared:.0%} of its text)"
            found.append(Finding(b.path, "body", f"{what} of {a.path}"))
    return found


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + _SHINGLE]) for i in range(max(1, len(words) - _SHINGLE + 1))}

