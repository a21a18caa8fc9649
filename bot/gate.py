"""Answer or refuse: the relevance gate, calibrated on the library it guards.

A question naming a therapy, organ, antibody or condition of the lexicon that no case of the library mentions
is refused outright: "pirfenidone in SSc-ILD?" must not be answered from a nintedanib case. Otherwise a
question is answered from a case when a small logistic model over four signals says the case bears on it:
the best cosine similarity between the question and the case's chunks, the share (IDF-weighted) of the
question's concepts the case holds, the share the library holds anywhere (low for "the capital of France",
whichever case it is compared with), and similarity x coverage (a case must be both near in meaning and hold
the words). Fixed thresholds tuned on one library misfire on another, so the model is fitted on each library
itself: positives are questions written from its own cases by the templates of knowledge/gate_calibration.yaml,
half of them with an everyday word of the library their case does not use (as real questions have), negatives
the off-topic bank there minus the questions whose topic the library holds. The fit is cached beside the side
index, keyed by the library's version, and refitted when the library changes. `casebot calibrate` prints it.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel

from bot.cases import Case
from bot.chunking import SUMMARY_SECTION
from bot.retrieval import CaseHit, Concept, Retriever
from bot.settings import Settings
from bot.text import sentences, tokenize

FEATURES = ("similarity", "coverage", "library_coverage", "support")
GATE_VERSION = "logistic-v12"  # part of the cache key: a change to features or fitting refits every library
L2 = 1.0  # ridge penalty of the fit, on standardised features
WINDOW_WORDS = 6
# The sentences calibration questions are written from: whole ones. A snippet cut mid-word ("Nodu events", "highl")
# gives a question of fragments that nothing is near, and teaches the fit that questions far from every case are
# answered (the external set's similarity weight fell and unrelated questions got through).
WHOLE_SENTENCE = re.compile(r"^[\"'(]?[A-Z0-9].*\S\s+\S.*\S\s+\S.*[.!?][\"')]?$")
COMPLETE = 1.0 - 1e-9  # a coverage this high holds every concept of the question


class GateDecision(BaseModel):
    """Why a question was answered or refused, as the answer object shows it."""

    answer: bool
    score: float | None  # None: refused without a case to score (none retrieved, or a term no case holds)
    threshold: float
    features: dict[str, float]
    reason: str
    unheld: list[str] = []  # what the question names that no case of the library mentions
    nothing_asked: bool = False  # a new question whose words name nothing to look for ("how is she now?" first)


class GateModel(BaseModel):
    """The fitted gate: score = bias + weights . features; a case passes when score >= threshold."""

    key: str
    weights: list[float]
    bias: float
    threshold: float
    positives: int
    negatives: int
    false_refusals: int
    false_answers: int
    margin: float  # the width of the score interval that gives the fewest errors

    def score(self, values: np.ndarray) -> float:
        return float(self.bias + np.dot(self.weights, values))


def features(hit: CaseHit, library_coverage: float) -> np.ndarray:
    """`support` (similarity x coverage) is high only when the case is both near in meaning and holds the
    question's words: "Who won the 2018 World Cup?" finds a case holding "world" and "cup" but nothing near."""
    return np.array([hit.similarity, hit.coverage, library_coverage, hit.similarity * hit.coverage])


class Padding(BaseModel):
    """Which share of the calibration questions get words their case lacks, and how many (see `_padded`)."""

    share: float
    words: list[int]
    chunk_share: tuple[float, float]  # an everyday word of the library is in this share of its chunks


class Calibration(BaseModel):
    templates: dict[str, list[str]]
    padding: Padding
    off_topic: list[dict[str, object]]

    @classmethod
    def load(cls, path: Path) -> Calibration:
        return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


