"""The web app's Pathways tab: after a therapy failed, what the library's cases tried next and how it went,
as stacked bars (one colour per outcome) and the same table the chat answers show, each count citing its
cases; a case table below opens any of them in full. Computed from the cases' front matter (bot/pathways.py),
so nothing in it can be invented."""

from __future__ import annotations

import html
from typing import get_args

import gradio as gr
import pandas as pd

from bot.cases import ORGANS, Subtype
from bot.conversation import CaseBot
from bot.pathways import OUTCOME_ORDER, Pathway, markdown_table, pathway
from bot.web.render import as_text, case_html, marked_text
from bot.web.startup import Startup

OUTCOME_COLOURS = {"improved": "#15803d", "stabilised": "#65a30d", "partial": "#ca8a04", "worsened": "#ea580c",
                   "died": "#b91c1c", "unknown": "#6b7280"}
CASE_COLUMNS = ["case", "title", "next therapy", "outcome"]


def failed_choices(bot: CaseBot) -> list[str]:
    """Therapies recorded as failed, the most often failed first (lexicon names, so MMF and CellCept are one)."""
    counts: dict[str, int] = {}
    for case in bot.retriever.refresh().cases.values():
        for therapy in {bot.lexicon.canonical("therapies", t) or t for t in case.failed_therapies}:
            counts[therapy] = counts.get(therapy, 0) + 1
    return sorted(counts, key=lambda name: (-counts[name], name.lower()))


def therapy_meant(bot: CaseBot, typed: str) -> tuple[str, str]:
    """The therapy a typed name means, with misspellings put right as the chat puts them right
    ("mycophenolte": mycophenolate mofetil), and a note saying so ("" when nothing was changed)."""
    if bot.lexicon.canonical("therapies", typed):
        return typed, ""
    fixed, _ = bot.resolver.corrected(typed, bot.retriever)
    named = [term for _, terms in bot.lexicon.mentions(fixed) for term in terms if term.group == "therapies"]
    if not named:
        return typed, ""
    meant = bot.lexicon.narrowest(named).canonical
    return meant, f"Read “{typed}” as {meant}."


def compute(bot: CaseBot, failed: str, organ: str, subtype: str) -> Pathway:
    return pathway(bot.retriever.refresh().cases.values(), bot.lexicon, therapy_meant(bot, failed)[0],
                   organ=organ or None, subtype=subtype or None)


def legend_html(result: Pathway) -> str:
    """A key to every outcome the bars draw, in their order (the plot's own legend was clipped to its title)."""
    drawn = [o for o in OUTCOME_ORDER if any(o in row.outcomes for row in result.rows)]
    items = "".join(f'<li data-outcome="{o}"><span class="swatch" style="background:{OUTCOME_COLOURS[o]}">'
                    f"</span>{o}</li>" for o in drawn)
    return f'<ul class="pathway-legend" aria-label="Bar colours by outcome">{items}</ul>' if drawn else ""


def bars(result: Pathway) -> pd.DataFrame:
    """One row per (next therapy, outcome) with its number of cases, for the stacked bar plot."""
    rows = [{"next therapy": row.next_therapy, "outcome": outcome, "cases": len(ids)}
            for row in result.rows for outcome, ids in row.outcomes.items()]
    return pd.DataFrame(rows, columns=["next therapy", "outcome", "cases"])


def case_rows(bot: CaseBot, result: Pathway) -> list[list[str]]:
    cases = bot.retriever.cases
    return [[cid, cases[cid].title if cid in cases else "", row.next_therapy, outcome]
            for row in result.rows for outcome, ids in row.outcomes.items() for cid in ids]


def cited_target(number: int) -> str:
    return f"pathway-case-{number}"


