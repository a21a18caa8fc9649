"""The therapy / organ / antibody lexicon (knowledge/lexicon.yaml): normalising names and expanding queries."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from bot.text import stem

GROUPS = ("organs", "subtypes", "antibodies", "therapies", "terms")
_LISTED = re.compile(r"\s*(?:,|\+|/|&|,?\s*and|,?\s*or|plus)?\s*", re.IGNORECASE)  # between listed names
_JOINS = re.compile(r"[\s\-\u2010-\u2015]+")  # spaces and hyphens between the parts of a name
# A misspelt lexicon word is this close (difflib ratio) to the word it means: "mycophenolte" is 0.96 from
# "mycophenolate", while English words near a drug name stay under 0.8 ("capital" / "captopril" 0.62).
SPELLING_CUTOFF = 0.85
SPELLING_MIN_LENGTH = 6


def alias_key(text: str) -> str:
    """One key for the ways a name is written: "Scl-70", "Scl70" and "scl 70" are the same alias."""
    return _JOINS.sub("", text.strip().lower())


def alias_regex(alias: str, as_written: bool = False) -> str:
    """An alias as a pattern whose parts may be joined by a space, a hyphen or nothing
    ("small intestinal" also matches "small-intestinal"; "CAR-T" matches "CAR T" and "CART").
    `as_written`: matched in its own letter case even inside a case-insensitive pattern (GAVE, not "gave")."""
    pattern = r"[\s\-\u2010-\u2015]?".join(re.escape(part) for part in _JOINS.split(alias.strip()) if part)
    return f"(?-i:{pattern})" if as_written else pattern


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    surface: str  # as written in the text
    terms: tuple[Term, ...]


@dataclass(frozen=True)
class Correction:
    written: str
    meant: str


@dataclass(frozen=True)
class Term:
    group: str
    canonical: str
    aliases: tuple[str, ...]  # canonical name first, then its synonyms


class Lexicon:
    """Canonical names with their synonyms; one alias may belong to several groups (PAH is an organ and a term)."""

    def __init__(self, entries: dict[str, dict[str, list[str]]], filler: list[str] | None = None,
                 as_written: list[str] | None = None):
        self.terms: list[Term] = []
        for group in GROUPS:
            for canonical, synonyms in (entries.get(group) or {}).items():
                aliases = (str(canonical), *(str(s) for s in synonyms or []))
                self.terms.append(Term(group, str(canonical), aliases))
        self.filler = frozenset(str(word).lower() for word in filler or [])
        self.as_written = frozenset(str(alias) for alias in as_written or [])  # aliases that are also words
        self._by_alias: dict[tuple[str, str], Term] = {}
        self._terms_of_alias: dict[str, list[Term]] = {}  # every term an alias names, whatever its group
        for term in self.terms:
            for alias in term.aliases:
                self._by_alias.setdefault((term.group, alias_key(alias)), term)
                named = self._terms_of_alias.setdefault(alias_key(alias), [])
                if term not in named:
                    named.append(term)

    @classmethod
    def load(cls, path: Path) -> Lexicon:
        if not path.exists():
            return cls({})
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls({group: data.get(group) or {} for group in GROUPS}, data.get("question_filler"),
                   data.get("match_as_written"))

    def canonical(self, group: str, value: str) -> str | None:
        """The canonical name of `value` in `group`, or None when the lexicon does not know it."""
        term = self._by_alias.get((group, alias_key(value)))
        return term.canonical if term else None

    def names(self, group: str) -> list[str]:
        return [term.canonical for term in self.terms if term.group == group]

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        aliases = sorted({a for t in self.terms for a in t.aliases}, key=len, reverse=True)
        if not aliases:
            return re.compile(r"(?!x)x")
        alternation = "|".join(alias_regex(a, a in self.as_written) for a in aliases)
        return re.compile(rf"(?<![\w-])(?:{alternation})(?![\w-])", re.IGNORECASE)

    def spans(self, text: str) -> list[Mention]:
        """Every lexicon mention in `text` with its position, longest alias first where two overlap."""
        return [Mention(m.start(), m.end(), m.group(0), tuple(self._terms_of_alias[alias_key(m.group(0))]))
                for m in self._pattern.finditer(text) if alias_key(m.group(0)) in self._terms_of_alias]

    def mentions(self, text: str) -> list[tuple[str, list[Term]]]:
        """Each distinct lexicon alias mentioned in `text`, with every term it names (PAH: an organ and a term)."""
        found: dict[str, tuple[str, list[Term]]] = {}  # by lower case: the first way it was written
        for mention in self.spans(text):
            found.setdefault(mention.surface.lower(), (mention.surface, list(mention.terms)))
        return list(found.values())

    @cached_property
    def _spellable(self) -> dict[str, str]:
        """Lowercased single words of the aliases long enough to be recognised when misspelt."""
        words = {}
        for term in self.terms:
            for alias in term.aliases:
                for word in re.findall(r"[^\W\d_]+", alias):
                    if len(word) >= SPELLING_MIN_LENGTH:
                        words.setdefault(word.lower(), word)
        return words

    def corrected(self, text: str, known: Callable[[str], bool]) -> tuple[str, list[Correction]]:
        """`text` with misspelt lexicon words put right ("mycophenolte" -> "mycophenolate"), so the question
        is understood as the clinician meant it. A word is only changed when neither the lexicon nor the
        library (`known`) has it and one lexicon word is within SPELLING_CUTOFF of it; or when the word is a
        lexicon word cut short to its stem ("cyclophosphamid"), which the library seems to know only because it
        is stored stemmed, while the lexicon, matched on whole words, would miss it."""
        corrections: list[Correction] = []

        def fix(match: re.Match[str]) -> str:
            word = match.group(0)
            lower = word.lower()
            if len(word) < SPELLING_MIN_LENGTH or lower in self._spellable:
                return word
            close = difflib.get_close_matches(lower, list(self._spellable), n=1, cutoff=SPELLING_CUTOFF)
            cut_short = stem(lower) == lower and stem(close[0]) == lower if close else False
            if not close or known(lower) and not cut_short:
                return word
            corrections.append(Correction(word, close[0]))
            return close[0]

        return re.sub(r"[^\W\d_]+", fix, text), corrections

    @staticmethod
    def narrowest(terms: list[Term] | tuple[Term, ...]) -> Term:
        """The term an alias most specifically means, the one with the fewest synonyms: "calcinosis" is the
        condition calcinosis cutis before it is the skin, "renal crisis" scleroderma renal crisis before the
        kidney. A case holds the alias's meaning when it holds that term."""
        return min(terms, key=lambda term: len(term.aliases))

    def find(self, text: str) -> list[Term]:
        """Every lexicon term mentioned in `text`, in order of first mention, without repeats."""
        return list(dict.fromkeys(term for _, terms in self.mentions(text) for term in terms))

    def strip(self, text: str, term: Term) -> str:
        """`text` without the mentions of `term`, so its words are not counted twice."""
        for alias in sorted(term.aliases, key=len, reverse=True):
            text = re.sub(rf"(?<![\w-]){alias_regex(alias, alias in self.as_written)}(?![\w-])", " ", text,
                          flags=re.IGNORECASE)
        return text

    def expansion(self, text: str) -> list[str]:
        """Canonical names and synonyms of the terms in `text`, for query expansion."""
        extra: list[str] = []
        for term in self.find(text):
            extra.extend(a for a in term.aliases if a not in extra)
        return extra