class Gate:
    """The one place a question is answered or refused, and the lead case chosen."""

    def __init__(self, settings: Settings, cache: Path):
        self.settings, self.cache = settings, cache
        self.calibration = Calibration.load(settings.gate_calibration_path)
        self._model: GateModel | None = None
        self._fitting = threading.Lock()

    def model(self, retriever: Retriever) -> GateModel:
        """The fit for the retriever's library version: from memory, the cache file, or fitted now."""
        key = self._key(retriever)
        if self._model is not None and self._model.key == key:
            return self._model
        with self._fitting:
            if self._model is None or self._model.key != key:
                self._model = self._cached(key) or self._fit_and_store(retriever, key)
            return self._model

    def decide(self, hits: list[CaseHit], concepts: list[Concept], retriever: Retriever, anchored: bool = False
               ) -> tuple[list[CaseHit], GateDecision]:
        """The cases to answer from (lead first, in ranked order; empty to refuse) and the decision's reasons.
        `anchored`: the question is tied to cases by something besides its words, a follow-up on the last
        answer's cases (bot/resolution.py) or filters ("what was tried when first-line treatment failed?" with
        organ: kidney), so words that only point ("and the outcome?") are enough."""
        model = self.model(retriever)
        known = retriever.library_coverage(concepts)
        if not concepts and not anchored:  # every case "holds all" of nothing: coverage would be 1.0 everywhere
            return [], GateDecision(
                answer=False, score=None, threshold=round(model.threshold, 3), features={}, nothing_asked=True,
                reason="refused: the question names nothing to look for (a therapy, organ, finding or word of a "
                       "case), and neither an earlier answer in this conversation nor a filter says what it means")
        unheld = [c.label for c in concepts if c.lexical and not retriever.library_holds(c)]
        if unheld:  # the question is about something no case has: a near-domain case would be a wrong answer
            return [], GateDecision(
                answer=False, score=None, threshold=round(model.threshold, 3),
                features={"library_coverage": round(known, 3)}, unheld=unheld,
                reason=f"refused: it names {', '.join(unheld)}, which no case of this library mentions")
        scored = [(hit, model.score(features(hit, known))) for hit in hits]
        passing = [(hit, s) for hit, s in scored if s >= model.threshold]
        rank = {id(hit): position for position, hit in enumerate(hits)}
        best = max((hit.coverage for hit, _ in passing), default=0.0)

        def precedence(hit: CaseHit) -> tuple[bool, int, bool, float, int]:
            """Among the cases holding (nearly) all the question asks, one recording most of the failures it names
            (and the therapy it asks about given next), then rank: a case that records "PPI failed" but not the
            SIBO asked about does not lead a SIBO question."""
            near_best = hit.coverage >= best - self.settings.lead_coverage_tolerance
            return (near_best, hit.records_failure, hit.records_next, hit.coverage if not near_best else 0.0,
                    -rank[id(hit)])

        top = max(scored, key=lambda item: item[1], default=None)
        shown = max(passing, key=lambda item: precedence(item[0])) if passing else top
        values = {"similarity": round(shown[0].similarity, 3), "coverage": round(shown[0].coverage, 3),
                  "library_coverage": round(known, 3)} if shown else {"library_coverage": round(known, 3)}
        score = round(shown[1], 3) if shown else None
        signals = ", ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in values.items())
        verdict = "answered" if passing else "refused"
        where = f" from {shown[0].case.id}" if passing else ""
        decision = GateDecision(
            answer=bool(passing), score=score, threshold=round(model.threshold, 3), features=values,
            reason=f"{verdict}{where}: {signals}; score {'none' if score is None else f'{score:.2f}'} against "
                   f"{model.threshold:.2f}, the threshold "
                   f"fitted on {model.positives} questions from this library and {model.negatives} off-topic ones")
        if not passing:
            return [], decision
        lead = shown[0]
        close = sorted((hit for hit, _ in passing if hit is not lead and self._companion(hit, lead)),
                       key=lambda h: -(h.coverage + h.similarity))
        return [lead, *close][: self.settings.max_cases], decision

    def _companion(self, hit: CaseHit, lead: CaseHit) -> bool:
        """Whether a further case is cited beside the lead: it holds nearly as much of the question and is nearly
        as near in meaning, or, like the lead, gave the therapy the question asks about and holds all it asks
        (every eculizumab case answers "eculizumab in SRC outcomes", however it is worded); but not a case that
        started a therapy the question says failed, beside a lead recording that failure (the case that began
        ambrisentan is no answer to "ambrisentan + tadalafil not enough")."""
        if lead.records_failure and hit.starts_failed:
            return False
        near = hit.similarity >= lead.similarity - self.settings.gate_similarity_gap
        holds_all = hit.coverage >= COMPLETE
        return hit.coverage >= lead.coverage * self.settings.gate_case_ratio and (
            near or hit.records_next and lead.records_next and holds_all)

    # -- calibration ---------------------------------------------------------------------------------------

    def _key(self, retriever: Retriever) -> str:
        files = [self.settings.gate_calibration_path, self.settings.lexicon_path, self.settings.question_language_path]
        digest = hashlib.sha256(GATE_VERSION.encode())
        for path in files:
            digest.update(path.read_bytes())
        digest.update(f"{self.settings.retrieval}/{self.settings.candidates}/{self.settings.rrf_k}/"
                      f"{self.settings.gate_calibration_questions}".encode())
        return f"{retriever.side.version}:{digest.hexdigest()[:16]}"

    def _cached(self, key: str) -> GateModel | None:
        try:
            model = GateModel.model_validate_json(self.cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return model if model.key == key and len(model.weights) == len(FEATURES) else None

    def _fit_and_store(self, retriever: Retriever, key: str) -> GateModel:
        model = fit(retriever, self.calibration, self.settings.gate_calibration_questions, key)
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache.with_name(f"{self.cache.name}.{threading.get_ident()}.tmp")
            tmp.write_text(model.model_dump_json(indent=1), encoding="utf-8")
            tmp.replace(self.cache)
        except OSError:
            pass  # a read-only or full disk: the fit is kept in memory and redone by the next process
        return model


def example_questions(retriever: Retriever, calibration: Calibration, limit: int) -> list[tuple[str, str]]:
    """(question, case id) written from the library's own cases by the calibration templates; at most
    `limit`, over a fixed sample of cases so a large library is calibrated in seconds."""
    cases = sorted(retriever.cases.values(), key=lambda c: c.id)
    per_case = 6
    if len(cases) * per_case > limit:
        cases = random.Random(0).sample(cases, max(1, limit // per_case))
    pool = _common_words(retriever, calibration.padding.chunk_share)
    out = []
    for case in cases:
        rng, padding = random.Random(case.id), random.Random(f"padding:{case.id}")
        for question in _questions_of(case, retriever, calibration.templates, rng):
            if pool and padding.random() < calibration.padding.share:
                question = _padded(question, case, pool, retriever, padding.choice(calibration.padding.words),
                                   padding)
            out.append((question, case.id))
    return out[:limit] if len(out) > limit else out


def _common_words(retriever: Retriever, chunk_share: tuple[float, float]) -> list[str]:
    """The library's everyday words (in `chunk_share` of its chunks, 1-10% as shipped: "mechanism", "treated",
    "function"), one surface form each: what a real question adds around the rare words of its case."""
    freq = retriever.side.doc_freq
    if not freq:
        return []
    low, high = (share * len(retriever.side.chunk_ids) for share in chunk_share)
    words: dict[str, str] = {}
    for case_id in sorted(retriever.cases):
        for meta in retriever.side.case_passages(case_id):
            for word in re.findall(r"[A-Za-z]{4,}", meta["text"]):
                token = retriever.stem(word)
                if low <= freq.get(token, 0) <= high and word.lower() not in retriever.lexicon.filler:
                    words.setdefault(token, word.lower())
    return sorted(words.values())


def _padded(question: str, case: Case, pool: list[str], retriever: Retriever, n: int, rng: random.Random) -> str:
    """The question with `n` everyday words of the library that the case itself does not use: real questions
    ("What is the mechanism of action of lanifibranor?") hold the case's rare word and words it lacks, so a gate
    calibrated only on questions the case covers entirely refuses them."""
    held = retriever.side.case_tokens.get(case.id, set())
    foreign = [w for w in rng.sample(pool, min(len(pool), 20 * n)) if retriever.stem(w) not in held][:n]
    return f"{question.rstrip('?.')} {' '.join(foreign)}?" if foreign else question


def _questions_of(case: Case, retriever: Retriever, templates: dict[str, list[str]], rng: random.Random) -> list[str]:
    organ = case.organs[0] if case.organs else "the"
    questions = []
    if case.failed_therapies:
        questions.append(rng.choice(templates["failed"]).format(failed=rng.choice(case.failed_therapies), organ=organ))
    if case.next_therapies:
        questions.append(rng.choice(templates["next"]).format(next=rng.choice(case.next_therapies)))
    if case.antibodies and case.organs:
        questions.append(rng.choice(templates["antibody"]).format(antibody=case.antibodies[0], organ=organ))
    questions.append(rng.choice(templates["title"]).format(title=case.title.rstrip(".")))
    text = [s for meta in retriever.side.case_passages(case.id) if meta["section"] != SUMMARY_SECTION
            for s in sentences(meta["text"])]
    text = [s for s in text if WHOLE_SENTENCE.match(s)] or text
    for sentence in rng.sample(text, min(len(text), 6 - len(questions))):
        words = _around_rarest_word(sentence, retriever)
        if words:
            questions.append(rng.choice(templates["words"]).format(words=" ".join(words)))
    return questions


def _around_rarest_word(sentence: str, retriever: Retriever) -> list[str]:
    """WINDOW_WORDS consecutive words of the sentence around its rarest content word: how a terse question reads
    ("nintedanib added to mycophenolate"). Consecutive, not the rarest words strung together: a string of rare
    words ("missing amount unnecessary examinations") is near nothing in meaning, and such calibration questions
    taught the fit that questions far from every case are answerable."""
    words = re.findall(r"[A-Za-z0-9][\w'/+-]*", sentence)
    content = [i for i, w in enumerate(words) if len(w) >= 4 and retriever.stem(w) in retriever.side.doc_freq
               and w.lower() not in retriever.lexicon.filler]
    if not content:
        return []
    rarest = max(content, key=lambda i: retriever.idf(retriever.stem(words[i])))
    start = max(0, min(rarest - WINDOW_WORDS // 2, len(words) - WINDOW_WORDS))
    return words[start: start + WINDOW_WORDS]


def off_topic_questions(retriever: Retriever, calibration: Calibration) -> list[str]:
    """The bank's questions whose topic the library does not hold (a library about asthma keeps asthma)."""
    kept = []
    for item in calibration.off_topic:
        topic = [token for tokens in tokenize([str(phrase) for phrase in item["topic"]]) for token in tokens]
        if not all(token in retriever.side.doc_freq for token in topic):  # tokenised as the index is ("athlete's")
            kept.append(str(item["question"]))
    return kept


def calibration_features(retriever: Retriever, question: str, written_from: str | None = None
                         ) -> np.ndarray | None:
    """The features of the question's best case; None for a question that names nothing ("hello"), which
    `Gate.decide` refuses before any score, so it must not move the fitted threshold either. `written_from`: the
    case a calibration question was written from; None too when that case is not near in meaning (within the
    gap a companion case may fall below its lead) to the nearest case retrieved, for such a question is a
    fragment ("to determine the durability and safety shown?", "Has anyone seen a geographical north-south
    gradient characterised by?"), and fragments taught the fit that a question near nothing in meaning is
    answerable ("Who won the 2018 World Cup?" was, from a library holding "cup")."""
    concepts = retriever.concepts(question)
    if not concepts:
        return None
    hits = retriever.search(question)
    if written_from:
        own = next((h.similarity for h in hits if h.case.id == written_from), None)
        nearest = max((h.similarity for h in hits), default=0.0)
        if own is None or own < nearest - retriever.settings.gate_similarity_gap:
            return None
    known = retriever.library_coverage(concepts)
    if not hits:
        return np.array([0.0, 0.0, known, 0.0])
    best = max(hits, key=lambda h: h.coverage + h.similarity)
    return features(best, known)


def fit(retriever: Retriever, calibration: Calibration, limit: int, key: str) -> GateModel:
    """A ridge-penalised logistic regression (Newton's method) on standardised features, classes weighted
    equally; the threshold is the middle of the score interval with the fewest errors."""
    positives = [x for q, case_id in example_questions(retriever, calibration, limit)
                 if (x := calibration_features(retriever, q, case_id)) is not None]
    negatives = [x for q in off_topic_questions(retriever, calibration)
                 if (x := calibration_features(retriever, q)) is not None]
    if not positives or not negatives:
        return GateModel(key=key, weights=[1.0] * len(FEATURES), bias=0.0, threshold=float("-inf"), positives=len(positives),
                         negatives=len(negatives), false_refusals=0, false_answers=0, margin=0.0)
    x = np.vstack(positives + negatives)
    y = np.array([1.0] * len(positives) + [0.0] * len(negatives))
    sample_weight = np.where(y == 1, 0.5 / len(positives), 0.5 / len(negatives)) * len(y)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.diag([L2] * (z.shape[1] - 1) + [0.0])
    for _ in range(50):
        p = 1 / (1 + np.exp(-z @ w))
        gradient = z.T @ (sample_weight * (p - y)) + penalty @ w
        hessian = (z * (sample_weight * p * (1 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[:-1] / std
    bias = float(w[-1] - np.dot(weights, mean))
    scores = x @ weights + bias
    threshold, errors, margin = _threshold(scores[y == 1], scores[y == 0])
    return GateModel(key=key, weights=[float(v) for v in weights], bias=bias, threshold=threshold,
                     positives=len(positives), negatives=len(negatives), false_refusals=errors[0],
                     false_answers=errors[1], margin=margin)


def _threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, tuple[int, int], float]:
    """The middle of the widest gap between neighbouring scores among the cuts with the fewest errors
    (false refusals + false answers): the threshold furthest from both kinds of calibration question."""
    cuts = np.unique(np.concatenate([pos, neg]))
    cuts = np.concatenate([[cuts[0] - 1.0], cuts, [cuts[-1] + 1.0]])
    best: tuple[int, float, float] | None = None  # (errors, -width, threshold)
    for low, high in zip(cuts[:-1], cuts[1:]):
        t = (low + high) / 2
        errors = int((pos < t).sum() + (neg >= t).sum())
        if best is None or (errors, -(high - low)) < best[:2]:
            best = (errors, -(high - low), t)
    threshold = float(best[2])
    return threshold, (int((pos < threshold).sum()), int((neg >= threshold).sum())), float(-best[1])


def summary(model: GateModel) -> str:
    """The fit in words, for `casebot calibrate` and the README."""
    weights = ", ".join(f"{name} {w:+.2f}" for name, w in zip(FEATURES, model.weights))
    return (f"gate fitted on {model.positives} library questions and {model.negatives} off-topic ones: "
            f"score = {model.bias:+.2f} + {weights}; threshold {model.threshold:.2f} (margin {model.margin:.2f}); "
            f"on its own calibration set {model.false_refusals} false refusals, {model.false_answers} false answers")
