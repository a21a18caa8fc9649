"""Numbered citations for the web chat: [1], [2] in an answer's text and tables, as papers and clinical answer
engines number their sources.

The answer object keeps its [case-id] markers (the contract the CLI, the API, the export and the evaluation
read); only the chat maps them, because full case ids broke pathway tables apart on a ward laptop and
overflowed the bubbles on a phone. Each number carries its case's title (shown on hover and on keyboard
focus) and links to that case in the sources panel, where the same number heads it."""

from __future__ import annotations

import html

from bot.answer import MARKER, Answer, cited_ids


def numbering(answer: Answer) -> dict[str, int]:
    """Each cited case's number, from 1 in the order the text first cites it; a citation the text never
    marks (none, normally) follows, so the panel and the text never disagree."""
    order = dict.fromkeys([*cited_ids(answer.answer), *(citation.case_id for citation in answer.citations)])
    return {case_id: number for number, case_id in enumerate(order, start=1)}


def anchor(turn: int, number: int) -> str:
    """The id of source `number` of answer `turn` (from 0) in the sources panel: unique across a conversation,
    so a number clicked in an earlier answer finds its own case once that answer's sources are shown."""
    return f"source-{turn + 1}-{number}"


def number_chip(number: int, title: str, turn: int) -> str:
    """One citation as a link to its case in the sources panel, titled with the case (the chat's sanitiser
    keeps href, class and title, and drops data attributes); the brackets are entities, so Markdown leaves
    them as text."""
    return (f'<a class="cite-chip cite-num" href="#{anchor(turn, number)}" title="{html.escape(title)}">'
            f"&#91;{number}&#93;</a>")


def numbered_text(text: str, answer: Answer, turn: int) -> str:
    """`text`, a piece of the answer of turn `turn`, as chat Markdown: HTML escaped, stray brackets
    neutralised, each [case-id] its number."""
    numbers = numbering(answer)
    titles = {citation.case_id: citation.title for citation in answer.citations}
    pieces = MARKER.split(html.escape(text, quote=False))  # text, case id, text, case id, ..., text
    return "".join(number_chip(numbers[piece], titles.get(piece, piece), turn) if i % 2
                   else piece.replace("[", "\\[").replace("]", "\\]") for i, piece in enumerate(pieces))