def _alternation(patterns: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in patterns) + r")\b", re.IGNORECASE)


@dataclass
class QuestionLanguage:
    """knowledge/question_language.yaml: back-references, pronouns, aspects and failure cues."""

    singular: re.Pattern[str]
    plural: re.Pattern[str]
    general: re.Pattern[str]
    returning: re.Pattern[str]
    returning_to_one: re.Pattern[str]
    pronoun_sex: dict[str, str]  # word -> "female" / "male"
    case_sex_words: dict[str, str]
    aspects: list[tuple[str, re.Pattern[str]]]
    failure_before: re.Pattern[str]
    failure_after: re.Pattern[str]
    history_before: re.Pattern[str]

    @classmethod
    def load(cls, path: Path) -> QuestionLanguage:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        refs = data["back_references"]

        def sexes(block: dict[str, list[str]]) -> dict[str, str]:
            return {word.lower(): sex for sex, words in block.items() for word in words}

        cues = data["failure_cues"]
        return cls(
            singular=_alternation(refs["singular"]), plural=_alternation(refs["plural"]),
            general=_alternation(refs["general"]),
            returning=_alternation(refs["returning_to_one"] + refs["returning"]),  # the longer reading first
            returning_to_one=_alternation(refs["returning_to_one"]), pronoun_sex=sexes(data["pronouns"]),
            case_sex_words=sexes(data["case_sex"]),
            aspects=[(a["section"], _alternation(a["patterns"])) for a in data["aspects"]],
            failure_before=re.compile(r"\b(?:" + "|".join(cues["before"]) + r")\s+(?:[\w-]+\s+){0,2}$", re.IGNORECASE),
            failure_after=re.compile(r"^\W*(?:" + "|".join(cues["after"]) + r")\b", re.IGNORECASE),
            history_before=re.compile(r"\b(?:" + "|".join(data["history_cues"]) + r")[\s-]+(?:[\w-]+\s+){0,2}$",
                                      re.IGNORECASE))

    def referring_words(self, question: str) -> str:
        """The question without its back-references and aspect words: what it asks about in its own words."""
        text = question
        for pattern in (self.singular, self.plural, self.general, self.returning, *(p for _, p in self.aspects)):
            text = pattern.sub(" ", text)
        return text

    def aspect(self, question: str) -> str | None:
        return next((section for section, pattern in self.aspects if pattern.search(question)), None)

    def pronoun_sex_in(self, question: str) -> str | None:
        match = self.singular.search(question)
        words = re.findall(r"[a-z]+", match.group(0).lower()) if match else []
        return next((self.pronoun_sex[w] for w in words if w in self.pronoun_sex), None)

    def without_failure_cues(self, question: str, lexicon: Lexicon) -> str:
        """The question with the words that say a therapy failed blanked out ("MMF failure for skin" -> "MMF
        for skin"): the failure is read from the cases' front matter (records_failure), so "failure" must not
        count as a word a case should hold, which only "heart failure" cases do."""
        cuts = []
        for mention in lexicon.spans(question):
            if not any(term.group == "therapies" for term in mention.terms):
                continue
            after = self.failure_after.search(question[mention.end:])
            if after:
                cuts.append((mention.end + after.start(), mention.end + after.end()))
            before = self.failure_before.search(question[: mention.start])
            if before:
                cuts.append((before.start(), before.start() + len(before.group().split()[0])))
        for start, end in sorted(cuts, reverse=True):
            question = question[:start] + " " * (end - start) + question[end:]
        return question

    def prior_therapies(self, question: str, lexicon: Lexicon) -> set[str]:
        """Therapies (canonical names) the question places before what it asks about ("skin came back after
        HSCT", "what was tried after rituximab?"): history, not the therapy asked about as given next."""
        return {t.canonical for m in lexicon.spans(question) if self.history_before.search(question[: m.start])
                for t in m.terms if t.group == "therapies"}

    def failed_therapies(self, question: str, lexicon: Lexicon) -> list[str]:
        """Therapies (canonical names) the question says have failed, in order: a therapy with a failure cue
        just before it ("despite MMF", "RTX after CYC") or just after it ("CellCept intolerance"), and the
        therapies listed with it ("ambrisentan + tadalafil not enough": both)."""
        therapies = [m for m in lexicon.spans(question) if any(t.group == "therapies" for t in m.terms)]
        lists: list[list[Mention]] = []  # runs of therapies joined only by "and", "+", ",", "/", "plus", "or"
        for mention in therapies:
            if lists and _LISTED.fullmatch(question[lists[-1][-1].end: mention.start]):
                lists[-1].append(mention)
            else:
                lists.append([mention])
        failed: list[str] = []
        for run in lists:
            if any(self.failure_before.search(question[: m.start]) or self.failure_after.search(question[m.end:])
                   for m in run):
                failed += [t.canonical for m in run for t in m.terms
                           if t.group == "therapies" and t.canonical not in failed]
        return failed
