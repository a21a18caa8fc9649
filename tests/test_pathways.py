"""Pathway summaries: computed from front matter, names normalised, the same through the API, CLI and answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gradio_client import Client

from bot.answer import cited_ids
from bot.conversation import CaseBot
from bot.lexicon import Lexicon
from bot.pathways import Pathway, PathwayRow, markdown_table, pathway, shown_ids
from bot.settings import load_settings
from bot.intake import add, check
from bot.web.pathways import compute, failed_choices, therapy_meant
from conftest import KNOWLEDGE, casebot_server, run_casebot, write_case

LEXICON = Lexicon.load(KNOWLEDGE / "lexicon.yaml")
# Written as clinicians write: MMF, mycophenolate and CellCept are one therapy.
LIBRARY = [
    ("a-ntd-1", "MMF", "nintedanib", "stabilised", "lung"),
    ("a-ntd-2", "mycophenolate", "Ofev", "worsened", "lung"),
    ("a-rtx-1", "CellCept", "rituximab", "improved", "lung"),
    ("a-hsct-1", "mycophenolate mofetil", "AHSCT", "died", "lung"),
    ("a-hsct-2", "MMF", "HSCT", "improved", "skin"),
    ("b-other", "methotrexate", "rituximab", "improved", "skin"),
]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pathways")
    for case_id, failed, following, outcome, organ in LIBRARY:
        write_case(folder / "cases", id=case_id, title=f"{organ} disease after {failed}, then {following}", organs=organ,
                   failed=failed, next=following, outcome=outcome,
                   resistance=f"The {organ} disease progressed despite {failed}.",
                   next_text=f"{following} was started.")
    return folder


def expected_rows(organ: str | None = None) -> dict[str, dict[str, list[str]]]:
    """The table counted by hand from LIBRARY."""
    rows = {"nintedanib": {"stabilised": ["a-ntd-1"], "worsened": ["a-ntd-2"]},
            "rituximab": {"improved": ["a-rtx-1"]},
            "autologous haematopoietic stem cell transplantation": {"improved": ["a-hsct-2"], "died": ["a-hsct-1"]}}
    if organ == "lung":
        rows["autologous haematopoietic stem cell transplantation"] = {"died": ["a-hsct-1"]}
    return rows


def test_pathway_table_matches_a_hand_count(library):
    from bot.cases import load_cases

    cases, rejections = load_cases([library], LEXICON)
    assert rejections == []
    result = pathway(cases, LEXICON, "MMF")
    assert result.failed == "mycophenolate mofetil"
    assert {row.next_therapy: row.outcomes for row in result.rows} == expected_rows()
    lung = pathway(cases, LEXICON, "mycophenolate", organ="ILD")
    assert {row.next_therapy: row.outcomes for row in lung.rows} == expected_rows("lung")
    assert [row.total for row in result.rows] == [2, 2, 1]


def test_the_same_table_through_the_cli_and_the_answer(library, tmp_path):
    db = tmp_path / "db"
    result = run_casebot("pathways", "--failed", "CellCept", "--json", "--db", str(db),
                         env={"CASEBOT_KNOWLEDGE": str(library)})
    assert result.returncode == 0, result.stderr
    rows = {row["next_therapy"]: row["outcomes"] for row in json.loads(result.stdout)["rows"]}
    assert rows == expected_rows()

    bot = CaseBot(load_settings(db=db, knowledge=library), log=lambda m: None)
    answer = bot.ask("Lung disease progressing on MMF: what was tried next?", "pathway")
    assert "After **mycophenolate mofetil** failed" in answer.answer
    table_rows = [line for line in answer.answer.splitlines() if line.startswith("| ") and "[" in line]
    assert len(table_rows) == len(expected_rows("lung"))
    for line in table_rows:
        name = line.split("|")[1].strip()
        assert set(cited_ids(line)) == {cid for ids in expected_rows("lung")[name].values() for cid in ids}
    assert cited_ids(answer.answer) == [c.case_id for c in answer.citations]
    assert "b-other" not in cited_ids(answer.answer)


def test_the_same_table_through_the_web_app(library, tmp_path):
    """The Pathways tab's data, through the web app's `pathways` endpoint (the browser test looks at the tab)."""
    with casebot_server(tmp_path / "db", env={"CASEBOT_KNOWLEDGE": str(library)}) as url:
        client = Client(url, verbose=False)
        everything = client.predict("CellCept", "", "", api_name="/pathways")
        lung = client.predict("MMF", "lung", "", api_name="/pathways")
        nothing = client.predict("MMF", "", "limited", api_name="/pathways")
    assert everything["failed"] == "mycophenolate mofetil"
    assert {row["next_therapy"]: row["outcomes"] for row in everything["rows"]} == expected_rows()
    assert {row["next_therapy"]: row["outcomes"] for row in lung["rows"]} == expected_rows("lung")
    assert nothing["rows"] == [] and nothing["filters"] == {"subtype": "limited"}


def test_a_large_cell_shows_a_few_markers_and_the_full_count():
    """At 10,000 cases a pathway row can count hundreds: the answer's table cites the first few per cell."""
    big = Pathway(failed="mycophenolate mofetil", rows=[PathwayRow(
        next_therapy="rituximab", outcomes={"improved": [f"case-{n}" for n in range(40)], "died": ["case-died"]})])
    table = markdown_table(big, per_cell=3)
    row = next(line for line in table.splitlines() if line.startswith("| rituximab"))
    assert row.split("|")[2].strip() == "41"
    assert cited_ids(row) == ["case-0", "case-1", "case-2", "case-died"] == shown_ids(big, 3)
    assert "+37 more" in row
    assert cited_ids(markdown_table(big)) == big.case_ids()


def test_the_pathways_tab_reads_misspellings_and_offers_a_case_added_since_the_start(library, tmp_path):
    """Issue 18, item 10: "mycophenolte" found nothing; a case added in the browser did not bring its failed
    therapy to the tab's list (the list is computed again at each page load)."""
    knowledge = tmp_path / "knowledge"
    shutil.copytree(library, knowledge)
    settings = load_settings(db=tmp_path / "db", knowledge=knowledge)
    bot = CaseBot(settings, log=lambda message: None)
    assert therapy_meant(bot, "mycophenolte") == ("mycophenolate mofetil", "Read “mycophenolte” as "
                                                  "mycophenolate mofetil.")
    assert therapy_meant(bot, "MMF") == ("MMF", "")
    assert compute(bot, "mycophenolte", "", "") == compute(bot, "mycophenolate mofetil", "", "")
    assert compute(bot, "mycophenolte", "", "").rows
    assert "cyclophosphamide" not in failed_choices(bot)
    case = write_case(tmp_path / "new", id="c-new", organs="lung", failed="cyclophosphamide", next="rituximab",
                      outcome="improved")
    draft = check(case.name, case.read_bytes(), settings, bot.lexicon, set(bot.retriever.refresh().cases))
    add(draft, settings, bot.lexicon)
    assert "cyclophosphamide" in failed_choices(bot)
    assert compute(bot, "cyclophosphamide", "", "").case_ids() == ["c-new"]
