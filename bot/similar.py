"""Patients like mine: a de-identified vignette -> a structured profile -> the library's cases ranked by likeness.

The profile is read through the lexicon (therapies, organs, antibodies, subtypes, so brand names and
abbreviations work) and knowledge/vignette_language.yaml (measures, +/- signs, negation, age, sex, duration).
The ranking is a sum of named parts a clinician can check (same failed therapy, same organs, same antibody,
subtype, measures in the same band, text similarity by the MiniLM embedding), weighted by settings, and each
match says what it shares and where it differs. What followed is the pathway table (bot/pathways.py) over the
top matches only. A vignette is scanned for identifiers before anything else and refused when it holds one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict

from bot.cases import ORGANS, Case, Subtype
from bot.identifiers import scan
from bot.lexicon import Lexicon, Mention, alias_regex
from bot.pathways import Pathway, markdown_table, pathway
from bot.index import ensure_index
from bot.retrieval import Retriever
from bot.settings import Settings


class VignetteError(ValueError):
    """A vignette that cannot be searched: it holds an identifier, or nothing describing the disease."""


class Measure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: float | None = None  # None when the vignette gives only a band ("eGFR normal")
    band: str = ""  # worked out from the value when there is one


class Profile(BaseModel):
    """What the vignette says about the patient; every field may be corrected by the user before searching."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field of a corrected profile is named, not ignored

    subtype: str | None = None
    organs: list[str] = []
    antibodies: list[str] = []  # present (positive)
    negative_antibodies: list[str] = []  # written as absent ("ACA-", "negative for RNAP")
    failed_therapies: list[str] = []  # failed or not tolerated: what the case library records as failed
    not_tolerated: list[str] = []  # the subset of failed_therapies stopped for intolerance
    tried_therapies: list[str] = []  # given, with no word of how it went
    measures: dict[str, Measure] = {}
    duration_years: float | None = None
    duration_band: str | None = None
    age: int | None = None
    age_band: str | None = None
    sex: str | None = None
    negated: list[str] = []  # findings written as absent ("no PH"), as lexicon names

    def usable(self) -> bool:
        """Whether anything describes the disease (age and sex alone compare nobody)."""
        return bool(self.subtype or self.organs or self.antibodies or self.negative_antibodies
                    or self.failed_therapies or self.tried_therapies or self.measures)

    def understood_as(self) -> str:
        """One line to check at a glance: "diffuse · lung · anti-Scl-70 · failed: mycophenolate mofetil · FVC % 58"."""
        parts = [p for p in (self.age_band and f"age {self.age_band}", self.sex, self.subtype) if p]
        parts += self.organs + self.antibodies + [f"{a} negative" for a in self.negative_antibodies]
        if self.failed_therapies:
            parts.append("failed: " + ", ".join(t + (" (not tolerated)" if t in self.not_tolerated else "")
                                                for t in self.failed_therapies))
        if self.tried_therapies:
            parts.append("on/tried: " + ", ".join(self.tried_therapies))
        parts += [f"{name} {m.value:g}" if m.value is not None else f"{name} {m.band}" for name, m in self.measures.items()]
        if self.duration_years is not None:
            parts.append(f"disease {self.duration_years:g} y")
        parts += [f"no {finding}" for finding in self.negated]
        return " · ".join(parts)


class Match(BaseModel):
    case_id: str
    title: str
    score: float
    parts: dict[str, float]  # the score's named parts, which add up to it
    shared: list[str]
    differs: list[str]
    next_therapies: list[str]
    outcome: str


class SimilarResult(BaseModel):
    vignette_chars: int  # the vignette itself is not kept in the result
    understood_as: str
    profile: Profile
    matches: list[Match] = []
    followed: list[Pathway] = []
    notes: list[str] = []


@dataclass(frozen=True)
class CaseFeatures:
    age: int | None
    sex: str | None
    measures: dict[str, Measure]


