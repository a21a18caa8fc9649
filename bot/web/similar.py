"""The web app's "Patients like mine" tab: paste a de-identified vignette, check (and correct) the profile read
from it, and see the library's most similar cases with why they match and where they differ, what followed
the same failure in them (each row citing its cases), and any of them in full.

The vignette is scanned for identifiers before anything else (bot/similar.py) and is never stored: it goes
to no feedback or audit table, and lives only in the page's text box."""

from __future__ import annotations

import re
from functools import cache
from typing import get_args

import gradio as gr

from bot.cases import ORGANS, Subtype
from bot.similar import Measure, PatientMatcher, Profile, SimilarResult, VignetteError, markdown
from bot.web.render import answer_text, as_text, case_html
from bot.web.startup import Startup

CASE_COLUMNS = ["rank", "case", "title", "score", "matched", "differs"]
SEXES = [("not given", ""), ("female", "female"), ("male", "male")]
PROMPT = "Paste a de-identified vignette and press **Read vignette**."


def measures_text(matcher: PatientMatcher, measures: dict[str, Measure]) -> str:
    """The measures as the user can edit them, written so that the vignette reader reads them back."""
    spelled = matcher.language.data["measures"]
    return ", ".join(f"{spelled[name]['names'][0]} {m.value:g}" if m.value is not None else
                     f"{spelled[name]['names'][0]} {m.band}" for name, m in measures.items())


def read_measures(matcher: PatientMatcher, text: str) -> dict[str, Measure]:
    """The measures typed in the profile, read as a vignette's are; a piece naming no measure is refused."""
    found: dict[str, Measure] = {}
    for piece in filter(None, (p.strip() for p in re.split(r"[,;\n]", text))):
        measures = matcher.language.measures(piece)
        if not measures:
            names = ", ".join(m["names"][0] for m in matcher.language.data["measures"].values())
            raise VignetteError(f"Measures: {piece!r} is not a measure with a value (one of {names}, e.g. FVC 58)")
        found |= measures
    return found


def case_rows(result: SimilarResult) -> list[list[object]]:
    return [[rank, m.case_id, m.title, m.score, ", ".join(m.shared) or "text only", ", ".join(m.differs)]
            for rank, m in enumerate(result.matches, start=1)]


