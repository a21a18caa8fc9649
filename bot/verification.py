"""Generated text -> checked text: every citation marker and every sentence checked against the passages
the model was given, before anything is shown.

A marker for a case the model was not given is removed. A sentence is supported when a case it cites holds
every therapy, organ, antibody, drug-like name, dose and number it states, is close to it in meaning (MiniLM
cosine similarity) and closer to it than to any other case the model was given, and asserts what the case's
sentences it rests on assert (bot/claims.py: outcome and direction, therapy actions, negation, severity,
order, who) in agreement with the case's front matter; with CASEBOT_VERIFIER=llm the configured model must
then also say that the cited passages support it (ModelJudge). Unsupported sentences lose their markers (no case
vouches for them), are marked with UNVERIFIED_MARK and are listed, so the answer never shows a citation that
its case does not support.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.prompts import ChatPromptTemplate

from bot.answer import prompt
from bot.claims import CLAIMS, ClaimReader, FrontMatter, Reading
from bot.generation import BackendError, ChatBackend
from bot.lexicon import Lexicon
from bot.settings import Settings
from bot.text import sentences

UNVERIFIED_MARK = "⚠"
# Lexicon groups whose names a sentence may only state when its cited passages state them too.
CHECKED_GROUPS = ("therapies", "antibodies", "organs")
BRACKETS = re.compile(r"\[([^\[\]\n]*)\]")
CASE_ID = re.compile(r"[a-z0-9-]+")
LIST_PREFIX = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
# A sentence runs to . ! or ? followed by space or the end (so "2.5 mg" stays whole), taking any markers after it.
SENTENCE = re.compile(r"\S.*?(?:[.!?]+(?:\s*\[[^\[\]\n]*\])*(?=\s|$)|$)")
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w])")
DOSE = re.compile(r"(\d+(?:\.\d+)?)\s*(mg/kg|mg/m2|mg/m²|mg|mcg|µg|μg|g|ml|mL|IU|units?|%)(?![\w])", re.IGNORECASE)
# International non-proprietary name stems: drug names the lexicon may not list (an invented "-mab" too).
DRUG_LIKE = re.compile(r"\b[A-Za-z]{4,}(?:mab|nib|pril|sartan|sentan|ciguat|afil|olimus|cept)\b", re.IGNORECASE)
MARKDOWN = re.compile(r"[*_`#>]+")
# Measured on the shipped library's probes (tests/probes/claims.yaml, bench/verifier.py): the passage units
# a sentence rests on are those within ANCHOR_MARGIN of its closest one; a sentence closer by more than
# CASE_MARGIN to another case the model was given is that case's, not the cited one's.
ANCHOR_MARGIN = 0.1
# What the anchors do not say is taken from the case sentences within FALLBACK_MARGIN of the closest one saying it.
FALLBACK_MARGIN = 0.2
CASE_MARGIN = 0.05
# Sentence vectors kept between answers: the same passages come back question after question.
CACHE_LIMIT = 50_000


@dataclass
class SentenceCheck:
    """One sentence of the generated text and what the check found."""

    text: str  # as the model wrote it, markers included
    claim: str  # the words alone: markers and Markdown removed
    cited: list[str]  # cited cases the model was given
    supporting: list[str] = field(default_factory=list)  # cited cases whose passages support it
    evidence: dict[str, str] = field(default_factory=dict)  # case id -> its passage sentence closest to the claim
    problems: list[str] = field(default_factory=list)
    states_facts: bool = True  # False for connecting words ("Here is what the cases show:")

    @property
    def supported(self) -> bool:
        return bool(self.supporting) and not self.problems

    @property
    def words(self) -> str:
        """The sentence without its markers, as it is shown."""
        return _tidy(BRACKETS.sub("", self.text))


@dataclass
class Verification:
    text: str  # what may be shown: checked markers kept, unsupported sentences marked
    checks: list[SentenceCheck]
    removed: list[str]  # markers of cases the model was not given, as written

    @property
    def verified(self) -> list[SentenceCheck]:
        return [c for c in self.checks if c.supported]

    @property
    def unsupported(self) -> list[SentenceCheck]:
        return [c for c in self.checks if c.states_facts and not c.supported]

    def cited(self) -> list[str]:
        """Cases cited in `text`, in order of first citation."""
        return list(dict.fromkeys(cid for check in self.verified for cid in check.supporting))

    def evidence(self, case_id: str) -> list[str]:
        """The passage sentences of `case_id` that support the sentences citing it, verbatim."""
        return list(dict.fromkeys(c.evidence[case_id] for c in self.verified if case_id in c.supporting))


class ModelJudge:
    """CASEBOT_VERIFIER=llm: the configured model asked, for each sentence the claim check let through, whether
    the passages it cites support it (prompts/verify.md); only a reply starting "yes" keeps the citation."""

    def __init__(self, backend: ChatBackend, prompts_dir: Path):
        self.backend, self.prompts_dir = backend, prompts_dir

    def problem(self, sentence: str, case_id: str, passages: list[str]) -> str | None:
        """Why the model does not vouch for `sentence` citing `case_id`, or None when it does."""
        passage = prompt(self.prompts_dir, "passage.md")
        shown = "\n".join(passage.format(case_id=case_id, section="cited", text=text) for text in passages)
        messages = ChatPromptTemplate.from_messages([("human", prompt(self.prompts_dir, "verify.md"))]) \
            .format_messages(passages=shown, sentence=sentence)
        try:
            reply = self.backend.complete(messages).strip()
        except BackendError as error:  # no judge, no vouching: the sentence is shown unverified
            return f"the model judge could not be asked: {error}"
        if reply.lower().lstrip("\"'*").startswith("yes"):
            return None
        return f"the model judge ({self.backend.describe()}) does not find it in [{case_id}]: {reply[:80]!r}"


def citation_verifier(settings: Settings, lexicon: Lexicon, embedder: Embeddings) -> CitationVerifier:
    """The citation check `settings` ask for: the claim check, and with `verifier: llm` the model judge on top."""
    judge = ModelJudge(ChatBackend(settings), settings.prompts_dir) if settings.verifier == "llm" else None
    return CitationVerifier(lexicon, embedder, settings.verify_min_similarity, judge=judge)


class CitationVerifier:
    def __init__(self, lexicon: Lexicon, embedder: Embeddings, min_similarity: float, claims: Path = CLAIMS,
                 anchor_margin: float = ANCHOR_MARGIN, case_margin: float = CASE_MARGIN,
                 judge: ModelJudge | None = None):
        self.lexicon, self.embedder, self.min_similarity = lexicon, embedder, min_similarity
        self.judge = judge
        self.reader = ClaimReader.load(claims, lexicon)
        self.anchor_margin, self.case_margin = anchor_margin, case_margin
        self._vectors: dict[str, np.ndarray] = {}
        self._readings: dict[str, Reading] = {}
        self._cache_lock = threading.Lock()

    def verify(self, text: str, passages: dict[str, list[str]]) -> Verification:
        """Check `text` against `passages` (case id -> the passages the model was given for that case)."""
        removed: list[str] = []
        lines: list[tuple[str, list[SentenceCheck]]] = []
        for line in text.strip().splitlines():
            prefix = LIST_PREFIX.match(line)
            body = BRACKETS.sub(_parenthesised_unless_marker, line[prefix.end():] if prefix else line)
            checks = []
            for match in SENTENCE.finditer(body):
                cited = []
                for group in BRACKETS.findall(match.group(0)):
                    for part in _marker_ids(group):
                        if part in passages:
                            cited.append(part)
                        else:
                            removed.append(f"[{part}]")
                claim = _tidy(MARKDOWN.sub("", BRACKETS.sub("", match.group(0))))
                checks.append(SentenceCheck(match.group(0), claim, list(dict.fromkeys(cited))))
            lines.append((prefix.group(0) if prefix else "", checks))
        all_checks = [check for _, line_checks in lines for check in line_checks]
        self._check(all_checks, passages)
        shown = "\n".join(prefix + " ".join(_shown(check) for check in checks) for prefix, checks in lines)
        return Verification(shown.strip(), all_checks, list(dict.fromkeys(removed)))

    def _check(self, checks: list[SentenceCheck], passages: dict[str, list[str]]) -> None:
        """Fill in each sentence's supporting cases, their evidence, and what is wrong with it."""
        citing = [c for c in checks if c.cited and c.claim]
        for check in checks:
            if not check.claim:
                check.states_facts = False
            elif not check.cited and self._stated_terms(check.claim):
                check.problems.append("it cites no case that the answer was built from")
            elif not check.cited:
                check.states_facts = False  # connecting words: nothing to check
        if not citing:
            return
        # Every case the model was given, not only the cited ones: a sentence may belong to a neighbour.
        units = {cid: self._units(texts) for cid, texts in passages.items()}
        vectors = self._embed([c.claim for c in citing] + [u for cid in units for u in units[cid]])
        claim_vectors = vectors[: len(citing)]
        offset, unit_vectors = len(citing), {}
        for cid in units:
            unit_vectors[cid], offset = vectors[offset: offset + len(units[cid])], offset + len(units[cid])
        fronts = {cid: self.reader.front_matter(texts) for cid, texts in passages.items()}
        for check, vector in zip(citing, claim_vectors):
            best = {cid: unit_vectors[cid] @ vector for cid in units if len(units[cid])}
            top = {cid: float(sims.max()) for cid, sims in best.items()}
            claim = self._read(check.claim)
            rejections: list[str] = []  # why a cited case does not vouch: reported when none does
            for cid in check.cited:
                if cid not in best or top[cid] < self.min_similarity:
                    continue
                # a sentence much closer to another case given is that case's, unless that case contradicts it
                rivals = [other for other in top if other != cid and top[other] > top[cid] + self.case_margin]
                rival = next((other for other in sorted(rivals, key=top.get, reverse=True)
                              if not self._disagreements(claim, best[other], units[other], fronts[other])), None)
                if rival:
                    rejections.append(f"it is closer to [{rival}] than to [{cid}]")
                    continue
                sims = best[cid]
                disagreements = self._disagreements(claim, sims, units[cid], fronts[cid])
                if not disagreements and self.judge:
                    disagreements = [p for p in [self.judge.problem(check.claim, cid, passages[cid])] if p]
                if disagreements:
                    rejections += [f"[{cid}]: {d}" for d in disagreements]
                    continue
                check.supporting.append(cid)
                check.evidence[cid] = units[cid][int(sims.argmax())].replace(" \u2063", " ")
            if not check.supporting:
                check.problems += rejections or [f"it is not close in meaning to any passage of {_markers(check.cited)}"]
            holders = check.supporting or check.cited
            held = " ".join(_normalised(p) for cid in holders for p in passages[cid])
            missing = [label for label, spellings in self._stated_terms(check.claim)
                       if not any(_contains(held, spelling) for spelling in spellings)]
            if missing:
                check.problems.append(f"{_markers(holders)} does not mention {', '.join(missing)}")

    def _disagreements(self, claim: Reading, sims: np.ndarray, units: list[str],
                       front: FrontMatter | None) -> list[str]:
        """What the claim asserts that one case, whose passage units have similarities `sims` to it, does not."""
        anchors = [self._read(units[i]) for i in np.argsort(-sims) if sims[i] >= sims.max() - self.anchor_margin]
        ranked = [(float(sims[i]), self._read(units[i])) for i in np.argsort(-sims) if " \u2063" not in units[i]]
        return self.reader.compare(claim, anchors, ranked, front, FALLBACK_MARGIN)

    def _units(self, texts: list[str]) -> list[str]:
        """A case's passage sentences, then each pair of adjacent ones (joined by a marked space), so that
        a sentence joining two of them is compared with both."""
        single = [s for text in texts for s in sentences(text)]
        if not self.reader.join_adjacent:
            return single
        pairs = [f"{a} \u2063{b}" for text in texts for a, b in zip(sentences(text), sentences(text)[1:])]
        return single + pairs

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Normalised vectors of `texts`, from the cache where the same text was embedded before."""
        with self._cache_lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if todo:
            fresh = np.asarray(self.embedder.embed_documents(todo), dtype=np.float32)
            with self._cache_lock:
                if len(self._vectors) + len(todo) > CACHE_LIMIT:
                    self._vectors.clear()
                self._vectors.update(zip(todo, fresh))
        with self._cache_lock:
            found = [self._vectors.get(t) for t in texts]
        missing = [t for t, v in zip(texts, found) if v is None]  # cleared meanwhile by another thread
        if missing:
            again = dict(zip(missing, np.asarray(self.embedder.embed_documents(missing), dtype=np.float32)))
            found = [v if v is not None else again[t] for t, v in zip(texts, found)]
        return np.array(found, dtype=np.float32).reshape(len(texts), -1)

    def _read(self, text: str) -> Reading:
        reading = self._readings.get(text)
        if reading is None:
            reading = self.reader.read(text.replace(" \u2063", " "))
            if len(self._readings) > CACHE_LIMIT:
                self._readings.clear()
            self._readings[text] = reading
        return reading

    def _stated_terms(self, claim: str) -> list[tuple[str, list[str]]]:
        """What the sentence states that its passages must state too: (label, accepted spellings) pairs."""
        terms: list[tuple[str, list[str]]] = []
        rest = claim
        for surface, named in self.lexicon.mentions(claim):
            checked = [t for t in named if t.group in CHECKED_GROUPS]
            if checked:
                terms.append((surface, [alias for t in checked for alias in t.aliases]))
            for term in named:
                rest = self.lexicon.strip(rest, term)
        terms += [(name, [name]) for name in dict.fromkeys(m.group(0) for m in DRUG_LIKE.finditer(rest))]
        doses = [f"{amount} {unit}" for amount, unit in DOSE.findall(claim)]
        terms += [(dose, [dose]) for dose in dict.fromkeys(doses)]
        terms += [(number, [number]) for number in dict.fromkeys(NUMBER.findall(DOSE.sub("", rest)))]
        return terms


def _normalised(text: str) -> str:
    """Lower case, one space between a number and its unit, so "150mg" and "150 mg" compare equal."""
    return DOSE.sub(lambda m: f"{m.group(1)} {m.group(2)}", text).lower()


def _contains(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(_normalised(phrase))}(?![\w])", text) is not None


def _marker_ids(group: str) -> list[str]:
    """The case ids in a bracket group ("a", "a, b"); none when it is not a citation ("[see above]")."""
    parts = [part.strip().lower() for part in re.split(r"[,;]", group)]
    return parts if all(CASE_ID.fullmatch(part) for part in parts) else []


def _parenthesised_unless_marker(match: re.Match) -> str:
    """Brackets that hold no case ids become parentheses, so nothing shown can pass for a marker."""
    return match.group(0) if _marker_ids(match.group(1)) else f"({match.group(1)})"


def _tidy(text: str) -> str:
    """Single spaces, none before punctuation (where a removed marker stood)."""
    return re.sub(r"\s+([.!?,;:])", r"\1", re.sub(r"\s+", " ", text)).strip()


def _markers(case_ids: list[str]) -> str:
    return " ".join(f"[{cid}]" for cid in case_ids)


def _shown(check: SentenceCheck) -> str:
    """The sentence as shown: with its supporting markers only, or with none and the unverified mark."""
    if not check.states_facts:
        return check.words
    if not check.supported:
        return f"{check.words} {UNVERIFIED_MARK}"
    body, end = re.fullmatch(r"(.*?)([.!?]*)", check.words, re.DOTALL).groups()
    return f"{body} {_markers(check.supporting)}{end}"
