"""The web app's Teach tab: a case walked through stage by stage up to "What would you consider next?", the
group's answer, then the reveal; a quiz with its score kept for the session; a handout of the session.

The cases come from the index the chat answers from (their text put back together from its chunks), so the
tab teaches the same library the clinicians ask about. Everything from a case or typed by a user is escaped
(case Markdown rendered with raw HTML off) before our own markup is added; citations show as numbers titled
with their case, as in the chat."""

from __future__ import annotations

import html
import random
import tempfile
from pathlib import Path

import gradio as gr

from bot.conversation import CaseBot
from bot.teaching import (FORMATS, HandoutError, Question, Session, Stage, Teaching, TeachingError, WalkRecord,
                          Walkthrough, markdown_html)
from bot.web.render import answer_text, as_text, case_markdown, cite_link, filter_choices, new_conversation_id
from bot.web.startup import Startup

WALK_INTRO = ("<p>Choose a case (or draw a random one by organ or therapy) and start: its stages show one at a "
              "time, then the group answers before what was done is revealed.</p>")
NO_QUIZ = "Start a quiz: its questions come from the cases' metadata and text."
NO_SCORE = "Score: no question answered yet."
FORMAT_LABELS = {"md": "Markdown", "html": "HTML", "pdf": "PDF"}
COPIES = {"educator": "educator's copy", "student": "student copy"}
COPY_CHOICES = [("Educator's copy: the whole session with the answers", "educator"),
                ("Student copy: up to each pause, questions without the key", "student")]


def library(bot: CaseBot, cache: dict) -> Teaching:
    """Teaching over the index's current cases, each with its text; rebuilt only when the index changes."""
    side = bot.retriever.refresh()
    if cache.get("version") != side.version:
        cases = [case.model_copy(update={"body": case_markdown(side, cid)}) for cid, case in side.cases.items()]
        cache.update(version=side.version, teaching=Teaching(cases, bot.lexicon, bot.settings.prompts_dir))
    return cache["teaching"]


TEACH_TARGET = "teach-cite-1"  # the case walked through is source [1] of its walk-through, as in the chat


def stage_html(stage: Stage, cited: str = "") -> str:
    """One stage: its heading (with the case's number once revealed) and its text."""
    return (f'<section class="teach-stage" data-stage="{html.escape(stage.heading)}">'
            f"<h4>{html.escape(stage.heading)}{' ' + cited if cited else ''}</h4>{markdown_html(stage.text)}</section>")


def walk_html(teaching: Teaching, walk: Walkthrough, shown: int, revealed: bool, group_answer: str) -> str:
    """The walk-through so far. Before the reveal the case goes by its label: neither the title nor the id
    shows (both name the therapy that followed); afterwards every part cites it as [1], titled with the case,
    and the related cases follow it as [2], [3]…"""
    words, case = teaching.wording, walk.case
    cited = cite_link(1, case.title, TEACH_TARGET) if revealed else ""
    facts = [f for f in (case.subtype, ", ".join(case.organs), ", ".join(case.antibodies)) if f and f != "unknown"]
    head = (f'<h3 id="{TEACH_TARGET}" tabindex="-1"><span class="source-number">[1]</span> '
            f'{html.escape(case.title)}</h3><p class="source-ref">{html.escape(case.id)}</p>' if revealed
            else f"<h3>{html.escape(teaching.label(case.id))}</h3>")
    parts = [head + (f'<p class="teach-facts">{html.escape(" · ".join(facts))}</p>' if facts else "")]
    parts += [stage_html(stage, cited) for stage in walk.before[:shown]]
    if shown >= len(walk.before):
        said = (f'<blockquote class="teach-group-answer">{html.escape(group_answer)}</blockquote>'
                if revealed and group_answer.strip() else "")
        hint = "" if revealed else f"<p>{html.escape(words['pause_hint'])}</p>"
        parts.append(f'<section class="teach-pause"><h4>{html.escape(words["pause"])}</h4>{hint}{said}</section>')
    if revealed:
        reveal = [stage_html(stage, cited) for stage in walk.reveal]
        if walk.summary:
            summary = words["reveal_summary"].format(summary=walk.summary)
            reveal.append(f'<p class="teach-summary">{html.escape(summary)} {cited}</p>')
        parts.append(f'<div class="teach-reveal">{"".join(reveal)}</div>')
        parts += [stage_html(stage, cited) for stage in walk.teaching]
        items = "".join(f'<li data-case="{html.escape(r.case_id)}"><span class="source-number">[{number}]</span> '
                        f'{html.escape(r.title)} <span class="source-ref">{html.escape(r.case_id)}</span>: '
                        f"{html.escape('; '.join(r.shared))}</li>" for number, r in enumerate(walk.related, start=2))
        parts.append(f'<section class="teach-related"><h4>{html.escape(words["related_heading"])}</h4>'
                     + (f'<ul class="cited-cases">{items}</ul>' if items
                        else f"<p>{html.escape(words['related_none'])}</p>")
                     + "</section>")
    return f'<div class="teach-walk" data-case-shown="{int(revealed)}">{"".join(parts)}</div>'


