"""What a sentence asserts, and whether a case's sentences assert the same: the claim check behind verification.

Similarity and shared names cannot see that "the TMA resolved" became "eculizumab failed to stop the TMA".
So each sentence is read, clause by clause, into assertions: what was done with each therapy (started,
continued, stopped, tapered, increased, failed, worked), how each topic went (a measure rising or falling,
an organ improving, the patient dying) and on which therapy, how severe, which therapy came before which
(and whether one said to be begun only after an event was already given when it happened: "a relapse despite
rituximab"), and who (a woman or a man); beyond that vocabulary, which words a clause denies or affirms and
which way an unnamed thing moved. A pronoun ("it") stands for the therapy named last before it, a bracketed abbreviation
is the same mention, a clause starting "if" asserts nothing, and therapies begun together cannot be put in
order. A claim's assertion must be stated by the case sentences it rests on (or, failing those, by the
closest others that speak of it; for a topic on one therapy, by those about that therapy) or at least not be
contradicted by them, unless the case's front matter states it (the summary outranks a sentence about an
earlier stage); its denials and movements must not be the reverse of theirs; and it must agree with that
front matter. The words and patterns are data (knowledge/claims.yaml), read once. bot/audit.py points the
same reading at the case files themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from bot.lexicon import Lexicon
from bot.settings import PROJECT_ROOT
from bot.text import stem

CLAIMS = PROJECT_ROOT / "knowledge" / "claims.yaml"  # the words and patterns, beside the lexicon
OVERALL = "the patient"  # the topic of a clause that names no organ or measure
_TOKEN = "\u27e6{}\u27e7"  # a therapy mention, replaced by its number, so patterns can say {T}
_TOKEN_RE = r"\u27e6\d+\u27e7"
_SENTENCE_END = re.compile(r"[.!?]\s")  # inside two adjacent passage sentences read as one ("2.5 mg" is no end)
_DETERMINER = re.compile(r"\s*(?:the\s+)?")


@dataclass(frozen=True)
class Assertion:
    kind: str  # "action" (key: a therapy), "valence" or "severity" (key: a topic)
    key: str
    value: str


@dataclass
class Reading:
    """What one sentence asserts."""

    assertions: set[Assertion] = field(default_factory=set)
    order: set[tuple[str, str]] = field(default_factory=set)  # (earlier therapy, later therapy)
    together: set[frozenset[str]] = field(default_factory=set)  # therapies started at the same time
    # a therapy against an event, the event as its word stems: begun only after it ("rituximab was started after
    # the skin relapse"), and given when it happened ("a skin relapse despite rituximab")
    started_after: set[tuple[str, frozenset[str]]] = field(default_factory=set)
    given_during: set[tuple[str, frozenset[str]]] = field(default_factory=set)
    sexes: set[str] = field(default_factory=set)
    grades: set[str] = field(default_factory=set)
    # clauses whose valence is about the patient or a therapy: (therapies named, topics, values)
    clauses: list[tuple[frozenset[str], frozenset[str], frozenset[str]]] = field(default_factory=list)
    # how each topic went in a clause naming a therapy: (therapy, topic, value) ("kept climbing on methotrexate")
    tied: set[tuple[str, str, str]] = field(default_factory=set)
    # (word stem, therapies its clause names): what a negation cue denies ("did not pass"), and the words of
    # clauses with no negation cue ("she passed")
    negated: set[tuple[str, frozenset[str]]] = field(default_factory=set)
    affirmed: set[tuple[str, frozenset[str]]] = field(default_factory=set)
    # which way something moved in a clause naming no measure ("rescue therapy was needed less often"): (up or
    # down, the clause's word stems)
    moved: set[tuple[str, frozenset[str]]] = field(default_factory=set)

    def values(self, kind: str, key: str) -> set[str]:
        return {a.value for a in self.assertions if a.kind == kind and a.key == key}

    def tied_values(self, key: str, therapies: set[str]) -> set[str]:
        return {value for therapy, topic, value in self.tied if topic == key and therapy in therapies}

    def therapies_of(self, key: str) -> set[str]:
        return {therapy for therapy, topic, _ in self.tied if topic == key}


@dataclass(frozen=True)
class FrontMatter:
    """The case's failed and next therapies and outcome, as its summary passage states them."""

    failed: frozenset[str]
    next: frozenset[str]
    outcome: str


