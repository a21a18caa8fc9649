"""Ingest into a real embedded Chroma with the real model: incremental, named rejections, no mixing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bot.index import CaseIndex, IndexMismatch, SideIndex
from bot.lexicon import Lexicon
from bot.settings import load_settings
from conftest import KNOWLEDGE, run_casebot, write_case

LEXICON = Lexicon.load(KNOWLEDGE / "lexicon.yaml")


def counts(output: str) -> dict[str, int]:
    return {name: int(n) for n, name in re.findall(r"(\d+) (added|updated|unchanged|removed|rejected)", output)}


def embedded(output: str) -> int:
    return int(re.search(r"\((\d+) chunks embedded\)", output).group(1))


def test_ingest_is_incremental_and_reports_every_change(tmp_path: Path):
    library, db = tmp_path / "library", tmp_path / "db"
    for n in range(3):
        write_case(library, id=f"case-{n}", title=f"Case number {n}", presentation=f"Presentation of case {n}.")
    first = run_casebot("ingest", "--source", str(library), "--db", str(db))
    assert first.returncode == 0, first.stderr
    assert counts(first.stdout) == {"added": 3, "updated": 0, "unchanged": 0, "removed": 0, "rejected": 0}

    again = run_casebot("ingest", "--source", str(library), "--db", str(db))
    assert counts(again.stdout)["unchanged"] == 3 and embedded(again.stdout) == 0

    write_case(library, id="case-1", title="Case number 1, edited", presentation="Now with new text.")
    (library / "case-2.md").unlink()
    changed = run_casebot("ingest", "--source", str(library), "--db", str(db))
    assert counts(changed.stdout) == {"added": 0, "updated": 1, "unchanged": 1, "removed": 1, "rejected": 0}

    index = CaseIndex(load_settings(db=db))
    stored = index.collection.get(include=["metadatas"])
    assert {m["case_id"] for m in stored["metadatas"]} == {"case-0", "case-1"}
    assert len(stored["ids"]) == len(set(stored["ids"]))
    side = SideIndex.load(index)
    assert side.cases["case-1"].title == "Case number 1, edited"
    assert sorted(side.chunk_ids) == sorted(stored["ids"])
    stored = index.collection.get(ids=side.chunk_ids, include=["embeddings"])
    order = [stored["ids"].index(chunk_id) for chunk_id in side.chunk_ids]
    assert np.allclose(side.vectors, np.asarray(stored["embeddings"])[order])

    (index.cache_dir / "vectors.npy").unlink()  # a side index an older version wrote, or a damaged one
    assert np.array_equal(SideIndex.load(index).vectors, side.vectors)


def test_rejected_file_is_named_exit_2_and_the_rest_is_indexed(tmp_path: Path):
    library, db = tmp_path / "library", tmp_path / "db"
    write_case(library, id="fine-case")
    (library / "broken.md").write_text("---\nid: broken\n---\n")
    result = run_casebot("ingest", "--source", str(library), "--db", str(db))
    assert result.returncode == 2
    assert f"{library / 'broken.md'}: front matter field 'title' is missing" in result.stdout
    assert counts(result.stdout)["added"] == 1
    assert CaseIndex(load_settings(db=db)).count() > 0


def test_a_file_that_turns_invalid_keeps_its_last_good_chunks(tmp_path: Path):
    library, db = tmp_path / "library", tmp_path / "db"
    path = write_case(library, id="kept-case")
    run_casebot("ingest", "--source", str(library), "--db", str(db))
    path.write_text(path.read_text().replace("outcome: unknown", "outcome: cured"))
    result = run_casebot("ingest", "--source", str(library), "--db", str(db))
    assert result.returncode == 2 and "field 'outcome'" in result.stdout
    assert counts(result.stdout)["removed"] == 0
    metas = CaseIndex(load_settings(db=db)).collection.get(include=["metadatas"])["metadatas"]
    assert {m["case_id"] for m in metas} == {"kept-case"}


def test_index_built_with_other_chunking_is_refused_not_mixed(tmp_path: Path):
    library, db = tmp_path / "library", tmp_path / "db"
    write_case(library, id="one-case")
    CaseIndex(load_settings(db=db)).ingest([library], LEXICON, progress=False)
    with pytest.raises(IndexMismatch, match="chunker.*casebot ingest --reset"):
        CaseIndex(load_settings(db=db, chunk_size=400))
    result = run_casebot("ingest", "--source", str(library), "--db", str(db), env={"CASEBOT_CHUNK_SIZE": "400"})
    assert result.returncode == 2 and "--reset" in result.stderr
    reset = run_casebot("ingest", "--reset", "--source", str(library), "--db", str(db),
                        env={"CASEBOT_CHUNK_SIZE": "400"})
    assert reset.returncode == 0 and counts(reset.stdout)["added"] == 1


def test_ask_with_an_empty_db_folder_builds_the_index_from_knowledge_first(tmp_path: Path):
    db = tmp_path / "fresh"
    result = run_casebot("ask", "renal crisis not responding to ACE inhibitors", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    assert "building it from knowledge" in result.stderr
    assert '"seed-src-ace-plasma-exchange"' in result.stdout
    assert CaseIndex(load_settings(db=db)).count() > 100


def test_a_mistyped_source_folder_changes_nothing(tmp_path: Path):
    library, db = tmp_path / "library", tmp_path / "db"
    write_case(library, id="kept-case")
    run_casebot("ingest", "--source", str(library), "--db", str(db))
    result = run_casebot("ingest", "--source", str(tmp_path / "librray"), "--db", str(db))
    assert result.returncode == 2
    assert f"source folder not found: {tmp_path / 'librray'}; the index was not changed" in result.stderr
    metas = CaseIndex(load_settings(db=db)).collection.get(include=["metadatas"])["metadatas"]
    assert {m["case_id"] for m in metas} == {"kept-case"}
