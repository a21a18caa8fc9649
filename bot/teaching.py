"""Teaching mode: a case walked through stage by stage with a pause before the reveal, multiple-choice quiz
questions with answer keys, and a handout (Markdown, HTML, PDF) of what a session covered.

Everything is computed from the cases alone: answer keys come from the front matter, quoted sentences
verbatim from the text, so a quiz cannot teach anything the library does not record. Randomness goes
through one random.Random(seed) over sorted inputs, so a seed gives the same quiz in any process.
Wordings live in prompts/teaching.yaml, the handout's page in prompts/handout.html and handout.css."""

from __future__ import annotations

import difflib
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

import yaml
from markdown_it import MarkdownIt
from pydantic import BaseModel

from bot.answer import MARKER, defused, prompt
from bot.cases import ORGANS, Case, load_cases
from bot.lexicon import Lexicon
from bot.pathways import OUTCOME_ORDER
from bot.settings import Settings
from bot.text import sentences

Kind = Literal["next-therapy", "antibody", "antibody-risk", "outcome"]
KINDS: tuple[Kind, ...] = ("next-therapy", "antibody", "antibody-risk", "outcome")
Format = Literal["md", "html", "pdf"]
FORMATS: tuple[Format, ...] = ("md", "html", "pdf")
BEFORE = ("presentation", "prior treatment", "resistance")
NEXT = ("next therapy", "next therapies")
REVEAL = (*NEXT, "outcome")
TEACHING = ("teaching points", "teaching point")
MAX_OPTIONS = 4
MIN_OPTIONS = 3
RELATED_LIMIT = 5
SENTENCES_PER_PART = 3  # a plain text without paragraphs is staged this many sentences at a time
PDF_TIMEOUT_S = 120
# A sentence that ties an antibody to a risk ("RNAP raises the risk of renal crisis").
RISK = re.compile(r"\b(risk|linked to|associated with)\b", re.IGNORECASE)
# Case text may hold HTML: it is shown as text, and nothing (images) loads from elsewhere.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable("image")


class TeachingError(ValueError):
    """A case id, organ or therapy the library does not know, or a request it cannot serve."""


class HandoutError(RuntimeError):
    """A handout that could not be written (chromium missing or failing for the PDF)."""


@dataclass(frozen=True)
class Stage:
    heading: str
    text: str  # Markdown from the case, brackets made parentheses so it cannot plant [case-id] markers


@dataclass(frozen=True)
class Related:
    case_id: str
    title: str
    shared: list[str]  # what it shares with the case walked through, worded for display


@dataclass(frozen=True)
class Walkthrough:
    """A case in teaching order: `before` shown one by one, then the pause, then `reveal`, `teaching`, `related`."""

    case: Case
    before: list[Stage]
    reveal: list[Stage]
    teaching: list[Stage]
    related: list[Related]
    summary: str  # the front matter's account (what failed, what followed, the outcome), "" for plain files


class Question(BaseModel):
    """One multiple-choice question; `answer` is one of `options`, `explanation` cites [case_id]."""

    question: str
    options: list[str]
    answer: str
    case_id: str
    explanation: str
    kind: Kind


class WalkRecord(BaseModel):
    case_id: str
    group_answer: str = ""


class Session(BaseModel):
    """What a teaching session covered: the cases walked through and the questions answered."""

    walks: list[WalkRecord] = []
    questions: list[Question] = []
    responses: list[str | None] = []  # the group's choice per question, None when not answered


def markdown_html(text: str) -> str:
    """Markdown (case text, handouts) as HTML with raw HTML shown as text and no images."""
    return _MARKDOWN.render(text)


def split_sections(body: str) -> tuple[str, list[tuple[str, str]]]:
    """The text before the first `##` heading (without a lone `#` title line), and each (heading, text)."""
    parts = re.split(r"^##[ \t]+(.+?)[ \t]*$", body, flags=re.MULTILINE)
    preamble = re.sub(r"\A\s*#[ \t].*\n?", "", parts[0]).strip()
    return preamble, [(parts[i].strip(), parts[i + 1].strip()) for i in range(1, len(parts), 2)]