def _any(patterns: list[str], template: str = r"(?:{})") -> re.Pattern[str]:
    return re.compile(template.format("|".join(f"(?:{p})" for p in patterns)), re.IGNORECASE)


def _band(bands: dict[str, float | None], value: float) -> str:
    return next(name for name, upper in bands.items() if upper is None or value < upper)


class VignetteLanguage:
    """knowledge/vignette_language.yaml compiled: how vignettes write measures, signs, negation, age and sex."""

    def __init__(self, data: dict):
        self.data = data
        self.measure_bands: dict[str, dict[str, float | None]] = {n: m["bands"] for n, m in data["measures"].items()}
        words = {word: band for band, ws in data["measure_words"].items() for word in ws}
        self.measure_word_band = {w.lower(): b for w, b in words.items()}
        self.measure_patterns = {
            name: re.compile(rf"(?<![\w-])(?:{'|'.join(alias_regex(n) for n in m['names'])})(?![\w-])"
                             rf"{data['measure_joiner']}(?:(\d+(?:\.\d+)?)|({'|'.join(map(re.escape, words))})\b)",
                             re.IGNORECASE)
            for name, m in data["measures"].items()}
        self.measure_names = {re.sub(r"[\s-]", "", n.lower()) for m in data["measures"].values() for n in m["names"]}
        self.sign = re.compile(r"(?<=[\w)])([+−-](?:ve)?)(?=[\s,;.)/]|$)")
        self.positive = _any(data["positive_signs"], r"^\s?(?:{})(?![\w])")
        self.negative = _any(data["negative_signs"], r"^\s?(?:{})(?![\w])")
        self.negation_before = _any(data["negation_before"], r"\b(?:{})\s+(?:[\w/'-]+\s+){{0,2}}$")
        self.negation_after = _any(data["negation_after"], r"^\s*(?:{})\b")
        self.failure_before = _any(data["failure_before"], r"(?:^|\b)(?:{})[\s-]+(?:[\w/-]+\s+){{0,1}}$")
        self.worsening = re.compile(data["worsening_in_clause"], re.IGNORECASE)
        self.on_therapy = re.compile(data["on_therapy"], re.IGNORECASE)
        self.list_joiner = re.compile(data["therapy_list_joiner"], re.IGNORECASE)
        self.intolerance_after = _any(data["intolerance_after"], r"^(?:{})")
        self.intolerance_before = _any(data["intolerance_before"], r"\b(?:{})\s+(?:[\w/-]+\s+){{0,1}}$")
        self.ages = [re.compile(p, re.IGNORECASE) for p in data["age_patterns"]]
        self.decades = [re.compile(p, re.IGNORECASE) for p in data["age_decade_patterns"]]
        self.sexes = {sex: _any(ps) for sex, ps in data["sex_patterns"].items()}
        self.years = re.compile(data["duration_years"], re.IGNORECASE)
        self.months = re.compile(data["duration_months"], re.IGNORECASE)
        self.messages: dict[str, str] = data["messages"]

    @classmethod
    def load(cls, path: Path) -> VignetteLanguage:
        try:
            return cls(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, yaml.YAMLError, re.error) as error:
            raise ValueError(f"{path}: not a valid vignette language file ({type(error).__name__}: {error})") from error

    def band(self, measure: str, value: float) -> str:
        return _band(self.measure_bands[measure], value)

    def age_band(self, age: int) -> str:
        return _band(self.data["age_bands"], age)

    def duration_band(self, years: float) -> str:
        return _band(self.data["duration_bands"], years)

    def measures(self, text: str) -> dict[str, Measure]:
        found = {}
        for name, pattern in self.measure_patterns.items():
            match = pattern.search(text)
            if match and match.group(1):
                found[name] = Measure(value=float(match.group(1)), band=self.band(name, float(match.group(1))))
            elif match:
                found[name] = Measure(band=self.measure_word_band[match.group(2).lower()])
        return found

    def age_spans(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, age) of each age written in the text."""
        spans = [(m.start(), m.end(), int(m.group(1))) for p in self.ages for m in p.finditer(text)]
        spans += [(m.start(), m.end(), int(m.group(1)) * 10 + 5) for p in self.decades for m in p.finditer(text)]
        return sorted(spans)

    def sex(self, text: str) -> str | None:
        first = {sex: m.start() for sex, p in self.sexes.items() if (m := p.search(text))}
        return min(first, key=first.__getitem__) if first else None

    def duration(self, text: str, ages: list[tuple[int, int, int]]) -> float | None:
        def outside(match: re.Match[str]) -> bool:
            return not any(s <= match.start() < e for s, e, _ in ages)

        years = next((float(m.group(1)) for m in self.years.finditer(text) if outside(m)), None)
        if years is not None:
            return years
        months = next((float(m.group(1)) for m in self.months.finditer(text) if outside(m)), None)
        return round(months / 12, 1) if months is not None else None


def _clause_before(text: str, start: int) -> str:
    """The text of the clause before `start`: back to the last comma, semicolon or full stop."""
    head = text[:start]
    return head[max(head.rfind(","), head.rfind(";"), head.rfind(". "), head.rfind("\n")) + 1:]


def _clause_after(text: str, end: int) -> str:
    tail = text[end:]
    cut = min((i for i in (tail.find(","), tail.find(";"), tail.find(". "), tail.find("\n")) if i >= 0), default=len(tail))
    return tail[:cut]


class PatientMatcher:
    """Parses vignettes and ranks the cases of one retriever's library against them."""

    def __init__(self, retriever: Retriever, lexicon: Lexicon, settings: Settings):
        self.retriever, self.lexicon, self.settings = retriever, lexicon, settings
        self.language = VignetteLanguage.load(settings.vignette_language_path)
        self._features: tuple[str, dict[str, CaseFeatures]] | None = None

    @classmethod
    def open(cls, settings: Settings, log=print) -> PatientMatcher:
        """A matcher over the configured index (built from the knowledge folder when empty), without the answer
        stack (gate, backend) that `casebot similar` does not need."""
        lexicon = Lexicon.load(settings.lexicon_path)
        return cls(Retriever(ensure_index(settings, lexicon, log), lexicon, settings), lexicon, settings)

    # -- vignette -> profile ------------------------------------------------------------------------------
    def check(self, vignette: str) -> None:
        """Refuses a vignette with a likely identifier, naming what was found (and keeping nothing)."""
        findings = scan(vignette)
        if findings:
            listed = "; ".join(f"{f.kind} {f.text!r}" for f in findings)
            raise VignetteError(self.language.messages["refused"].format(findings=listed))

    def parse(self, vignette: str) -> Profile:
        language = self.language
        text = language.sign.sub(r" \1", vignette)
        ages = language.age_spans(text)
        profile = Profile(measures=language.measures(text), sex=language.sex(text))
        if ages:
            profile.age = ages[0][2]
            profile.age_band = language.age_band(profile.age)
        profile.duration_years = language.duration(text, ages)
        if profile.duration_years is not None:
            profile.duration_band = language.duration_band(profile.duration_years)
        failed_by_question = set(self.retriever.language.failed_therapies(text, self.lexicon))
        previous: Mention | None = None  # the last therapy mention, whose status a listed one shares
        for mention in self.lexicon.spans(text):
            listed_after = (previous is not None and self.language.list_joiner.match(text[previous.end:mention.start])
                            and any(t.canonical in profile.failed_therapies for t in previous.terms))
            self._read_mention(text, mention, profile, failed_by_question | (
                {t.canonical for t in mention.terms} if listed_after else set()))
            if any(t.group == "therapies" for t in mention.terms):
                previous = mention
        profile.tried_therapies = [t for t in profile.tried_therapies if t not in profile.failed_therapies]
        return profile

    def _negated(self, text: str, mention: Mention) -> bool:
        return bool(self.language.negation_before.search(_clause_before(text, mention.start))
                    or self.language.negation_after.search(text[mention.end:]))

    def _read_mention(self, text: str, mention: Mention, profile: Profile, failed_by_question: set[str]) -> None:
        after = text[mention.end:]
        negated = self._negated(text, mention)
        for term in mention.terms:
            name = term.canonical
            if term.group == "antibodies":
                if self.language.negative.search(after) or negated:
                    _add(profile.negative_antibodies, name)
                elif name not in profile.negative_antibodies:
                    _add(profile.antibodies, name)
            elif term.group == "organs":
                if re.sub(r"[\s-]", "", mention.surface.lower()) in self.language.measure_names:
                    continue  # "FVC 58%" is a measure, which says nothing of whether the lung is involved
                _add(profile.negated if negated else profile.organs, name)
            elif term.group == "subtypes" and name != "unknown" and not negated and profile.subtype is None:
                profile.subtype = name
            elif term.group == "therapies" and (  # "could not tolerate MMF" is no negation of MMF
                    not negated or self.language.intolerance_before.search(_clause_before(text, mention.start))):
                self._read_therapy(text, mention, name, profile, failed_by_question)

    def _read_therapy(self, text: str, mention: Mention, name: str, profile: Profile,
                      failed_by_question: set[str]) -> None:
        language = self.language
        before = _clause_before(text, mention.start)
        intolerant = bool(language.intolerance_after.search(text[mention.end:])
                          or language.intolerance_before.search(before))
        worsened_on = bool(language.on_therapy.search(before) and (
            language.worsening.search(before) or language.worsening.search(_clause_after(text, mention.end))))
        if intolerant:
            _add(profile.not_tolerated, name)
        if intolerant or worsened_on or language.failure_before.search(before) or name in failed_by_question:
            _add(profile.failed_therapies, name)
        else:
            _add(profile.tried_therapies, name)

    def corrected(self, profile: Profile) -> Profile:
        """A profile as a user corrected it, in the library's names: aliases (MMF, ATA, dcSSc) normalised through
        the lexicon and bands worked out from the values given. A subtype, organ or measure outside the
        vocabulary is refused, naming the field and the value."""
        lexicon = self.lexicon
        subtypes = get_args(Subtype)
        subtype = profile.subtype and (lexicon.canonical("subtypes", profile.subtype) or profile.subtype)
        if subtype is not None and subtype not in subtypes:
            raise VignetteError(f"profile field 'subtype': {profile.subtype!r} is not one of {', '.join(subtypes)}")

        def names(field: str, group: str, closed: tuple[str, ...] = ()) -> list[str]:
            out: list[str] = []
            for value in getattr(profile, field):
                name = lexicon.canonical(group, value) or value
                if closed and name not in closed:
                    raise VignetteError(f"profile field {field!r}: {value!r} is not one of {', '.join(closed)}")
                _add(out, name)
            return out

        measures = {}
        for name, measure in profile.measures.items():
            if name not in self.language.measure_bands:
                raise VignetteError(f"profile field 'measures': {name!r} is not one of "
                                    f"{', '.join(self.language.measure_bands)}")
            bands = [*self.language.measure_bands[name], *self.language.measure_word_band.values()]
            if measure.value is None and measure.band not in bands:
                raise VignetteError(f"profile field 'measures.{name}': band {measure.band!r} is not one of "
                                    f"{', '.join(dict.fromkeys(bands))}")
            band = self.language.band(name, measure.value) if measure.value is not None else measure.band
            measures[name] = Measure(value=measure.value, band=band)
        failed = names("failed_therapies", "therapies")
        return profile.model_copy(update={
            "subtype": subtype, "organs": names("organs", "organs", ORGANS),
            "negated": names("negated", "organs", ORGANS), "antibodies": names("antibodies", "antibodies"),
            "negative_antibodies": names("negative_antibodies", "antibodies"), "failed_therapies": failed,
            "not_tolerated": [t for t in names("not_tolerated", "therapies") if t in failed],
            "tried_therapies": [t for t in names("tried_therapies", "therapies") if t not in failed],
            "measures": measures,
            "age_band": self.language.age_band(profile.age) if profile.age is not None else profile.age_band,
            "duration_band": (self.language.duration_band(profile.duration_years)
                              if profile.duration_years is not None else profile.duration_band)})

    # -- profile -> ranked cases ----------------------------------------------------------------------------
    def case_features(self) -> dict[str, CaseFeatures]:
        """Age, sex and measures of each case from its narrative, worked out once per library version."""
        side = self.retriever.refresh()
        if self._features is None or self._features[0] != side.version:
            features = {}
            for case in side.cases.values():
                opening = case.body[:600]
                ages = self.language.age_spans(opening)
                features[case.id] = CaseFeatures(ages[0][2] if ages else None, self.language.sex(opening),
                                                 self.language.measures(case.body))
            self._features = (side.version, features)
        return self._features[1]

    def text_similarity(self, profile: Profile, vignette: str) -> dict[str, float]:
        """Each case's best chunk similarity to the vignette (with the profile's lexicon names), rescaled to the
        library's range so that 1 is the closest case and 0 the farthest."""
        side = self.retriever.refresh()
        if not side.chunk_ids:
            return {}
        query = f"{vignette} ({profile.understood_as()})"
        vector = np.asarray(self.retriever.embedder.embed_query(query), dtype=np.float32)
        similarities = side.vectors @ vector
        best: dict[str, float] = {}
        for case_id, value in zip(side.chunk_case, similarities.tolist()):
            best[case_id] = max(best.get(case_id, -1.0), value)
        low, high = min(best.values()), max(best.values())
        return {cid: (value - low) / (high - low) if high > low else 0.0 for cid, value in best.items()}

    def rank(self, profile: Profile, vignette: str = "", k: int = 5) -> list[Match]:
        cases = self.retriever.refresh().cases
        text = self.text_similarity(profile, vignette) if vignette.strip() else {}
        features = self.case_features()
        matches = [self._match(profile, case, text.get(case.id, 0.0), features.get(case.id)) for case in cases.values()]
        matches.sort(key=lambda m: (-m.score, m.case_id))
        return matches[:k]

    def _match(self, profile: Profile, case: Case, text: float, features: CaseFeatures | None) -> Match:
        s = self.settings
        canonical = self.lexicon.canonical
        case_failed = {canonical("therapies", t) or t for t in case.failed_therapies}
        parts: dict[str, float] = {}
        shared: list[str] = []
        differs: list[str] = []

        def share(part: str, wanted: list[str], held: set[str], weight: float, label: str) -> None:
            common = [w for w in wanted if w in held]
            if wanted and common:
                parts[part] = weight * len(common) / len(wanted)
                shared.extend(f"{label}{c}" for c in common)

        share("failed therapy", profile.failed_therapies, case_failed, s.similar_weight_failed, "failed ")
        share("therapy tried", profile.tried_therapies, case_failed, s.similar_weight_tried, "failed ")
        share("organs", profile.organs, set(case.organs), s.similar_weight_organs, "")
        share("antibody", profile.antibodies, set(case.antibodies), s.similar_weight_antibody, "")
        if profile.antibodies and case.antibodies and not set(profile.antibodies) & set(case.antibodies):
            differs.append(", ".join(case.antibodies) + " instead")
        conflicts = [a for a in profile.negative_antibodies if a in case.antibodies] + [
            o for o in profile.negated if o in case.organs]
        if conflicts:
            parts["conflicts"] = -s.similar_weight_conflict * len(conflicts)
            differs.extend(f"has {c}" for c in conflicts)
        if profile.subtype and case.subtype == profile.subtype:
            parts["subtype"] = s.similar_weight_subtype
            shared.append(f"{case.subtype} subtype")
        elif profile.subtype and case.subtype != "unknown":
            differs.append(f"{case.subtype} subtype")
        other_organs = [o for o in case.organs if o not in profile.organs and o not in profile.negated]
        if profile.organs and other_organs:
            differs.append("also " + ", ".join(other_organs))
        if features:
            same_band = [n for n, m in profile.measures.items() if n in features.measures and
                         features.measures[n].band == m.band]
            if same_band:
                parts["measures"] = s.similar_weight_measures * len(same_band) / len(profile.measures)
                shared.extend(f"{n} {features.measures[n].band}" for n in same_band)
            differs.extend(f"{n} {features.measures[n].band}" for n, m in profile.measures.items()
                           if n in features.measures and features.measures[n].band != m.band)
            if profile.age is not None and features.age is not None:
                gap = features.age - profile.age
                if abs(gap) >= self.language.data["age_gap_years"]:
                    differs.append("older" if gap > 0 else "younger")
            if profile.sex and features.sex and features.sex != profile.sex:
                differs.append(features.sex)
        if text:
            parts["text"] = round(s.similar_weight_text * text, 3)
        parts = {name: round(value, 3) for name, value in parts.items()}
        return Match(case_id=case.id, title=case.title, score=round(sum(parts.values()), 3), parts=parts,
                     shared=shared, differs=differs, next_therapies=case.next_therapies, outcome=case.outcome)

    # -- the whole stage -----------------------------------------------------------------------------------
    def find(self, vignette: str, k: int = 5, profile: Profile | None = None) -> SimilarResult:
        """Scan, parse (unless a corrected profile is given), rank, and what followed in the top matches."""
        if not isinstance(vignette, str):
            raise VignetteError("The vignette must be text.")
        if len(vignette) > self.settings.max_case_chars:  # a note longer than any case file is no vignette
            raise VignetteError(f"The vignette is {len(vignette)} characters long; the limit is "
                                f"{self.settings.max_case_chars} (CASEBOT_MAX_CASE_CHARS).")
        self.check(vignette)
        profile = self.corrected(profile) if profile is not None else self.parse(vignette)
        if not profile.usable():
            raise VignetteError(self.language.messages["nothing_usable"])
        matches = self.rank(profile, vignette, k)
        followed, notes = self.followed(profile, matches)
        return SimilarResult(vignette_chars=len(vignette), understood_as=profile.understood_as(), profile=profile,
                             matches=matches, followed=followed, notes=notes)

    def followed(self, profile: Profile, matches: list[Match]) -> tuple[list[Pathway], list[str]]:
        """The pathway table after each failed therapy, over the top matches only; a note where none shares it."""
        messages = self.language.messages
        if not profile.failed_therapies:
            return [], [messages["no_failure_given"]]
        side = self.retriever.refresh()
        top = [side.cases[m.case_id] for m in matches if m.case_id in side.cases]
        tables, notes = [], []
        for failed in profile.failed_therapies:
            table = pathway(top, self.lexicon, failed)
            if table.rows:
                tables.append(table)
            else:
                anywhere = "" if side.cases_by_failed(self.lexicon).get(failed) else messages["no_shared_failure_anywhere"]
                notes.append(messages["no_shared_failure"].format(failed=failed, anywhere=anywhere))
        return tables, notes


def _add(names: list[str], name: str) -> None:
    if name not in names:
        names.append(name)


def markdown(result: SimilarResult) -> str:
    """The result for a terminal or the web tab: the profile, the ranked matches with reasons, what followed.
    Every case is named by its [case-id] marker."""
    lines = [f"**Understood as:** {result.understood_as}", "", "**Most similar cases**", ""]
    for number, match in enumerate(result.matches, start=1):
        then = ", ".join(match.next_therapies) or "nothing recorded"
        lines.append(f"{number}. [{match.case_id}] {match.title} (score {match.score:g})")
        lines.append(f"   - matched: {', '.join(match.shared) or 'text only'}")
        if match.differs:
            lines.append(f"   - differs: {', '.join(match.differs)}")
        lines.append(f"   - then: {then}; outcome: {match.outcome}")
    for table in result.followed:
        lines += ["", markdown_table(table)]
    lines += ["", *result.notes] if result.notes else []
    return "\n".join(lines)