def _words(words: list[str]) -> str:
    """One alternation matching any of `words` as whole words, longest first."""
    alternatives = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(set(words), key=len, reverse=True))
    return rf"(?<![\w-])(?:{alternatives})(?![\w-])"


class ClaimReader:
    """Reads sentences into assertions with the vocabulary of knowledge/claims.yaml and the lexicon's names."""

    def __init__(self, vocabulary: dict, lexicon: Lexicon):
        self.v, self.lexicon = vocabulary, lexicon
        flags = re.IGNORECASE
        self.breaks = re.compile(vocabulary["clause_breaks"], flags)
        self.hypothetical = re.compile(_words(vocabulary["hypothetical"]), flags)
        self.rewrites = [(re.compile(pattern, flags), replacement)
                         for pattern, replacement in vocabulary["rewrites"].items()]
        self.brakes = re.compile(_words(vocabulary["brakes"]), flags)
        negation = vocabulary["negation"]
        self.negation = re.compile(_words(negation["cues"]) + r"|n't\b", flags)
        self.denials = re.compile(negation["denials"], flags)
        self.window = int(negation["window"])
        self.scope_ends = {word.lower() for word in negation["scope_ends"]}
        self.opposite: dict[str, str] = negation["opposite"]
        polarity = vocabulary["polarity"]
        self.polarity_skip = {stem(w) for w in polarity["skip"]}
        self.polarity_min = int(polarity["min_letters"])
        self.articles = set(polarity["articles"])
        self.lemmas: dict[str, str] = polarity["lemmas"]
        self.shared_words = int(polarity["shared_words"])
        self.reverse = {"up": "down", "down": "up"}
        self.actions = {value: [re.compile(self._therapy_slots(p), flags) for p in patterns]
                        for value, patterns in vocabulary["actions"].items()}
        self.roles = [(re.compile(self._therapy_slots(r["pattern"]), flags), r["A"], r["B"])
                      for r in vocabulary["roles"]]
        self.order_patterns = [re.compile(self._therapy_slots(p), flags) for p in vocabulary["order"]]
        self.together = re.compile(_words(vocabulary["together"]), flags)
        events = vocabulary["events"]
        self.started_after = [re.compile(self._therapy_slots(p), flags) for p in events["started_after"]]
        self.given_during = [re.compile(self._therapy_slots(p), flags) for p in events["given_during"]]
        self.untie = re.compile(rf"{_words(vocabulary['not_on'])}\s+(?:[\w'-]+\s+){{0,2}}$", flags)
        self.pronouns = re.compile(_words(vocabulary["pronouns"]), flags)
        self.elided_subject = re.compile(vocabulary["elided_subject"], flags)
        self.drug_measure = re.compile(r"\s+" + _words(vocabulary["drug_measures"]), flags)
        # the actions whose patterns name a drug's measurement ({L}): the others do not read "{T} levels"
        self.level_actions = {value for value, patterns in vocabulary["actions"].items()
                              if any("{L}" in p for p in patterns)}
        self.coordination = re.compile(vocabulary["coordination"], flags)
        self.valence = {value: re.compile(_words(words), flags) for value, words in vocabulary["valence"].items()}
        self.stable = self.valence.pop("stable")
        self.direction = {value: re.compile(_words(words), flags) for value, words in vocabulary["direction"].items()}
        self.measures = [(name, re.compile(_words(m["aliases"]), flags), m["better"])
                         for name, m in vocabulary["measures"].items()]
        self.measure_names = set(vocabulary["measures"])
        self.severity = {level: re.compile(_words(words), flags) for level, words in vocabulary["severity"].items()}
        self.grade = re.compile(vocabulary["grade"])
        self.sex = {sex: re.compile(_words(words), flags) for sex, words in vocabulary["sex"].items()}
        self.supports: dict[str, set[str]] = {k: set(v) for k, v in vocabulary["supports"].items()}
        self.contradicts: dict[str, set[str]] = {k: set(v) for k, v in vocabulary["contradicts"].items()}
        self.must_be_stated = set(vocabulary["must_be_stated"])
        self.outcome_rules_out: dict[str, set[str]] = {k: set(v) for k, v in vocabulary["outcome_rules_out"].items()}
        self.next_cannot_fail_when = set(vocabulary["next_cannot_fail_when"])
        self.recorded_supports: dict[str, set[str]] = {k: set(v) for k, v in vocabulary["recorded_supports"].items()}
        self.outcome_supports: dict[str, set[str]] = {k: set(v) for k, v in vocabulary["outcome_supports"].items()}
        self.failed_supports = set(vocabulary["failed_supports"])
        self.decided_on_therapy = set(vocabulary["decided_on_therapy"])
        self.join_adjacent = bool(vocabulary.get("join_adjacent"))
        labels = vocabulary["front_matter"]
        self.front_matter_fields = {re.compile(rf"(?:^|\.\s+){re.escape(label)}:\s*([^.]*(?:\.\d[^.]*)*)", flags): name
                                    for name, label in labels.items()}

    @classmethod
    def load(cls, path: Path, lexicon: Lexicon) -> ClaimReader:
        return cls(yaml.safe_load(path.read_text(encoding="utf-8")), lexicon)

    def _therapy_slots(self, pattern: str) -> str:
        """A pattern of claims.yaml as a regular expression, ending at a word's end."""
        return (pattern.replace("{W}", self.v["filler"]).replace("{L}", _words(self.v["drug_measures"]))
                .replace("{T}", f"(?P<T>{_TOKEN_RE})")
                .replace("{A}", f"(?P<A>{_TOKEN_RE})").replace("{B}", f"(?P<B>{_TOKEN_RE})") + r"(?!\w)")

    @cached_property
    def organ_patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        return [(t.canonical, re.compile(_words(list(t.aliases)), re.IGNORECASE))
                for t in self.lexicon.terms if t.group == "organs"]

    def therapies(self, text: str) -> tuple[str, list[str]]:
        """`text` with each therapy mention replaced by a numbered token, and the canonical name of each."""
        names: list[str] = []
        pattern = self.lexicon._pattern  # every alias, longest first

        def token(match: re.Match) -> str:
            terms = [t for t in self.lexicon.find(match.group(0)) if t.group == "therapies"]
            if not terms:
                return match.group(0)
            names.append(terms[0].canonical)
            return _TOKEN.format(len(names) - 1)

        tokenised = pattern.sub(token, text)
        # "mycophenolate mofetil (MMF)": the abbreviation in brackets is the same mention, not a second therapy
        tokenised = re.sub(rf"\s*\((?:{_TOKEN_RE})\)", "", tokenised)
        return tokenised, names

    def _resolve_pronouns(self, sentence: str) -> str:
        """`sentence` with each pronoun of claims.yaml `pronouns` replaced by the therapy named last before it
        ("persistent nausea forced it to stop", "tadalafil was added after it"), so patterns see the therapy."""
        mentions = [m for m in self.lexicon._pattern.finditer(sentence)
                    if any(t.group == "therapies" for t in self.lexicon.find(m.group(0)))]
        if not mentions:
            return sentence

        def therapy(match: re.Match) -> str:
            before = [m for m in mentions if m.end() <= match.start()]
            return before[-1].group(0) if before else match.group(0)

        return self.pronouns.sub(therapy, sentence)

    def _elided_subjects(self, sentence: str) -> str:
        """`sentence` with each verb phrase of claims.yaml `elided_subject` made a clause of its own, given the
        therapy its clause starts with as subject ("fluoxetine made no clear difference; fluoxetine was
        stopped"), or none when the clause starts with anything else (a person: "she ... and was able to")."""
        def clause(match: re.Match) -> str:
            start = max((b.end() for pattern in (self.breaks, _SENTENCE_END)
                         for b in pattern.finditer(sentence, 0, match.start())), default=0)
            head = _DETERMINER.match(sentence, start).end()
            subject = self.lexicon._pattern.match(sentence, head)
            named = subject and any(t.group == "therapies" for t in self.lexicon.find(subject.group(0)))
            return f"; {subject.group(0)} " if named else "; "

        return self.elided_subject.sub(clause, sentence)

    def front_matter(self, passages: list[str]) -> FrontMatter | None:
        """The front matter from the summary passage (the one stating an outcome and therapies), if given."""
        for passage in passages:
            found = {name: match.group(1).strip() for pattern, name in self.front_matter_fields.items()
                     if (match := pattern.search(passage))}
            if "outcome" in found or "failed" in found or "next" in found:
                def names(value: str) -> frozenset[str]:
                    return frozenset(self.lexicon.canonical("therapies", v) or v.strip()
                                     for v in value.split(",") if v.strip())
                return FrontMatter(names(found.get("failed", "")), names(found.get("next", "")),
                                   found.get("outcome", "unknown").split()[0].lower() if found.get("outcome") else "unknown")
        return None

    def read(self, sentence: str) -> Reading:
        for pattern, replacement in self.rewrites:
            sentence = pattern.sub(replacement, sentence)
        sentence = self._resolve_pronouns(self._elided_subjects(sentence))
        reading = Reading()
        for sex, pattern in self.sex.items():
            if pattern.search(sentence):
                reading.sexes.add(sex)
        reading.grades = {g.upper() for g in self.grade.findall(sentence)}
        for clause in self.breaks.split(sentence):
            if clause and clause.strip() and not self.hypothetical.match(clause.strip()):
                self._read_clause(clause, reading)
                self._read_words(clause, reading)
        tokenised, names = self.therapies(sentence)
        plain, _ = self._without_negation(tokenised)
        for pattern in self.order_patterns:
            for match in pattern.finditer(plain):
                a, b = names[_number(match.group("A"))], names[_number(match.group("B"))]
                if a != b:
                    reading.order.add((a, b))
        if self.together.search(plain):
            reading.together = {frozenset((a, b)) for a in names for b in names if a != b}
        # read with its negation: "rituximab was not started after the relapse" begins nothing
        for patterns, pairs in ((self.started_after, reading.started_after), (self.given_during, reading.given_during)):
            pairs |= {(names[_number(match.group("T"))], self._stems(match.group("E")))
                      for pattern in patterns for match in pattern.finditer(tokenised)}
        return reading

    def _stems(self, text: str) -> frozenset[str]:
        """The stems of the words of `text` that carry a claim, each name the lexicon knows as its canonical
        name ("VT" and "ventricular tachycardia" are one word), therapy tokens and organs left out (two events
        of one organ are not one event)."""
        text = re.sub(_TOKEN_RE, " ", text)
        names = {t.canonical.lower() for m in self.lexicon._pattern.finditer(text)
                 for t in self.lexicon.find(m.group(0)) if t.group != "organs"}
        plain = self.lexicon._pattern.sub(" ", text)
        return frozenset(w for w, _ in self._content([(m.group(0).lower(), m.start())
                                                      for m in re.finditer(r"[A-Za-z][\w'-]*", plain)])) | names

    def _content(self, words: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The (stem, position) of each word that carries a claim: long enough, outside `skip` and `scope_ends`."""
        return [(stem(self.lemmas.get(w, w)), at) for w, at in words
                if len(w) >= self.polarity_min and stem(w) not in self.polarity_skip and w not in self.scope_ends]

    def _read_words(self, clause: str, reading: Reading) -> None:
        """What the clause says beyond the vocabulary's events: which words it denies and, when it has no
        negation cue, which it affirms, so that "she did not pass the screening" can be held against "she
        passed" whatever the verb (a cue, or a denial such as "ruled out", denies the first word after it that
        carries a claim, within the negation window and its sentence and before a new subject: "needed no
        further transfusions"); and, naming no measure, which way something moved ("rescue therapy was needed
        less often"). Lexicon names are left to the assertions."""
        masked = self.lexicon._pattern.sub(lambda m: "_" * len(m.group(0)), clause)
        therapies = frozenset(self.therapies(clause)[1])
        words = [(m.group(0).lower(), m.start()) for m in re.finditer(r"[A-Za-z][\w'-]*", masked)]
        cues = [m.end() for pattern in (self.negation, self.denials) for m in pattern.finditer(clause)]
        content = self._content(words)
        if not any(pattern.search(clause) for _, pattern, _ in self.measures):
            stems = frozenset(w for w, _ in content)
            reading.moved |= {(direction, stems) for direction, pattern in self.direction.items()
                              for m in pattern.finditer(masked) if not self._negated(masked, cues, m.start(), m.end())}
        if not cues:
            reading.affirmed |= {(w, therapies) for w, _ in content}
            return
        for end in cues:
            following = [w for w, at in words if at >= end][:1]
            if following and following[0] in self.articles:  # "not a transplant": a thing, not an event, denied
                continue
            after = [(w, at) for w, at in content if at >= end and len(clause[end:at].split()) < self.window
                     and not _SENTENCE_END.search(clause, end, at)]
            ends = [at for w, at in words if at >= end and w in self.scope_ends]
            reading.negated |= {(w, therapies) for w, at in after[:1] if not ends or at < ends[0]}

    def _without_negation(self, text: str) -> tuple[str, list[int]]:
        """`text` without its negation cues, and where each stood (so patterns match the positive form)."""
        positions: list[int] = []
        pieces, last, removed = [], 0, 0
        for match in self.negation.finditer(text):
            pieces.append(text[last:match.start()])
            positions.append(match.start() - removed)
            removed += match.end() - match.start()
            last = match.end()
        pieces.append(text[last:])
        return "".join(pieces), positions

    def _negated(self, text: str, positions: list[int], start: int, end: int) -> bool:
        """A negation stood inside the match or at most `window` words before it, with no scope end between, the
        match's own first word included ("did not resolve despite macrogol" does not deny "despite macrogol")."""
        for position in positions:
            if start <= position <= end:
                return True
            between = text[position:start].lower().split()
            reach = set(between + text[start:end].lower().split()[:1])
            if position < start and len(between) <= self.window and not self.scope_ends & reach:
                return True
        return False

    def _read_clause(self, clause: str, reading: Reading) -> None:
        tokenised, names = self.therapies(clause)
        text, negations = self._without_negation(tokenised)
        acted: set[tuple[str, str]] = set()
        for pattern, role_a, role_b in self.roles:
            for match in pattern.finditer(text):
                for group, value in (("A", role_a), ("B", role_b)):
                    acted.add((names[_number(match.group(group))], value))
        # a negation is spent on the first event after it: "did not worsen his Raynaud's; MMF continued"
        events = [m.start() for pattern in self.valence.values() for m in pattern.finditer(text)]
        for value, patterns in self.actions.items():
            for pattern in patterns:
                for match in pattern.finditer(text):
                    if value not in self.level_actions and self.drug_measure.match(text, match.end("T")):
                        continue  # "reduced her sildenafil levels": the drug's level moved, not its dose
                    unspent = [p for p in negations if not any(p <= e < match.start() for e in events)]
                    negated = self._negated(text, unspent, match.start(), match.end())
                    acted.add((names[_number(match.group("T"))], self.opposite.get(value, value) if negated else value))
        for therapy, value in acted:
            if value not in ("start", "not_start") and (therapy, "not_start") in acted:
                continue
            reading.assertions.add(Assertion("action", therapy, value))

        masked = text
        measures: list[tuple[str, str, int, int]] = []
        for name, pattern, better in self.measures:
            for match in pattern.finditer(masked):
                measures.append((name, better, match.start(), match.end()))
        for _, _, start, end in measures:  # a measure's own words ("worsening events") carry no valence
            masked = masked[:start] + "_" * (end - start) + masked[end:]
        masked = re.sub(_TOKEN_RE, lambda m: "_" * len(m.group(0)), masked)
        organs = {canonical for canonical, pattern in self.organ_patterns if pattern.search(clause)}
        organ_spans = [(canonical, m.start(), m.end()) for canonical, pattern in self.organ_patterns
                       for m in pattern.finditer(text)]  # where each stands ("dialysis" names a therapy there)
        placed: list[tuple[str, int]] = []  # a valence word's value and where it stands
        for value, pattern in self.valence.items():
            for match in pattern.finditer(masked):
                negated = self._negated(masked, negations, match.start(), match.end())
                placed.append((self.opposite.get(value, value) if negated else value, match.start()))
        stable = [m for m in self.stable.finditer(masked)]
        if stable:
            negated = all(self._negated(masked, negations, m.start(), m.end()) for m in stable)
            placed.append(("not_stable" if negated else "stable", stable[0].start()))
        generic = {value for value, _ in placed}
        own: dict[str, set[str]] = {}
        if not stable:
            cues = [(m.start(), m.end(), d) for d, pattern in self.direction.items() for m in pattern.finditer(masked)]
            brakes = [(m.start(), m.end(), "brake") for m in self.brakes.finditer(masked)]
            for name, better, start, end in measures:
                near = [(min(abs(cs - end), abs(start - ce)), cs, ce, d) for cs, ce, d in cues
                        if len(masked[min(ce, start):max(cs, end)].split()) <= 4]
                if not near:
                    continue
                _, cs, ce, direction = min(near)
                negated = self._negated(masked, negations, cs, ce)
                if (any(e <= cs and len(masked[e:cs].split()) <= 3 for _, e, _ in cues + brakes)
                        or any(b >= ce and len(masked[ce:b].split()) <= 2 for b, _, _ in brakes)):
                    # "reduced the fall in FVC", "the loss halted": a movement braked, which is not its opposite
                    value = "not_good" if direction == better else "not_bad"
                    own.setdefault(name, set()).add(self.opposite[value] if negated else value)
                    continue
                good = (direction == better) != negated
                own.setdefault(name, set()).add(("good" if good else "bad") if not negated
                                                 else ("not_bad" if good else "not_good"))
        measured = {name for name, *_ in measures}
        topics = (measured | organs) or {OVERALL}
        # a clause about one therapy, not one after or before it ("in the year after CYC stopped, her FVC slid")
        on = {names[_number(m.group(0))] for m in re.finditer(_TOKEN_RE, text) if not self.untie.search(text[:m.start()])}
        tied = on if len(set(names)) == 1 else set()
        values_all = generic.union(*own.values())
        # A valence word belongs to the measure named nearest to it ("despite tight blood pressure control, kidney
        # function went on declining": the decline is the kidney's), and among several organs to the organ named
        # nearest to it ("rapidly progressive skin, a risk for renal crisis": the progression is the skin's); a
        # single organ or the patient takes every value.
        nearest = {(value, at): _nearest(measures, at) for value, at in placed} if measures else {}
        nearest_organ = {(value, at): self._coordinated(organ_spans, _nearest(organ_spans, at), text)
                         for value, at in placed} if len(organs) > 1 and organs == {o for o, *_ in organ_spans} else {}
        for topic in topics:
            if topic in measured:
                values = {value for value, at in placed if nearest[(value, at)] == topic} | own.get(topic, set())
            elif nearest_organ:
                values = {value for value, at in placed if topic in nearest_organ[(value, at)]}.union(*own.values())
            else:
                values = values_all
            for value in values:
                reading.assertions.add(Assertion("valence", topic, value))
                reading.tied |= {(therapy, topic, value) for therapy in tied}
        # severity words may include a measure's name ("low risk"), so they are looked for before its masking
        unmasked = re.sub(_TOKEN_RE, lambda m: "_" * len(m.group(0)), text)
        levels = {level for level, pattern in self.severity.items() for m in pattern.finditer(unmasked)
                  if not self._negated(unmasked, negations, m.start(), m.end())}  # "never reached low risk"
        for topic in topics:
            for level in levels:
                reading.assertions.add(Assertion("severity", topic, level))
        if generic:  # how the course went, in words; a measure's own movement is no verdict on the course
            reading.clauses.append((frozenset(names), frozenset(topics), frozenset(generic)))

    def _coordinated(self, spans: list[tuple[str, int, int]], organ: str, text: str) -> set[str]:
        """`organ` and the organs joined to it ("her skin and lungs improved": both did)."""
        joined = {organ}
        for _ in spans:
            for name, start, end in spans:
                if name not in joined and any(
                        self.coordination.fullmatch(text[min(end, e):max(start, s)])
                        for other, s, e in spans if other in joined):
                    joined.add(name)
        return joined

    def compare(self, claim: Reading, anchors: list[Reading], ranked: list[tuple[float, Reading]],
                front: FrontMatter | None, margin: float) -> list[str]:
        """What the claim asserts that the case does not: one problem per disagreement, in words. `anchors` are
        the case sentences the claim rests on; `ranked` every sentence of the case with its similarity to the
        claim, closest first: what the anchors do not say is taken from the closest sentences that say it
        (within `margin` of the closest), so an earlier stage ("a raised CK" at presentation) does not
        vouch for a claim about the outcome ("after rituximab her CK rose")."""
        problems: list[str] = []
        case = [reading for _, reading in ranked]
        for assertion in sorted(claim.assertions, key=lambda a: (a.kind, a.key, a.value)):
            kind, key, value = assertion.kind, assertion.key, assertion.value
            therapies = ({t for t, topic, v in claim.tied if topic == key and v == value}
                         if kind == "valence" and value in self.decided_on_therapy else set())

            def told(r: Reading) -> set[str]:
                """What `r` says of the key, leaving out how it went on another therapy than the claim's."""
                values = r.values(kind, key)
                return values - (r.tied_values(key, r.therapies_of(key) - therapies) - r.tied_values(key, therapies)) \
                    if therapies else values

            said = set().union(*(told(r) for r in anchors)) if anchors else set()
            if not said:
                stating = [(sim, told(r)) for sim, r in ranked if told(r)]
                said = set().union(*(v for sim, v in stating if sim >= stating[0][0] - margin)) if stating else set()
            if therapies:  # how it went on the therapy the claim names, as the case tells it for that therapy
                tied = (set().union(*(r.tied_values(key, therapies) for r in anchors))
                        or set().union(*(r.tied_values(key, therapies) for r in case)))
                said = tied or said
            if kind == "severity":
                if said and value not in said:
                    problems.append(f"it calls {key} {value}; the case says {', '.join(sorted(said))}")
                continue
            if said & self.supports.get(value, {value}) or self._recorded(claim, assertion, front):
                continue
            against = said & self.contradicts.get(value, set())
            if against:
                problems.append(f"it says {_say(kind, key, value)}; the case says {_list(kind, key, against)}")
            elif value in self.must_be_stated:
                problems.append(f"it says {_say(kind, key, value)}; the case does not")
        case_order = set().union(*(r.order for r in case)) if case else set()
        if front:
            case_order |= {(f, n) for f in front.failed - front.next for n in front.next - front.failed}
        case_together = set().union(*(r.together for r in case)) if case else set()
        for earlier, later in sorted(claim.order):
            if (later, earlier) in case_order and (earlier, later) not in case_order:
                problems.append(f"it puts {earlier} before {later}; the case has {later} first")
            elif frozenset((earlier, later)) in case_together - claim.together and (earlier, later) not in case_order:
                problems.append(f"it puts {earlier} before {later}; the case started them together")
        given_during = set().union(*(r.given_during for r in case)) if case else set()
        for therapy, event in sorted(claim.started_after, key=lambda p: (p[0], sorted(p[1]))):
            if any(t == therapy and len(event & other) >= self.shared_words for t, other in given_during):
                problems.append(f"it has {therapy} begun only after {' '.join(sorted(event))[:60]}; "
                                f"the case has it given then")
        case_sexes = set().union(*(r.sexes for r in case)) if case else set()
        if claim.sexes and case_sexes and not claim.sexes & case_sexes:
            problems.append(f"it speaks of a {'/'.join(sorted(claim.sexes))} patient; the case is about a "
                            f"{'/'.join(sorted(case_sexes))} one")
        case_grades = set().union(*(r.grades for r in case)) if case else set()
        for grade in sorted(claim.grades - case_grades):
            problems.append(f"the case gives no grade or class {grade}")
        problems += self._polarity(claim, anchors) + self._movement(claim, anchors)
        if front:
            problems += self._against_front_matter(claim, front)
        return problems

    def _movement(self, claim: Reading, anchors: list[Reading]) -> list[str]:
        """A movement the claim states the other way round from the sentences it rests on, about the same thing
        (`shared_words` of its words in common) where no measure names what moved."""
        said = set().union(*(r.moved for r in anchors)) if anchors else set()

        def stated(direction: str, words: frozenset[str]) -> bool:
            return any(d == direction and len(words & other) >= self.shared_words for d, other in said)

        return list(dict.fromkeys(
            f"it says {' '.join(sorted(words))[:60]} went {direction}; the case says the other way"
            for direction, words in sorted(claim.moved, key=lambda m: (m[0], sorted(m[1])))
            if stated(self.reverse[direction], words) and not stated(direction, words)))

    @staticmethod
    def _polarity(claim: Reading, anchors: list[Reading]) -> list[str]:
        """Words the claim denies that the sentences it rests on only affirm, and the other way round, where
        those sentences speak of no therapy the claim does not ("cyclophosphamide did not help" says nothing
        against "rituximab helped")."""
        denied = set().union(*(r.negated for r in anchors)) if anchors else set()
        affirmed = set().union(*(r.affirmed for r in anchors)) if anchors else set()

        def said(word: str, therapies: frozenset[str], pairs: set[tuple[str, frozenset[str]]]) -> bool:
            return any(w == word and named <= therapies for w, named in pairs)

        claim_denies = {w for w, _ in claim.negated}
        problems = []
        for word, therapies in sorted(claim.negated, key=lambda p: (p[0], sorted(p[1]))):
            if said(word, therapies, affirmed) and not said(word, therapies, denied):
                problems.append(f"it denies '{word}'; the case affirms it")
        for word, therapies in sorted(claim.affirmed, key=lambda p: (p[0], sorted(p[1]))):
            if word not in claim_denies and said(word, therapies, denied) and not said(word, therapies, affirmed):
                problems.append(f"it affirms '{word}'; the case denies it")
        return list(dict.fromkeys(problems))

    def _recorded(self, claim: Reading, assertion: Assertion, front: FrontMatter | None) -> bool:
        """The front matter states the assertion: a therapy recorded as failed did fail (and what a clause about
        it alone says went badly did), and the recorded outcome holds for a clause about the patient or what
        followed. The front matter is the case's own summary, so it outranks passage sentences about an earlier
        stage ("kidney function kept falling" before it stabilised) or about another effect of the same drug
        ("blood pressure controlled on the ACE inhibitor")."""
        if front is None:
            return False
        if assertion.kind == "action":
            return any(assertion.key in therapies and assertion.value in self.recorded_supports[field_name]
                       for field_name, therapies in (("failed", front.failed), ("next", front.next)))
        if assertion.kind != "valence":
            return False
        on = {t for t, topic, value in claim.tied if topic == assertion.key and value == assertion.value}
        if on and on <= front.failed - front.next and assertion.value in self.failed_supports:
            return True  # "plasmapheresis did not help the TMA": it is recorded as failed
        if assertion.value not in self.outcome_supports.get(front.outcome, set()):
            return False
        return any(assertion.key in topics and assertion.value in values and therapies <= front.next - front.failed
                   for therapies, topics, values in claim.clauses)

    def _against_front_matter(self, claim: Reading, front: FrontMatter) -> list[str]:
        problems = [problem for _, problem in self.action_conflicts(claim, front)]
        return list(dict.fromkeys(problems + self.outcome_conflicts(claim, front)))

    def action_conflicts(self, claim: Reading, front: FrontMatter) -> list[tuple[str, str]]:
        """(front-matter field, problem) for each thing the claim says was done that the front matter denies."""
        problems = []
        for a in claim.assertions:
            if a.kind != "action":
                continue
            if a.value == "work" and a.key in front.failed - front.next:
                problems.append(("failed_therapies", f"it says {a.key} worked; the case records it as failed"))
            if a.value == "fail" and a.key in front.next - front.failed and front.outcome in self.next_cannot_fail_when:
                problems.append(("next_therapies", f"it says {a.key} failed; the case records it as what followed, "
                                                   f"outcome {front.outcome}"))
            if a.value == "not_start" and a.key in front.failed | front.next:
                field_name = "failed_therapies" if a.key in front.failed else "next_therapies"
                problems.append((field_name, f"it says {a.key} was not given; the case records it as given"))
        return problems

    def outcome_conflicts(self, claim: Reading, front: FrontMatter) -> list[str]:
        """How the claim says the course went, about the patient or what followed, where the outcome rules it out."""
        problems = []
        ruled_out = self.outcome_rules_out.get(front.outcome, set())
        for therapies, topics, values in claim.clauses:
            if topics & self.measure_names:
                continue
            about_next = therapies and therapies <= front.next - front.failed
            about_patient = not therapies and topics == {OVERALL}
            if (about_next or about_patient) and values & ruled_out:
                problems.append(f"it says the course was {', '.join(sorted(values & ruled_out))}; "
                                f"the case's outcome is {front.outcome}")
        return list(dict.fromkeys(problems))


def _nearest(spans: list[tuple], at: int) -> str:
    """The name of the span (name, ..., start, end) closest to position `at`."""
    return min(spans, key=lambda m: min(abs(at - m[-2]), abs(at - m[-1])))[0]


def _number(token: str) -> int:
    return int(token[1:-1])


def _say(kind: str, key: str, value: str) -> str:
    return f"{key} {value.replace('_', ' ')}" if kind == "action" else f"{key}: {value.replace('_', ' ')}"


def _list(kind: str, key: str, values: set[str]) -> str:
    return " / ".join(_say(kind, key, v) for v in sorted(values))
