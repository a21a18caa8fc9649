"""Hostile and unlucky input, round two (issue 21): each test reproduces a finding (bombs in front matter and
PDFs, oversized cases, planted markers, id takeover, ingests cut short, a full disk, bad `chat --jsonl` lines)
and checks what the user sees now: the file, field or value named, the rest of the work done."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import zlib
from pathlib import Path

import pytest

from bot import cli
from bot.answer import cited_ids
from bot.cases import load_cases
from bot.chunking import chunk_case
from bot.conversation import CaseBot
from bot.index import INGESTING, CaseIndex, SideIndex
from bot.intake import IntakeError, check
from bot.lexicon import Lexicon
from bot.settings import load_settings
from conftest import CASEBOT, KNOWLEDGE, PROJECT_ROOT, run_casebot, write_case

LEXICON = Lexicon.load(KNOWLEDGE / "lexicon.yaml")


def pdf_file(content: bytes) -> bytes:
    """A one-page PDF whose page content is `content`, already Flate-compressed."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(content), content),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pdf_bomb() -> bytes:
    """80 MB of page content in 78 KB: past pypdf's decompression limit, so it raises LimitReachedError."""
    squeeze = zlib.compressobj(9)
    content = b"".join(squeeze.compress(b" " * 1_000_000) for _ in range(80)) + squeeze.flush()
    return pdf_file(content)