@dataclass
class Teaching:
    """Teaching over one case library (`cases` from the files or the index, with their text)."""

    cases: list[Case]
    lexicon: Lexicon
    prompts_dir: Path
    by_id: dict[str, Case] = field(init=False)
    numbers: dict[str, int] = field(init=False)  # each case's place in the library, from 1, for its label

    def __post_init__(self) -> None:
        self.cases = sorted(self.cases, key=lambda c: c.id)
        self.by_id = {case.id: case for case in self.cases}
        self.numbers = {case.id: number for number, case in enumerate(self.cases, start=1)}

    @classmethod
    def from_files(cls, settings: Settings) -> tuple[Teaching, list[str]]:
        """The library as the case files in settings.knowledge hold it (no index needed), and the files skipped."""
        if not settings.knowledge.is_dir():
            raise TeachingError(f"case folder not found: {settings.knowledge} (set CASEBOT_KNOWLEDGE)")
        lexicon = Lexicon.load(settings.lexicon_path)
        cases, rejections = load_cases([settings.knowledge], lexicon)
        return cls(cases, lexicon, settings.prompts_dir), [str(r) for r in rejections]

    @cached_property
    def wording(self) -> dict:
        return yaml.safe_load(prompt(self.prompts_dir, "teaching.yaml"))


    def case(self, case_id: str) -> Case:
        if case_id in self.by_id:
            return self.by_id[case_id]
        close = difflib.get_close_matches(case_id, list(self.by_id), n=3, cutoff=0.5)
        listed = close or list(self.by_id)[:6]
        raise TeachingError(f"unknown case id {case_id!r}; " + (
            f"{'did you mean' if close else 'the library holds'} {', '.join(listed)}"
            f"{'?' if close else ', …'} ({len(self.by_id)} cases in all)" if listed else "the library is empty"))

    def organ(self, value: str) -> str:
        """`value` as an organ key of the library (synonyms allowed: ILD -> lung)."""
        organ = self.lexicon.canonical("organs", value) or value.strip().lower()
        present = [o for o in ORGANS if any(o in c.organs for c in self.cases)]
        if organ not in present:
            raise TeachingError(f"unknown organ {value!r}; the library's organs are {', '.join(present)}")
        return organ

    def therapy(self, value: str) -> str:
        therapy = self.lexicon.canonical("therapies", value) or value.strip()
        present = sorted({t for c in self.cases for t in c.therapies}, key=str.lower)
        if therapy.lower() not in (t.lower() for t in present):
            raise TeachingError(f"no case in the library records the therapy {value!r}; for example: "
                                f"{', '.join(present[:8])}")
        return therapy

    def label(self, case_id: str) -> str:
        """The case's neutral name ("Case 12 — diffuse, skin and lung"): its place in the library, subtype and
        organs, since its id and title name the therapy that followed."""
        case = self.case(case_id)
        subtype = self.wording["label_subtypes"][case.subtype]
        organs = _listing([organ.replace("-", " ") for organ in case.organs])
        return self.wording["case_label"].format(number=self.numbers[case.id],
                                                 description=", ".join(p for p in (subtype, organs) if p))

    def pick(self, rng: random.Random, organ: str | None = None, therapy: str | None = None) -> Case:
        """A random case, with the organ and with the therapy (failed or given next) when they are set."""
        organ = self.organ(organ) if organ else None
        therapy = self.therapy(therapy).lower() if therapy else None
        found = [c for c in self.cases if (not organ or organ in c.organs)
                 and (not therapy or therapy in (t.lower() for t in c.therapies))]
        if not found:
            raise TeachingError(f"no case in the library has both the organ {organ!r} and the therapy {therapy!r}")
        return rng.choice(found)


    def walkthrough(self, case_id: str) -> Walkthrough:
        """The case in teaching order. Standard sections go before or after the pause by their heading;
        a case without them (plain text, PDF) is staged by paragraphs, its last one revealed after the pause."""
        case = self.case(case_id)
        preamble, sections = split_sections(case.body)
        before, reveal, teaching = [], [], []
        if sections:
            if preamble:
                before.append(Stage(self.wording["part"].format(number=1), defused(preamble)))
            phase = before
            for heading, text in sections:
                name = heading.lower()
                if name in REVEAL:
                    phase = reveal
                stage = Stage(defused(heading), defused(text))
                (teaching if name in TEACHING else before if name in BEFORE else phase).append(stage)
        else:
            before = [Stage(self.wording["part"].format(number=n), defused(text))
                      for n, text in enumerate(paragraphs(preamble), start=1)]
        if not reveal and len(before) > 1 and before[-1].heading.lower() not in BEFORE:
            reveal.append(before.pop())  # something must be left to reveal after the pause
        return Walkthrough(case, before, reveal, teaching, self.related(case), case.summary())

    def related(self, case: Case) -> list[Related]:
        """Other cases of the library sharing a failed therapy or an organ, those sharing failures first."""
        scored = []
        for other in self.cases:
            if other.id == case.id:
                continue
            failed = [t for t in case.failed_therapies if t in other.failed_therapies]
            organs = [o for o in case.organs if o in other.organs]
            if failed or organs:
                shared = ([self.wording["shared_failed"].format(therapy=t) for t in failed]
                          + [self.wording["shared_organ"].format(organ=o) for o in organs])
                scored.append(((-len(failed), -len(organs), other.id), Related(other.id, other.title, shared)))
        return [related for _, related in sorted(scored, key=lambda item: item[0])[:RELATED_LIMIT]]

    def quiz(self, n: int = 5, organ: str | None = None, seed: int = 0) -> list[Question]:
        """Up to `n` questions, one per case before any case gets a second, the same for the same seed.
        Cases without the metadata a question needs (plain files) are left out."""
        if n < 1:
            raise TeachingError(f"the number of questions must be 1 or more, not {n}")
        organ = self.organ(organ) if organ else None
        rng = random.Random(seed)
        pool = [c for c in self.cases if not organ or organ in c.organs]
        rng.shuffle(pool)
        plans = []
        for case in pool:
            kinds = list(KINDS)
            rng.shuffle(kinds)
            plans.append((case, iter(kinds)))
        questions: list[Question] = []
        for _ in KINDS:  # each round gives every case its next question of a kind it allows
            for case, kinds in plans:
                question = next((q for kind in kinds if (q := self.question(case, kind, rng))), None)
                if question:
                    questions.append(question)
                if len(questions) == n:
                    return questions
        return questions

    def case_questions(self, case_id: str, seed: int = 0) -> list[Question]:
        """Every kind of question the case allows, in a fixed order (for its handout)."""
        rng = random.Random(seed)
        case = self.case(case_id)
        return [q for kind in KINDS if (q := self.question(case, kind, rng))]

    def question(self, case: Case, kind: Kind, rng: random.Random) -> Question | None:
        """A question of `kind` about `case`, or None when its metadata or text cannot support one."""
        return {"next-therapy": self._next_therapy, "antibody": self._antibody,
                "antibody-risk": self._antibody_risk, "outcome": self._outcome}[kind](case, rng)

    def _next_therapy(self, case: Case, rng: random.Random) -> Question | None:
        if not case.failed_therapies or not case.next_therapies:
            return None
        fresh = [t for t in case.next_therapies if t not in case.failed_therapies] or case.next_therapies
        answer = rng.choice(fresh)
        # Anything the case itself gives or names as its next step would be a second right answer, and so is
        # what followed in every other case the stem describes as well.
        named = {t.canonical for t in self.lexicon.find(self._section(case, NEXT)) if t.group == "therapies"}
        alike = [t for other in self._alike(case, failed=True) for t in other.next_therapies]
        excluded = self._with_classes({answer, *case.therapies, *named, *alike})
        tiers = [[t for other in cases for t in other.therapies] for cases in self._neighbours(case)]
        options = self._options(answer, rng, [*tiers, self.lexicon.names("therapies")], excluded)
        if not options:
            return None
        return self._question("next-therapy", case, answer, options, patient=self._patient(case),
                              failed=_listing(case.failed_therapies), next=_listing(case.next_therapies),
                              quote=self._quote(case, NEXT, answer))

    def _antibody(self, case: Case, rng: random.Random) -> Question | None:
        if not case.antibodies:
            return None
        answer = rng.choice(case.antibodies)
        carried = {a.lower() for other in [case, *self._alike(case, antibodies=False)] for a in other.antibodies}
        options = self._options(answer, rng, [self.lexicon.names("antibodies")], carried)
        if not options:
            return None
        return self._question("antibody", case, answer, options, patient=self._patient(case, antibodies=False),
                              antibodies=_listing(case.antibodies), quote=self._quote(case, (), answer))

    def _antibody_risk(self, case: Case, rng: random.Random) -> Question | None:
        found = self._risk_sentences(case)
        if not found:
            return None
        sentence, answer, masked = rng.choice(found)
        options = self._options(answer, rng, [self.lexicon.names("antibodies")], {a.lower() for a in case.antibodies})
        if not options:
            return None
        return self._question("antibody-risk", case, answer, options, masked=masked, sentence=sentence)

    def _outcome(self, case: Case, rng: random.Random) -> Question | None:
        if case.outcome == "unknown" or not case.therapies:
            return None
        known = [o for o in OUTCOME_ORDER if o != "unknown"]
        tiers = [[other.outcome for other in cases] for cases in self._neighbours(case)]
        alike = {other.outcome for other in self._alike(case, failed=True, following=True)}
        options = self._options(case.outcome, rng, [*tiers, known], {case.outcome, "unknown", *alike})
        if not options:
            return None
        shape = ("failed_then_next" if case.failed_therapies and case.next_therapies
                 else "next_only" if case.next_therapies else "failed_only")
        course = self.wording["courses"][shape].format(failed=_listing(case.failed_therapies),
                                                       next=_listing(case.next_therapies))
        return self._question("outcome", case, case.outcome, options, patient=self._patient(case),
                              course=course, quote=self._quote(case, ("outcome",), ""))

    def _question(self, kind: Kind, case: Case, answer: str, options: list[str], **values: str) -> Question:
        values |= {"answer": answer, "case_id": case.id}
        return Question(question=self.wording["questions"][kind].format(**values), options=options,
                        answer=answer, case_id=case.id,
                        explanation=self.wording["explanations"][kind].format(**values), kind=kind)

    def _with_classes(self, therapies: set[str]) -> set[str]:
        """The therapies (lower case) with the classes they belong to and the members of those that are classes."""
        names = {t.lower() for t in therapies}
        for group, members in self.wording["classes"].items():
            inside = {m.lower() for m in members}
            if group.lower() in names:
                names |= inside
            if names & inside:
                names.add(group.lower())
        return names

    @staticmethod
    def _options(answer: str, rng: random.Random, tiers: list[list[str]], excluded: set[str]) -> list[str]:
        """The answer among distractors drawn from `tiers` in turn, closest clinical area first; never
        anything in `excluded` (lower case) nor the same name twice. [] when there are too few."""
        taken = {answer.lower(), *excluded}
        picked: list[str] = []
        for tier in tiers:
            fresh = sorted({name for name in tier if name.lower() not in taken})
            chosen = rng.sample(fresh, min(MAX_OPTIONS - 1 - len(picked), len(fresh)))
            picked += chosen
            taken |= {name.lower() for name in chosen}
        if len(picked) + 1 < MIN_OPTIONS:
            return []
        options = [answer, *picked]
        rng.shuffle(options)
        return options

    def _alike(self, case: Case, antibodies: bool = True, failed: bool = False,
               following: bool = False) -> list[Case]:
        """The other cases a stem worded from `case` describes just as well, whose answers are right too: the
        same subtype and at least the case's organs, and its antibodies, failed and next therapies when the
        stem names them (a stem silent on something fits any case)."""
        def covers(other: Case) -> bool:
            wanted = [(case.organs, other.organs), (case.antibodies if antibodies else [], other.antibodies),
                      (case.failed_therapies if failed else [], other.failed_therapies),
                      (case.next_therapies if following else [], other.next_therapies)]
            return case.subtype in ("unknown", other.subtype) and all(set(mine) <= set(theirs)
                                                                      for mine, theirs in wanted)
        return [other for other in self.cases if other.id != case.id and covers(other)]

    def _neighbours(self, case: Case) -> list[list[Case]]:
        """The other cases by clinical closeness: sharing the case's first (main) organ, then any organ."""
        others = [o for o in self.cases if o.id != case.id]
        main = [o for o in others if case.organs and case.organs[0] in o.organs]
        return [main, [o for o in others if set(o.organs) & set(case.organs)]]

    def _patient(self, case: Case, antibodies: bool = True) -> str:
        details = [", ".join(o.replace("-", " ") for o in case.organs) + " involvement"] if case.organs else []
        if antibodies and case.antibodies:
            details.append(", ".join(case.antibodies))
        return self.wording["patient"].format(subtype=self.wording["subtypes"][case.subtype],
                                              details=f" ({'; '.join(details)})" if details else "")

    def _section(self, case: Case, names: tuple[str, ...]) -> str:
        """The text of the case's sections with these (lower-case) headings; all its text when `names` is empty."""
        preamble, sections = split_sections(case.body)
        if not names:
            return "\n\n".join([preamble, *(text for _, text in sections)])
        return "\n\n".join(text for heading, text in sections if heading.lower() in names)

    def _quote(self, case: Case, names: tuple[str, ...], term: str) -> str:
        """A sentence of those sections, worded for an explanation: of those naming `term` (by any alias; of
        all when none does), the first naming the fewest therapies the case did not use (so a trial's or a
        guideline's list loses to the patient's own course); "" when the sections have no text."""
        aliases = self._aliases(term)
        own = {t.lower() for t in case.therapies}
        said = sentences(self._section(case, names))
        found = [s for s in said if aliases and _alias_pattern(aliases).search(s)] or said
        if not found:
            return ""
        best = min(found, key=lambda s: sum(t.group == "therapies" and t.canonical.lower() not in own
                                            for t in self.lexicon.find(s)))
        return self.wording["quote"].format(sentence=defused(best))

    def _aliases(self, name: str) -> tuple[str, ...]:
        if not name:
            return ()
        return next((t.aliases for t in self.lexicon.terms if t.canonical == name), (name,))

    def _risk_sentences(self, case: Case) -> list[tuple[str, str, str]]:
        """(sentence, antibody, sentence with the antibody blanked) for each sentence of the case tying one of
        its own antibodies, and no other, to a risk."""
        antibodies = [t for t in self.lexicon.terms if t.group == "antibodies"]
        found = []
        for sentence in sentences(self._section(case, ())):
            if not RISK.search(sentence):
                continue
            named = [t for t in antibodies if _alias_pattern(t.aliases).search(sentence)]
            if len(named) == 1 and named[0].canonical in case.antibodies:
                masked = _alias_pattern(named[0].aliases).sub("_____", sentence)
                found.append((defused(sentence), named[0].canonical, defused(masked)))
        return found

    def handout_markdown(self, session: Session, student: bool = False) -> str:
        """The session as a Markdown handout: each case staged as in the walk-through with the group's answer,
        then the quiz, its answer key, and the cases cited. The `student` copy stops each case at the pause
        and gives the questions without the key, naming cases by their neutral labels."""
        if student:
            return self.student_markdown(session)
        words, hand = self.wording, self.wording["handout"]
        lines = [f"# {hand['title']}", "", prompt(self.prompts_dir, "educational_note.md"), ""]
        cited: list[str] = []
        for number, record in enumerate(session.walks, start=1):
            walk = self.walkthrough(record.case_id)
            case = walk.case
            cited.append(case.id)
            lines += [f"## {number}. {defused(case.title)} [{case.id}]", ""]
            facts = [case.subtype, ", ".join(case.organs), ", ".join(case.antibodies)]
            if any(fact and fact != "unknown" for fact in facts):
                lines += ["*" + " · ".join(f for f in facts if f and f != "unknown") + "*", ""]
            for stage in walk.before:
                lines += [f"### {stage.heading}", "", stage.text, ""]
            answer = defused(record.group_answer.strip())
            lines += [f"### {words['pause']}", "", f"**{hand['group_answer']}**", "",
                      _blockquote(answer) if answer else hand["no_group_answer"], ""]
            for stage in walk.reveal:
                lines += [f"### {stage.heading} [{case.id}]", "", stage.text, ""]
            if walk.summary:
                lines += [words["reveal_summary"].format(summary=walk.summary) + f" [{case.id}]", ""]
            for stage in walk.teaching:
                lines += [f"### {stage.heading} [{case.id}]", "", stage.text, ""]
            lines += [f"### {words['related_heading']}", ""]
            lines += [f"- [{r.case_id}] {defused(r.title)}: {'; '.join(r.shared)}" for r in walk.related] or [
                words["related_none"]]
            lines.append("")
            cited += [r.case_id for r in walk.related]
        if session.questions:
            lines += [self.quiz_markdown(session.questions, session.responses), ""]
            cited += [q.case_id for q in session.questions]
        lines += [f"## {hand['cases_cited']}", ""]
        for case in (self.by_id[cid] for cid in dict.fromkeys(cited) if cid in self.by_id):
            lines.append(f"- [{case.id}] {defused(case.title)} ({defused(case.source or Path(case.path).name)})")
        return "\n".join(lines).rstrip() + "\n"

    def student_markdown(self, session: Session) -> str:
        """The student copy: each case by its label up to the pause with room for an answer, then the
        questions without the key; no title, id, reveal or related case (all name what was done)."""
        words, hand = self.wording, self.wording["handout"]
        lines = [f"# {hand['student_title']}", "", prompt(self.prompts_dir, "educational_note.md"), "",
                 f"*{hand['student_note']}*", ""]
        for number, record in enumerate(session.walks, start=1):
            walk = self.walkthrough(record.case_id)
            lines += [f"## {number}. {self.label(record.case_id)}", ""]
            if walk.case.antibodies:
                lines += [f"*{', '.join(walk.case.antibodies)}*", ""]
            for stage in walk.before:
                lines += [f"### {stage.heading}", "", stage.text, ""]
            lines += [f"### {words['pause']}", "", f"**{hand['student_answer']}**", "", "_" * 40, ""]
        if session.questions:
            lines += [self.quiz_markdown(session.questions, [], key=False), ""]
        return "\n".join(lines).rstrip() + "\n"

    def handout_html(self, session: Session, student: bool = False) -> str:
        """The Markdown handout as a standalone page: case text cannot inject HTML, citations are styled."""
        markdown = self.handout_markdown(session, student)
        body = MARKER.sub(r'<span class="cite">[\1]</span>', markdown_html(markdown))
        title = self.wording["handout"]["student_title" if student else "title"]
        return prompt(self.prompts_dir, "handout.html").format(
            title=title, style=prompt(self.prompts_dir, "handout.css"), body=body)

    def export(self, session: Session, fmt: Format, out: Path, student: bool = False) -> Path:
        """Writes the handout (the `student` copy or the educator's) to `out` in `fmt`; the PDF is printed from
        the HTML by headless chromium."""
        if fmt not in FORMATS:
            raise TeachingError(f"unknown handout format {fmt!r}; use one of {', '.join(FORMATS)}")
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "md":
            out.write_text(self.handout_markdown(session, student), encoding="utf-8")
        elif fmt == "html":
            out.write_text(self.handout_html(session, student), encoding="utf-8")
        else:
            print_pdf(self.handout_html(session, student), out)
        return out

    def quiz_markdown(self, questions: list[Question], responses: list[str | None], key: bool = True) -> str:
        """Numbered questions with lettered options, then (with the `key`) the answer key with explanations
        and the group's choices when given."""
        words = self.wording["handout"]
        lines = [f"## {words['quiz']}", ""]
        for number, q in enumerate(questions, start=1):
            lines += [f"{number}. {q.question}", ""]
            lines += [f"   - {letter}. {option}" for letter, option in zip("ABCDEFGH", q.options)]
            lines.append("")
        if not key:
            return "\n".join(lines).rstrip()
        lines += [f"## {words['answer_key']}", ""]
        for number, q in enumerate(questions, start=1):
            letter = "ABCDEFGH"[q.options.index(q.answer)]
            lines.append(f"{number}. **{letter}. {q.answer}**: {q.explanation}")
            choice = responses[number - 1] if number - 1 < len(responses) else None
            if choice is not None:
                verdict = words["correct"] if choice == q.answer else words["wrong"]
                lines.append(f"   {words['response'].format(choice=choice, verdict=verdict)}")
        return "\n".join(lines)


