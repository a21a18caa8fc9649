"""The therapy / organ / antibody lexicon (knowledge/lexicon.yaml): normalising names and expanding queries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

GROUPS = ("organs", "subtypes", "antibodies", "therapies", "terms")


@dataclass(frozen=True)
class Term:
    group: str
    canonical: str
    aliases: tuple[str, ...]  # canonical name first, then its synonyms


class Lexicon:
    """Canonical names with their synonyms; one alias may belong to several groups (PAH is an organ and a term)."""

    def __init__(self, entries: dict[str, dict[str, list[str]]], filler: list[str] | None = None):
        self.terms: list[Term] = []
        for group in GROUPS:
            for canonical, synonyms in (entries.get(group) or {}).items():
                aliases = (str(canonical), *(str(s) for s in synonyms or []))
                self.terms.append(Term(group, str(canonical), aliases))
        self.filler = frozenset(str(word).lower() for word in filler or [])
        self._by_alias: dict[tuple[str, str], Term] = {}
        self._terms_of_alias: dict[str, list[Term]] = {}  # every term an alias names, whatever its group
        for term in self.terms:
            for alias in term.aliases:
                self._by_alias.setdefault((term.group, alias.lower()), term)
                named = self._terms_of_alias.setdefault(alias.lower(), [])
                if term not in named:
                    named.append(term)

    @classmethod
    def load(cls, path: Path) -> Lexicon:
        if not path.exists():
            return cls({})
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls({group: data.get(group) or {} for group in GROUPS}, data.get("question_filler"))

    def canonical(self, group: str, value: str) -> str | None:
        """The canonical name of `value` in `group`, or None when the lexicon does not know it."""
        term = self._by_alias.get((group, value.strip().lower()))
        return term.canonical if term else None

    def names(self, group: str) -> list[str]:
        return [term.canonical for term in self.terms if term.group == group]

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        aliases = sorted({a for t in self.terms for a in t.aliases}, key=len, reverse=True)
        if not aliases:
            return re.compile(r"(?!x)x")
        alternation = "|".join(re.escape(a) for a in aliases)
        return re.compile(rf"(?<![\w-])(?:{alternation})(?![\w-])", re.IGNORECASE)

    def mentions(self, text: str) -> list[tuple[str, list[Term]]]:
        """Each distinct lexicon alias mentioned in `text`, with every term it names (PAH: an organ and a term)."""
        found: dict[str, list[Term]] = {}
        for match in self._pattern.finditer(text):
            alias = match.group(0).lower()
            if alias not in found:
                found[alias] = self._terms_of_alias[alias]
        return list(found.items())

    def find(self, text: str) -> list[Term]:
        """Every lexicon term mentioned in `text`, in order of first mention, without repeats."""
        return list(dict.fromkeys(term for _, terms in self.mentions(text) for term in terms))

    def strip(self, text: str, term: Term) -> str:
        """`text` without the mentions of `term`, so its words are not counted twice."""
        for alias in sorted(term.aliases, key=len, reverse=True):
            text = re.sub(rf"(?<![\w-]){re.escape(alias)}(?![\w-])", " ", text, flags=re.IGNORECASE)
        return text

    def expansion(self, text: str) -> list[str]:
        """Canonical names and synonyms of the terms in `text`, for query expansion."""
        extra: list[str] = []
        for term in self.find(text):
            extra.extend(a for a in term.aliases if a not in extra)
        return extra