def summary(bot: CaseBot, result: Pathway) -> tuple[str, str]:
    """The table with each case as a number (titled with the case, as in the chat: ids broke the table apart),
    and the numbered list of those cases the numbers lead to."""
    if not result.rows:
        where = f" ({', '.join(f'{k}: {v}' for k, v in result.filters.items())})" if result.filters else ""
        return f"No case in the library records **{result.failed}** as a failed therapy{where}.", ""
    cases = bot.retriever.cases
    numbers = {cid: number for number, cid in enumerate(result.case_ids(), start=1)}
    titles = {cid: cases[cid].title for cid in numbers if cid in cases}
    items = "".join(f'<li id="{cited_target(number)}" data-case="{html.escape(cid)}" tabindex="-1">'
                    f'<span class="source-number">[{number}]</span> {html.escape(titles.get(cid, cid))} '
                    f'<span class="source-ref">{html.escape(cid)}</span></li>' for cid, number in numbers.items())
    return marked_text(markdown_table(result), numbers, titles, cited_target), f'<ol class="cited-cases">{items}</ol>'


def build_pathways_tab(startup: Startup, started: gr.State) -> None:
    """The tab's components and events; called inside an open gr.Tab. Also the `pathways` API endpoint, which
    returns the same table as `casebot pathways --json`. The failed therapies are offered once the bot is
    ready in the session (`started`), the most often failed one chosen."""
    with gr.Row():
        failed = gr.Dropdown([], value=None, label="Failed therapy",
                             allow_custom_value=True, elem_id="pathway-failed")
        organ = gr.Dropdown([("any", ""), *((o, o) for o in ORGANS)], value="", label="Organ", elem_id="pathway-organ")
        subtype = gr.Dropdown([("any", ""), *((s, s) for s in get_args(Subtype))], value="", label="Subtype",
                              elem_id="pathway-subtype")
    plot = gr.BarPlot(x="next therapy", y="cases", color="outcome", color_map=OUTCOME_COLOURS, y_title="cases",
                      x_label_angle=-20, height=380, label="What was tried next, and how it went",
                      elem_id="pathway-plot")
    legend = gr.HTML(elem_id="pathway-legend")
    table = gr.Markdown(elem_id="pathway-table")
    cited = gr.HTML(elem_id="pathway-cited")
    cases = gr.Dataframe(headers=CASE_COLUMNS, interactive=False, wrap=True, max_height=300,
                         label="The cases counted (select one to read it)", elem_id="pathway-cases")
    case_view = gr.HTML(elem_id="pathway-case")

    def show(failed_name: str | None, organ_name: str, subtype_name: str):
        if not failed_name:
            return bars(Pathway(failed="")), "", "Choose a failed therapy.", "", [], ""
        bot = startup.bot
        result = compute(bot, failed_name, organ_name, subtype_name)
        note = therapy_meant(bot, failed_name)[1]
        table_text, cited_list = summary(bot, result)
        return (bars(result), legend_html(result), (f"*{as_text(note)}*\n\n" if note else "") + table_text,
                cited_list, case_rows(bot, result), "")

    inputs, outputs = [failed, organ, subtype], [plot, legend, table, cited, cases, case_view]
    gr.on([control.change for control in inputs], show, inputs, outputs, api_visibility="private")

    def open_case(selected: gr.SelectData) -> str:
        bot = startup.bot
        case = bot.retriever.cases.get(selected.row_value[0])
        return case_html(case, bot.retriever.side) if case else "<p>That case is no longer in the library.</p>"

    cases.select(open_case, None, case_view, api_visibility="private")
    def offered(chosen: str | None):
        """The failed therapies of the library as it is now (a case added in the browser since the start brings
        its own at the next page load), and the choice kept or made."""
        now = failed_choices(startup.bot)
        return gr.Dropdown(choices=now, value=chosen or (now[0] if now else None))

    started.change(offered, failed, failed, api_visibility="private")

    def pathways(failed: str, organ: str = "", subtype: str = "") -> dict:
        """After `failed` failed: each next therapy with its cases per outcome (as `casebot pathways --json`)."""
        return compute(startup.bot, failed, organ, subtype).model_dump()

    gr.api(pathways, api_name="pathways")