def paragraphs(text: str) -> list[str]:
    """A plain text's paragraphs; a text with none (one block, as PDFs often give) in groups of sentences."""
    blocks = [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]
    if len(blocks) > 1:
        return blocks
    said = sentences(text)
    return [" ".join(said[i:i + SENTENCES_PER_PART]) for i in range(0, len(said), SENTENCES_PER_PART)] or blocks


def print_pdf(page_html: str, out: Path) -> Path:
    """`page_html` printed to `out` by Debian's headless chromium (the one the browser tests use): offline,
    no header or footer."""
    chromium = shutil.which("chromium")
    if not chromium:
        raise HandoutError("the PDF handout is printed by chromium, which is not installed (on PATH): "
                           "apt-get install chromium, or export Markdown or HTML instead")
    out = out.resolve()
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="casebot-pdf-") as folder:
        page = Path(folder) / "handout.html"
        page.write_text(page_html, encoding="utf-8")
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--no-pdf-header-footer", f"--user-data-dir={folder}/profile", f"--print-to-pdf={out}",
                   page.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PDF_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            raise HandoutError(f"chromium did not print the PDF within {PDF_TIMEOUT_S} s") from error
    if not out.exists() or not out.read_bytes()[:5] == b"%PDF-":
        raise HandoutError(f"chromium did not write the PDF {out} (exit {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    return out


def _listing(names: list[str]) -> str:
    """Names as prose: "a", "a and b", "a, b and c"."""
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _blockquote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines())


@lru_cache(maxsize=256)
def _alias_pattern(aliases: tuple[str, ...]) -> re.Pattern[str]:
    """Any of the aliases as a word; unlike the lexicon's own matching, "ACA-positive" names ACA."""
    alternation = "|".join(re.escape(a) for a in sorted(aliases, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alternation})(?!\w)", re.IGNORECASE)