def question_markdown(quiz: dict) -> str:
    number, questions = quiz["current"], quiz["questions"]
    return f"**Question {number + 1} of {len(questions)}**\n\n{as_text(questions[number].question)}"


def score_markdown(session: Session) -> str:
    if not session.responses:
        return NO_SCORE
    right = sum(r == q.answer for q, r in zip(session.questions, session.responses))
    return f"Score: **{right} of {len(session.responses)}** answered correctly this session."


def pickers(teaching: Teaching) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """The cases to walk through by their neutral labels (the page never holds an id before the reveal), and
    the organ and therapy choices ("any" first) found in the library."""
    return [teaching.label(case.id) for case in teaching.cases], filter_choices(teaching.cases)


def labelled(teaching: Teaching, label: str) -> str:
    """The id of the case a picker label names in the library as it is now."""
    found = next((case.id for case in teaching.cases if teaching.label(case.id) == label), None)
    if found is None:
        raise TeachingError(f"the library changed since the page was loaded: {label!r} is not in it now; "
                            "reload the page")
    return found


def build_teach_tab(startup: Startup, started: gr.State) -> None:
    """The Teach tab's components and events; called inside an open gr.Tab. The cases are offered once the
    bot is ready in the session (`started`)."""
    cache: dict = {}
    choices = filter_choices([])
    session = gr.State(Session)
    handout_id = gr.State(new_conversation_id)  # the folder this session's handouts are written to
    walk = gr.State(None)  # {"case_id", "shown", "revealed", "group_answer"}
    quiz = gr.State(None)  # {"questions", "current", "answered"}

    projector = gr.Checkbox(False, label="Large type for a projector", elem_id="teach-projector")
    with gr.Column(elem_id="teach-area") as area:
        gr.Markdown("### Walk through a case")
        with gr.Row():
            case_pick = gr.Dropdown([], value=None, label="Case", elem_id="teach-case")
            organ = gr.Dropdown(choices["organ"], value="", label="Random case: organ", elem_id="teach-organ")
            therapy = gr.Dropdown(choices["therapy"], value="", label="Random case: therapy", elem_id="teach-therapy")
        with gr.Row():
            start = gr.Button("Start walk-through", variant="primary", elem_id="teach-start")
            draw = gr.Button("Random case", elem_id="teach-random")
        walk_view = gr.HTML(WALK_INTRO, elem_id="teach-walk")
        next_stage = gr.Button("Next stage", visible=False, elem_id="teach-next")
        group_answer = gr.Textbox(label="What would you consider next? The group's answer", lines=2, visible=False,
                                  elem_id="teach-group-answer")
        reveal = gr.Button("Reveal what was done", variant="primary", visible=False, elem_id="teach-reveal")
        teach_status = gr.Markdown(elem_id="teach-status")

        gr.Markdown("### Quiz")
        with gr.Row():
            quiz_n = gr.Number(5, precision=0, minimum=1, maximum=50, label="Questions", elem_id="quiz-n")
            quiz_organ = gr.Dropdown(choices["organ"], value="", label="Organ", elem_id="quiz-organ")
            quiz_seed = gr.Number(1, precision=0, label="Seed (the same seed gives the same quiz)", elem_id="quiz-seed")
        quiz_start = gr.Button("New quiz", variant="primary", elem_id="quiz-start")
        quiz_question = gr.Markdown(NO_QUIZ, elem_id="quiz-question")
        quiz_options = gr.Radio([], label="Options", elem_id="quiz-options")
        with gr.Row():
            quiz_answer = gr.Button("Answer", interactive=False, elem_id="quiz-answer")
            quiz_next = gr.Button("Next question", interactive=False, elem_id="quiz-next")
        quiz_feedback = gr.Markdown(elem_id="quiz-feedback")
        quiz_score = gr.Markdown(NO_SCORE, elem_id="quiz-score")

    gr.Markdown("### Handout")
    with gr.Row():
        handout_copy = gr.Radio(COPY_CHOICES, value="educator", label="Copy", elem_id="handout-copy")
        handout_format = gr.Radio([(FORMAT_LABELS[f], f) for f in FORMATS], value="md", label="Format",
                                  elem_id="handout-format")
        handout_export = gr.Button("Export handout", elem_id="handout-export")
    handout_file = gr.File(label="Handout of this session", interactive=False, elem_id="handout-file")
    handout_status = gr.Markdown(elem_id="handout-status")

    def current_choices():
        """Each page load offers the library as it is now (cases may have been added since the start)."""
        now_labels, now = pickers(library(startup.bot, cache))
        return (gr.Dropdown(choices=now_labels), gr.Dropdown(choices=now["organ"]), gr.Dropdown(choices=now["therapy"]),
                gr.Dropdown(choices=now["organ"]))

    projector.change(lambda on: gr.Column(elem_classes=["projector"] if on else []), projector, area,
                     api_visibility="private")
    started.change(current_choices, None, [case_pick, organ, therapy, quiz_organ], api_visibility="private")

    walk_outputs = [walk_view, walk, next_stage, group_answer, reveal, session, teach_status]

    def shown_walk(state: dict, records: Session, fresh: bool = False):
        """The walk-through in `state`, with the controls its point calls for (the answer box emptied when
        the walk-through is `fresh`)."""
        teaching = library(startup.bot, cache)
        try:
            walkthrough = teaching.walkthrough(state["case_id"])
        except TeachingError as error:  # the case left the library since
            return WALK_INTRO, None, gr.Button(visible=False), gr.Textbox(visible=False), gr.Button(
                visible=False), records, as_text(str(error))
        paused = state["shown"] >= len(walkthrough.before) and not state["revealed"]
        return (walk_html(teaching, walkthrough, state["shown"], state["revealed"], state["group_answer"]), state,
                gr.Button(visible=state["shown"] < len(walkthrough.before)),
                gr.Textbox(visible=paused, value="") if fresh else gr.Textbox(visible=paused),
                gr.Button(visible=paused), records, "")

    def begin(case_id: str, records: Session):
        teaching = library(startup.bot, cache)
        try:
            first = 1 if teaching.walkthrough(case_id).before else 0
        except TeachingError as error:
            return *[gr.skip()] * 6, as_text(str(error))
        walks = [w for w in records.walks if w.case_id != case_id] + [WalkRecord(case_id=case_id)]
        records = records.model_copy(update={"walks": walks})
        return shown_walk({"case_id": case_id, "shown": first, "revealed": False, "group_answer": ""}, records,
                          fresh=True)

    def begin_chosen(label: str | None, records: Session):
        if not label:
            return *[gr.skip()] * 6, "Choose a case first, or draw a random one."
        try:
            case_id = labelled(library(startup.bot, cache), label)
        except TeachingError as error:
            return *[gr.skip()] * 6, as_text(str(error))
        return begin(case_id, records)

    start.click(begin_chosen, [case_pick, session], walk_outputs, api_visibility="private")

    def begin_random(organ_value: str, therapy_value: str, records: Session):
        try:
            case = library(startup.bot, cache).pick(random.Random(), organ_value or None, therapy_value or None)
        except TeachingError as error:
            return *[gr.skip()] * 6, as_text(str(error))
        return begin(case.id, records)

    draw.click(begin_random, [organ, therapy, session], walk_outputs, api_visibility="private")

    def advance(state: dict | None, records: Session):
        if not state:
            return *[gr.skip()] * 6, "Start a walk-through first."
        return shown_walk(state | {"shown": state["shown"] + 1}, records)

    next_stage.click(advance, [walk, session], walk_outputs, api_visibility="private")

    def show_reveal(answer: str, state: dict | None, records: Session):
        if not state:
            return *[gr.skip()] * 6, "Start a walk-through first."
        walks = [w.model_copy(update={"group_answer": answer}) if w.case_id == state["case_id"] else w
                 for w in records.walks]
        return shown_walk(state | {"revealed": True, "group_answer": answer},
                          records.model_copy(update={"walks": walks}))

    reveal.click(show_reveal, [group_answer, walk, session], walk_outputs, api_visibility="private")

    quiz_outputs = [quiz, quiz_question, quiz_options, quiz_answer, quiz_next, quiz_feedback]

    def new_quiz(n: float | None, organ_value: str, seed: float | None):
        try:
            questions = library(startup.bot, cache).quiz(int(n or 0), organ_value or None, int(seed or 0))
        except TeachingError as error:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), as_text(str(error))
        if not questions:
            return (None, "No question can be made from these cases (they lack the metadata questions need).",
                    gr.Radio(choices=[], value=None), gr.Button(interactive=False), gr.Button(interactive=False), "")
        state = {"questions": questions, "current": 0, "answered": False}
        return (state, question_markdown(state), gr.Radio(choices=questions[0].options, value=None),
                gr.Button(interactive=True), gr.Button(interactive=len(questions) > 1), "")

    quiz_start.click(new_quiz, [quiz_n, quiz_organ, quiz_seed], quiz_outputs, api_visibility="private")

    def check(choice: str | None, state: dict | None, records: Session):
        if not state:
            return gr.skip(), gr.skip(), gr.skip(), "Start a quiz first."
        if state["answered"]:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if not choice:
            return gr.skip(), gr.skip(), gr.skip(), "Choose an option first."
        question: Question = state["questions"][state["current"]]
        verdict = ("**Correct.**" if choice == question.answer
                   else f"**Not quite**: the answer is **{as_text(question.answer)}**.")
        records = records.model_copy(update={"questions": [*records.questions, question],
                                             "responses": [*records.responses, choice]})
        return (state | {"answered": True}, records, score_markdown(records),
                f"{verdict}\n\n{answer_text(question.explanation)}")

    quiz_answer.click(check, [quiz_options, quiz, session], [quiz, session, quiz_score, quiz_feedback],
                      api_visibility="private")

    def next_question(state: dict | None):
        if not state or state["current"] + 1 >= len(state["questions"]):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), "That was the last question."
        state = state | {"current": state["current"] + 1, "answered": False}
        question = state["questions"][state["current"]]
        return (state, question_markdown(state), gr.Radio(choices=question.options, value=None), gr.skip(),
                gr.Button(interactive=state["current"] + 1 < len(state["questions"])), "")

    quiz_next.click(next_question, quiz, quiz_outputs, api_visibility="private")

    def export(copy: str, fmt: str, records: Session, folder_id: str):
        if not records.walks and not records.questions:
            return gr.skip(), "Walk through a case or answer a quiz question first: the handout covers the session."
        name = "casebot-handout" + ("-student" if copy == "student" else "")
        out = Path(tempfile.gettempdir()) / "casebot-handouts" / folder_id / f"{name}.{fmt}"
        try:
            library(startup.bot, cache).export(records, fmt, out, student=copy == "student")
        except (HandoutError, TeachingError, OSError) as error:
            return gr.skip(), as_text(f"The handout could not be written: {error}")
        cases = len(records.walks)
        return str(out), (f"Handout ready ({FORMAT_LABELS[fmt]}, {COPIES[copy]}): {cases} cases, "
                          f"{len(records.questions)} questions.")

    handout_export.click(export, [handout_copy, handout_format, session, handout_id], [handout_file, handout_status],
                         api_visibility="private")