def build_similar_tab(startup: Startup) -> None:
    """The tab's components and events; called inside an open gr.Tab."""
    therapies = sorted(startup.lexicon.names("therapies"), key=str.lower)
    antibodies = sorted(startup.lexicon.names("antibodies"), key=str.lower)

    @cache
    def matcher() -> PatientMatcher:
        """Made with the first vignette: the bot may still be loading while the page is built."""
        bot = startup.bot
        return PatientMatcher(bot.retriever, bot.lexicon, bot.settings)

    vignette = gr.Textbox(label="De-identified vignette", lines=3, elem_id="similar-vignette",
                          placeholder="e.g. 52F, dcSSc 3 y, anti-Scl-70+, FVC 58% falling on MMF 3 g, no PH on RHC "
                                      "(no names, dates of birth or record numbers)")
    read = gr.Button("Read vignette", variant="primary", elem_id="similar-read")
    understood = gr.Markdown(PROMPT, elem_id="similar-understood")
    with gr.Accordion("Profile (correct it, then press Find similar)", open=True):
        with gr.Row():
            subtype = gr.Dropdown([("not given", ""), *((s, s) for s in get_args(Subtype) if s != "unknown")],
                                  value="", label="Subtype", elem_id="similar-subtype")
            sex = gr.Dropdown(SEXES, value="", label="Sex", elem_id="similar-sex")
            age = gr.Number(None, label="Age", precision=0, minimum=0, maximum=120, elem_id="similar-age")
            duration = gr.Number(None, label="Disease duration (years)", minimum=0, elem_id="similar-duration")
        with gr.Row():
            organs = gr.Dropdown(list(ORGANS), multiselect=True, label="Organs involved", elem_id="similar-organs")
            negated = gr.Dropdown(list(ORGANS), multiselect=True, label="Written as absent (e.g. no PH)",
                                  elem_id="similar-negated")
        with gr.Row():
            positive = gr.Dropdown(antibodies, multiselect=True, label="Antibodies present",
                                   elem_id="similar-antibodies")
            negative = gr.Dropdown(antibodies, multiselect=True, label="Antibodies negative",
                                   elem_id="similar-negative-antibodies")
        with gr.Row():
            failed = gr.Dropdown(therapies, multiselect=True, allow_custom_value=True,
                                 label="Failed or not tolerated", elem_id="similar-failed")
            tried = gr.Dropdown(therapies, multiselect=True, allow_custom_value=True,
                                label="On / tried (no outcome given)", elem_id="similar-tried")
        measures = gr.Textbox(label="Measures (FVC, DLCO, mRSS, mPAP, PVR, eGFR, creatinine, 6MWD, NT-proBNP)",
                              elem_id="similar-measures")
    find = gr.Button("Find similar", elem_id="similar-find")
    results = gr.Markdown(elem_id="similar-results")
    cases = gr.Dataframe(headers=CASE_COLUMNS, interactive=False, wrap=True, max_height=320,
                         label="The most similar cases (select one to read it)", elem_id="similar-cases")
    case_view = gr.HTML(elem_id="similar-case")
    parsed = gr.State(None)  # the profile as read, for what the fields do not show (which failures were intolerance)
    fields = [subtype, sex, age, duration, organs, negated, positive, negative, failed, tried, measures]

    def shown(result: SimilarResult) -> tuple:
        return (answer_text(f"**Understood as:** {result.understood_as}"), answer_text(markdown(result)),
                case_rows(result), "")

    def refused(error: VignetteError) -> tuple:
        return f'<span class="answer-warning">{as_text(str(error))}</span>', "", [], ""

    def read_vignette(text: str):
        """Read the vignette into the profile fields and rank with it; a refused one clears everything."""
        try:
            result = matcher().find(text, startup.settings.similar_k)
        except VignetteError as error:
            return None, *(gr.update(value=None) for _ in fields), *refused(error)
        profile = result.profile
        values = (profile.subtype or "", profile.sex or "", profile.age, profile.duration_years, profile.organs,
                  profile.negated, profile.antibodies, profile.negative_antibodies, profile.failed_therapies,
                  profile.tried_therapies, measures_text(matcher(), profile.measures))
        return profile.model_dump(), *values, *shown(result)

    def find_similar(text: str, read_as: dict | None, *values):
        """Rank with the profile as corrected in the fields."""
        subtype_, sex_, age_, duration_, organs_, negated_, positive_, negative_, failed_, tried_, measures_ = values
        try:
            profile = Profile(
                subtype=subtype_ or None, sex=sex_ or None, age=int(age_) if age_ is not None else None,
                duration_years=duration_, organs=organs_ or [], negated=negated_ or [], antibodies=positive_ or [],
                negative_antibodies=negative_ or [], failed_therapies=failed_ or [], tried_therapies=tried_ or [],
                not_tolerated=[t for t in (read_as or {}).get("not_tolerated", []) if t in (failed_ or [])],
                measures=read_measures(matcher(), measures_ or ""))
            return shown(matcher().find(text or "", startup.settings.similar_k, profile))
        except VignetteError as error:
            return refused(error)

    outputs = [understood, results, cases, case_view]
    read.click(read_vignette, vignette, [parsed, *fields, *outputs], api_visibility="private")
    find.click(find_similar, [vignette, parsed, *fields], outputs, api_visibility="private")

    def open_case(selected: gr.SelectData) -> str:
        bot = startup.bot
        case = bot.retriever.cases.get(selected.row_value[1])
        return case_html(case, bot.retriever.side) if case else "<p>That case is no longer in the library.</p>"

    cases.select(open_case, None, case_view, api_visibility="private")