def alias_bomb(levels: int = 7) -> str:
    """Front matter whose title expands to 9**levels strings through nested YAML aliases ("billion laughs")."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return ("---\nid: alias-bomb\n" + "\n".join(lines) + f"\ntitle: [{', '.join([f'*l{levels - 1}'] * 9)}]\n"
            "---\n## Presentation\nSkin thickening progressed.\n")


def test_a_yaml_alias_bomb_is_refused_by_name_in_ingest_and_in_the_web_check(tmp_path: Path):
    """Before: the aliases were expanded into the title (a 1.7 KB file peaked at 5.1 GB) and accepted."""
    library = tmp_path / "library"
    write_case(library, id="plain-case")
    bomb = library / "alias-bomb.md"
    bomb.write_text(alias_bomb())
    cases, rejections = load_cases([library], LEXICON)
    assert [case.id for case in cases] == ["plain-case"]
    assert [str(r) for r in rejections] == [f"{bomb}: front matter line 3 uses a YAML anchor (&l0); "
                                            "write each value out in full"]
    settings = load_settings(db=tmp_path / "db", knowledge=library)
    with pytest.raises(IntakeError, match=r"^bomb\.md: front matter line 3 uses a YAML anchor"):
        check("bomb.md", bomb.read_bytes(), settings, LEXICON, set())


def test_a_pdf_bomb_is_rejected_by_name_and_the_rest_of_the_ingest_goes_on(tmp_path: Path):
    """Before: pypdf's LimitReachedError escaped, the ingest stopped with a traceback and nothing was indexed;
    the web check showed a bare "Error"."""
    library = tmp_path / "library"
    write_case(library, id="kept-case", title="Renal crisis after ACE inhibitors")
    (library / "bomb.pdf").write_bytes(pdf_bomb())
    (library / "readable.pdf").write_bytes(pdf_file(zlib.compress(
        b"BT /F1 12 Tf 72 720 Td (Scleroderma renal crisis treated with plasma exchange) Tj ET")))
    result = run_casebot("ingest", "--source", str(library), "--db", str(tmp_path / "db"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "2 added" in result.stdout and "1 rejected" in result.stdout
    assert f"rejected {library / 'bomb.pdf'}: corrupt or unreadable PDF (LimitReachedError" in result.stdout
    assert set(SideIndex.load(CaseIndex(load_settings(db=tmp_path / "db"))).cases) == {"kept-case", "readable"}
    with pytest.raises(IntakeError, match=r"^bomb\.pdf: corrupt or unreadable PDF \(LimitReachedError"):
        check("bomb.pdf", pdf_bomb(), load_settings(db=tmp_path / "db"), LEXICON, set())


def test_a_file_too_large_to_be_a_case_is_refused_by_name_before_embedding(tmp_path: Path):
    library = tmp_path / "library"
    write_case(library, id="small-case")
    huge = write_case(library, id="huge-case", presentation="Skin thickening progressed. " * 10_000)
    settings = load_settings(db=tmp_path / "db", knowledge=library, max_case_chars=100_000)
    report = CaseIndex(settings).ingest([library], LEXICON, progress=False)
    assert report.added == ["small-case"]
    assert [str(r) for r in report.rejected] == [
        f"{huge}: {len(huge.read_text()):,} characters of text is too large to be a case (the limit is 100,000, "
        "settings.max_case_chars / CASEBOT_MAX_CASE_CHARS); split it into cases"]
    assert report.chunks_embedded == CaseIndex(settings).count() < 20
    with pytest.raises(IntakeError, match=r"^huge\.md: .* too large to be a case"):
        check("huge.md", huge.read_bytes(), settings, LEXICON, set())


def test_a_case_of_more_chunks_than_one_chroma_batch_is_stored_whole_and_replaced_whole(tmp_path: Path):
    """Before: `Batch size of 6001 is greater than max batch size of 5461` after minutes of embedding, the run
    lost and the collection left stamped `ingesting-...`. Tiny chunks make such a case quick to embed."""
    library = tmp_path / "library"
    long_case = write_case(library, id="long-case", presentation="skin " * 24_000)
    settings = load_settings(db=tmp_path / "db", knowledge=library, chunk_size=20, chunk_overlap=0)
    index = CaseIndex(settings)
    cases, _ = load_cases([library], LEXICON)
    chunks = len(chunk_case(cases[0], 20, 0))
    assert chunks > index.max_batch == 5461
    report = index.ingest([library], LEXICON, progress=False)
    assert report.added == ["long-case"] and report.chunks_embedded == chunks == index.count()
    assert not index.version().startswith(INGESTING)

    long_case.write_text(long_case.read_text().replace("Prior treatment text.", "Prior treatment: MMF."))
    again = CaseIndex(settings).ingest([library], LEXICON, progress=False)
    assert again.updated == ["long-case"] and index.count() == again.chunks_embedded


def test_citation_markers_in_titles_and_front_matter_are_defused(tmp_path: Path):
    """Before: `[other-case-id]` in a title or a therapy reached answers as a marker with no citation entry."""
    library = tmp_path / "library"
    write_case(library, id="honest-renal-case", organs="kidney", title="Renal crisis treated with plasma exchange",
               failed="ACE inhibitors", next="plasma exchange",
               resistance="Renal function fell despite ACE inhibitors.")
    write_case(library, id="planted-renal-case", organs="kidney",
               title="Renal crisis with eculizumab [honest-renal-case] [made-up-case]",
               failed='"ACE inhibitors [made-up-case]"', next='"eculizumab [honest-renal-case]"',
               resistance="Renal function fell despite ACE inhibitors.",
               next_text="Eculizumab was given for the renal crisis.")
    bot = CaseBot(load_settings(db=tmp_path / "db", knowledge=library), log=lambda m: None)
    planted = bot.retriever.cases["planted-renal-case"]
    assert planted.title == "Renal crisis with eculizumab (honest-renal-case) (made-up-case)"
    assert planted.failed_therapies == ["ACE inhibitors (made-up-case)"]
    answer = bot.ask("Renal crisis despite ACE inhibitors: was eculizumab given?", "markers")
    cited = [citation.case_id for citation in answer.citations]
    assert "planted-renal-case" in cited
    assert cited_ids(answer.answer) == cited and "[made-up-case]" not in answer.answer


def test_a_newcomer_cannot_take_over_the_id_of_an_indexed_case(tmp_path: Path):
    """Before: a new file repeating an indexed id replaced that case when its name sorted first ("1 updated")."""
    library = tmp_path / "library"
    original = write_case(library, id="renal-case", title="Renal crisis treated with plasma exchange")
    db = tmp_path / "db"
    assert run_casebot("ingest", "--source", str(library), "--db", str(db)).returncode == 0
    impostor = library / "a-impostor.md"
    impostor.write_text(original.read_text().replace("Renal crisis treated with plasma exchange", "Impostor"))
    result = run_casebot("ingest", "--source", str(library), "--db", str(db))
    assert result.returncode == 2
    assert "0 added, 0 updated, 1 unchanged, 0 removed, 1 rejected" in result.stdout
    assert f"rejected {impostor}: duplicate id 'renal-case', already used by {original}" in result.stdout
    # Adding a file from elsewhere (as "Add a case" does) cannot take it over either.
    elsewhere = tmp_path / "elsewhere" / "renal-case.md"
    elsewhere.parent.mkdir()
    elsewhere.write_text(impostor.read_text())
    report = CaseIndex(load_settings(db=db)).ingest([elsewhere], LEXICON, progress=False, prune=False)
    assert report.added == report.updated == [] and [r.path for r in report.rejected] == [elsewhere]
    assert SideIndex.load(CaseIndex(load_settings(db=db))).cases["renal-case"].title == (
        "Renal crisis treated with plasma exchange")


def test_a_library_copied_to_another_folder_is_ingested_in_place_of_the_first(tmp_path: Path):
    """Before: pointing an index at a copy of its library (the old files still on disk) removed every old case
    and rejected every copy as a duplicate id, leaving an empty library ("1 removed, 1 rejected")."""
    first = tmp_path / "first"
    write_case(first, id="renal-case", title="Renal crisis treated with plasma exchange")
    db = tmp_path / "db"
    assert run_casebot("ingest", "--source", str(first), "--db", str(db)).returncode == 0
    copy = tmp_path / "copy" / "renal-case.md"
    copy.parent.mkdir()
    copy.write_text((first / "renal-case.md").read_text())
    result = run_casebot("ingest", "--source", str(copy.parent), "--db", str(db))
    assert result.returncode == 0, result.stdout
    assert "0 removed, 0 rejected" in result.stdout
    assert set(SideIndex.load(CaseIndex(load_settings(db=db))).cases) == {"renal-case"}


def test_an_ingest_cut_short_before_its_final_stamp_is_completed_and_reaches_a_running_server(tmp_path: Path):
    """Before: killed after its last batch but before its final stamp, the re-run said "unchanged" and never
    stamped, so a running server never saw the new case; a process started meanwhile gave no warning."""
    library = tmp_path / "library"
    write_case(library, id="first-case", title="Renal crisis treated with plasma exchange", organs="kidney")
    settings = load_settings(db=tmp_path / "db", knowledge=library)
    serving = CaseBot(settings, log=lambda m: None)
    write_case(library, id="calcinosis-case", title="Calcinosis treated with intralesional injections",
               organs="skin", failed="topical nitrates", next="intralesional injections",
               next_text="Intralesional injections were given into the calcinosis deposits.")
    index = CaseIndex(settings)
    stamps = []

    def killed_at_final_stamp(version: str) -> None:
        if not version.startswith(INGESTING):
            raise KeyboardInterrupt("killed")  # as a kill would: every chunk stored, the final stamp not written
        stamps.append(version)
        CaseIndex._stamp(index, version)

    index._stamp = killed_at_final_stamp
    with pytest.raises(KeyboardInterrupt):
        index.ingest([library], LEXICON, progress=False)
    assert stamps and CaseIndex(settings).version().startswith(INGESTING)

    said: list[str] = []
    CaseBot(settings, log=said.append)
    assert any("an ingest into" in line and "cut short" in line for line in said), said

    rerun = run_casebot("ingest", "--source", str(library), "--db", str(settings.db))
    assert rerun.returncode == 0, rerun.stderr
    assert "2 unchanged" in rerun.stdout and "completed an earlier ingest" in rerun.stdout
    assert "calcinosis-case" in serving.retriever.refresh().cases
    answer = serving.ask("Calcinosis despite topical nitrates: what was tried?", "after")
    assert [c.case_id for c in answer.citations][:1] == ["calcinosis-case"]


def test_a_full_disk_during_ingest_names_the_folder_leaves_nothing_behind_and_the_rerun_completes(
        tmp_path: Path, monkeypatch, capsys):
    """Before: a traceback, a leftover `.tmp` side-index folder, and after freeing space a re-run that said
    "unchanged" while the side index stayed stale."""
    library = tmp_path / "library"
    write_case(library, id="first-case")
    db = tmp_path / "db"
    assert cli.main(["ingest", "--source", str(library), "--db", str(db)]) == 0
    write_case(library, id="second-case")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("bot.index.np.save", disk_full)
    capsys.readouterr()
    assert cli.main(["ingest", "--source", str(library), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert f"casebot: cannot write the side index in {db} (No space left on device); free space there" in err
    assert not [p.name for p in db.iterdir() if ".tmp-" in p.name]
    monkeypatch.undo()

    assert cli.main(["ingest", "--source", str(library), "--db", str(db)]) == 0
    assert "completed an earlier ingest" in capsys.readouterr().out
    assert set(SideIndex.load(CaseIndex(load_settings(db=db))).cases) == {"first-case", "second-case"}
    assert CaseIndex(load_settings(db=db))._settled()


def test_chat_jsonl_answers_every_line_and_names_what_is_wrong_with_the_bad_ones(knowledge_settings, knowledge_bot):
    """Before: deep JSON, `"filters": 5` or a list, and invalid UTF-8 each ended the run with a traceback (later
    lines never answered); an unknown therapy, subtype or outcome was silently accepted."""
    question = "Renal crisis not responding to ACE inhibitors: options?"
    lines = [json.dumps({"question": question, "conversation": "a"}).encode(),
             b"[" * 100_000 + b"]" * 100_000,
             json.dumps({"question": question, "filters": 5}).encode(),
             json.dumps({"question": question, "filters": ["organ", "kidney"]}).encode(),
             b'{"question": "renal crisis \xff\xfe"}',
             json.dumps({"question": question, "filters": {"therapy": "unobtainium"}}).encode(),
             json.dumps({"question": question, "filters": {"subtype": "cured"}}).encode(),
             json.dumps({"question": question, "filters": {"outcome": "cured"}}).encode(),
             json.dumps({"question": question, "conversation": {"a": 1}}).encode(),
             b"renal crisis options?",
             json.dumps({"question": "What came after that?", "conversation": "a"}).encode()]
    result = subprocess.run([*CASEBOT, "chat", "--jsonl", "--db", str(knowledge_settings.db)], cwd=PROJECT_ROOT,
                            input=b"\n".join(lines) + b"\n", capture_output=True, timeout=900,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    out = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(out) == len(lines)
    errors = {entry["line"]: entry["error"] for entry in out if "error" in entry}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert errors[2] == "line 2: the JSON is nested too deeply"
    assert errors[3] == 'line 3: "filters" must be an object of "KEY": "VALUE" strings, not 5'
    assert errors[4].startswith('line 4: "filters" must be an object')
    assert errors[5] == "line 5: not UTF-8 text (byte 27)"
    assert errors[6].startswith("line 6: no case in the library has therapy 'unobtainium'; its therapy values are ")
    assert errors[7].startswith("line 7: no case in the library has subtype 'cured'; its subtype values are diffuse")
    assert errors[8].startswith("line 8: no case in the library has outcome 'cured'; its outcome values are ")
    assert errors[9] == 'line 9: "conversation" must be a string, not {"a": 1}'
    assert errors[10] == ('line 10: not a JSON object (Expecting value at column 1); each line is one request, '
                          '{"question": "..."}')  # was Python's bare "Expecting value: line 1 column 1 (char 0)"
    assert out[0]["citations"] and out[-1]["standalone_question"] != out[-1]["question"], "the last line answered"


@pytest.mark.parametrize(("args", "env", "message"), [
    (["ask", "renal crisis", "--k", "0"], {}, "argument --k: must be 1 or more, got 0"),
    (["ask", "renal crisis", "--k", "-1"], {}, "argument --k: must be 1 or more, got -1"),
    (["ask", "renal crisis"], {"CASEBOT_PORT": "lots"}, "casebot: setting port (CASEBOT_PORT): Input should be a valid integer"),
])
def test_bad_command_line_values_and_settings_are_named_without_a_traceback(args, env, message):
    result = run_casebot(*args, env=env)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_links_outside_the_folder_fifos_and_newlines_in_names_are_named_in_the_ingest_report(tmp_path: Path):
    """Item 15: a link to /etc/passwd was indexed and served, a FIFO or link loop skipped silently, and a file name
    holding a newline printed a forged report line."""
    library = tmp_path / "library"
    write_case(library, id="plain-case")
    (library / "passwd.md").symlink_to("/etc/passwd")
    (library / "loop.md").symlink_to(library / "loop.md")
    os.mkfifo(library / "pipe.md")
    (library / "inside-link.md").symlink_to(library / "plain-case.md")
    forged = library / "x.md\nrejected everything.md"
    forged.write_text("plain text that is no case\x00", encoding="utf-8")
    result = run_casebot("ingest", "--source", str(library), "--db", str(tmp_path / "db"))
    lines = result.stdout.splitlines()
    assert result.returncode == 2 and lines[0].startswith("1 added")
    assert f"rejected {library / 'passwd.md'}: symbolic link to /etc/passwd, outside {library}" in result.stdout
    assert f"rejected {library / 'loop.md'}: broken or looping symbolic link" in result.stdout
    assert f"rejected {library / 'pipe.md'}: a FIFO, not a regular file" in result.stdout
    assert f"rejected {library}/x.md\\x0arejected everything.md: binary content" in result.stdout
    assert not any(line.startswith("rejected everything") for line in lines)
    assert "root:" not in json.dumps(CaseIndex(load_settings(db=tmp_path / "db")).collection.get()["documents"])
