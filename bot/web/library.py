"""The web app's Case library tab: a searchable table of every case, each opening in full, and adding a
case from the browser (an uploaded file or a form), checked and shown back before it is written and indexed
(bot/intake.py)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import get_args

import gradio as gr

from bot.cases import ORGANS, Evidence, Outcome, Subtype
from bot.index import SideIndex
from bot.intake import SECTIONS, Draft, IntakeError, add, check, form_markdown
from bot.lexicon import Lexicon
from bot.text import tokenize
from bot.web.render import case_html, chip
from bot.web.startup import Startup

LIBRARY_COLUMNS = ["id", "title", "subtype", "organs", "failed", "next", "outcome", "evidence"]
LIBRARY_WIDTHS = ["15%", "29%", "7%", "10%", "12%", "12%", "7%", "8%"]
ADD_HELP = ("Upload a case file (Markdown with the library's front matter, plain text or PDF), or fill in the "
            "form. It is checked as ingest checks files, including for patient identifiers, and shown back; "
            "nothing is written until you press **Add to the library**.")


def library_rows(side: SideIndex, query: str, lexicon: Lexicon) -> list[list[str]]:
    """The case table, keeping the cases that contain every word of `query`: as part of their metadata
    (so "src-" or "ritux" work), or anywhere in their text in any inflection (the index's own tokens). A name
    the lexicon knows (a brand such as "CellCept", an abbreviation) stands for its term, as in the chat: its
    canonical name in the metadata or any of its names in the text."""
    mentions = lexicon.spans(query)
    rest = "".join(query[start:end] for start, end in
                   zip([0, *(m.end for m in mentions)], [*(m.start for m in mentions), len(query)]))
    terms = [lexicon.narrowest(mention.terms) for mention in mentions]
    names = [(term.canonical.lower(), [set(stems) for stems in tokenize(list(term.aliases))]) for term in terms]
    words = rest.lower().split()
    stems = [set(word_stems) for word_stems in tokenize(words)] if words else []
    rows = []
    for case in sorted(side.cases.values(), key=lambda c: c.id):
        row = [case.id, case.title, case.subtype, ", ".join(case.organs), ", ".join(case.failed_therapies),
               ", ".join(case.next_therapies), case.outcome, case.evidence or ""]
        metadata = " ".join([*row, *case.antibodies]).lower()
        tokens = side.case_tokens.get(case.id, set())
        if all(word in metadata or (word_stems and word_stems <= tokens) for word, word_stems in zip(words, stems)) \
                and all(canonical in metadata or any(alias and alias <= tokens for alias in aliases)
                        for canonical, aliases in names):
            rows.append(row)
    return rows


def listed(text: str) -> list[str]:
    """A form's comma-separated list."""
    return [item.strip() for item in text.split(",") if item.strip()]


def refused(reason: str) -> str:
    return f'<p class="answer-warning" id="add-refused">Not added. {html.escape(reason)}</p>'


def build_library_tab(startup: Startup, started: gr.State) -> None:
    """The tab's components and events; called inside an open gr.Tab. "Add a case" comes first, so that it
    stays on the first screen however long the case opened below it is. The table is filled once the bot is
    ready in the session (`started`)."""
    with gr.Accordion("Add a case to the library", open=False, elem_id="add-case"):
        gr.Markdown(ADD_HELP)
        draft = gr.State(None)
        with gr.Tabs():
            with gr.Tab("Upload a file", id="add-upload"):
                upload = gr.File(label="Case file", file_types=[".md", ".markdown", ".txt", ".pdf"], type="filepath",
                                 elem_id="add-file")
                check_upload = gr.Button("Check the file", elem_id="add-check-file")
            with gr.Tab("Fill in a form", id="add-form"):
                with gr.Row():
                    case_id = gr.Textbox(label="id (a-z, 0-9, -)", elem_id="form-id")
                    title = gr.Textbox(label="title", scale=3, elem_id="form-title")
                with gr.Row():
                    subtype = gr.Dropdown(list(get_args(Subtype)), value="unknown", label="subtype")
                    organs = gr.Dropdown(list(ORGANS), multiselect=True, label="organs", elem_id="form-organs")
                    antibodies = gr.Dropdown(startup.lexicon.names("antibodies"), multiselect=True, label="antibodies")
                with gr.Row():
                    failed = gr.Textbox(label="failed therapies (comma-separated)", elem_id="form-failed")
                    following = gr.Textbox(label="next therapies (comma-separated)", elem_id="form-next")
                with gr.Row():
                    outcome = gr.Dropdown(list(get_args(Outcome)), value="unknown", label="outcome")
                    evidence = gr.Dropdown(list(get_args(Evidence)), value="composite-vignette", label="evidence")
                    source = gr.Textbox(label="source", scale=2)
                sections = [gr.Textbox(label=heading, lines=2, elem_id=f"form-{heading.lower().replace(' ', '-')}")
                            for heading in SECTIONS]
                check_form = gr.Button("Check the form", elem_id="add-check-form")
        preview = gr.HTML(elem_id="add-preview")
        confirm = gr.Button("Add to the library", variant="primary", interactive=False, elem_id="add-confirm")

    search = gr.Textbox(label="Search the cases", placeholder="a therapy, organ, antibody, any word…",
                        elem_id="library-search")
    table = gr.Dataframe(headers=LIBRARY_COLUMNS,
                         interactive=False, wrap=True, max_height=420, column_widths=LIBRARY_WIDTHS,
                         elem_id="library-table")
    case_view = gr.HTML("<p>Select a case in the table to read it in full.</p>", elem_id="case-view")

    def checked(name: str, data: bytes):
        """The check's outcome: a preview and an enabled Add button, or the reason and nothing pending."""
        bot = startup.bot
        try:
            result = check(name, data, bot.settings, bot.lexicon, set(bot.retriever.refresh().cases))
        except IntakeError as error:
            return None, refused(str(error)), gr.Button(interactive=False)
        shown = (f'<p id="add-checked">Checked: <strong>{html.escape(result.filename)}</strong> can be added as '
                 f"{chip(result.case.id)}. This is how it will read:</p>")
        return result, shown + case_html(result.case), gr.Button(interactive=True)

    def check_file(path: str | None):
        if not path:
            return None, refused("Choose a file first."), gr.Button(interactive=False)
        return checked(Path(path).name, Path(path).read_bytes())

    def check_filled(identifier: str, name: str, kind: str, organ_list: list[str], antibody_list: list[str],
                     failed_text: str, next_text: str, result: str, level: str, cited: str, *texts: str):
        fields = {"id": identifier.strip(), "title": name.strip(), "subtype": kind, "organs": organ_list,
                  "antibodies": antibody_list, "failed_therapies": listed(failed_text),
                  "next_therapies": listed(next_text), "outcome": result, "evidence": level, "source": cited.strip()}
        if not fields["id"] or not fields["title"]:
            return None, refused("The form needs an id and a title."), gr.Button(interactive=False)
        markdown = form_markdown(fields, dict(zip(SECTIONS, texts)))
        return checked(f"{fields['id']}.md", markdown.encode("utf-8"))

    check_upload.click(check_file, upload, [draft, preview, confirm], api_visibility="private")
    check_form.click(check_filled, [case_id, title, subtype, organs, antibodies, failed, following, outcome,
                                    evidence, source, *sections], [draft, preview, confirm], api_visibility="private")

    def add_case(pending: Draft | None, query: str):
        if pending is None:
            return None, refused("Check a file or the form first."), gr.Button(interactive=False), gr.skip()
        bot = startup.bot
        try:
            report = add(pending, bot.settings, bot.lexicon)
        except IntakeError as error:
            return None, refused(str(error)), gr.Button(interactive=False), gr.skip()
        side = bot.retriever.refresh()
        done = (f'<p id="add-done">Added {chip(pending.case.id)} to {html.escape(str(bot.settings.cases_dir))} and '
                f"indexed it ({report.chunks_embedded} passages). Ask about it in the Chat tab now.</p>")
        return None, done, gr.Button(interactive=False), library_rows(side, query, bot.lexicon)

    confirm.click(add_case, [draft, search], [draft, preview, confirm, table], api_visibility="private")

    def rows(query: str | None) -> list[list[str]]:
        bot = startup.bot
        return library_rows(bot.retriever.refresh(), query or "", bot.lexicon)

    gr.on([started.change, search.change], rows, search, table, api_visibility="private")

    def open_case(selected: gr.SelectData) -> str:
        bot = startup.bot
        case = bot.retriever.cases.get(selected.row_value[0])
        return case_html(case, bot.retriever.side) if case else "<p>That case is no longer in the library.</p>"

    table.select(open_case, None, case_view, api_visibility="private")
