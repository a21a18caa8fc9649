"""Follow-up or new topic (bot/resolution.py), each rule tried on both sides, and the words the decision
reads (knowledge/question_language.yaml, the lexicon's spelling and hyphenation variants)."""

from __future__ import annotations

import pytest

from bot.lexicon import Lexicon
from conftest import KNOWLEDGE

LEXICON = Lexicon.load(KNOWLEDGE / "lexicon.yaml")
CART = "ild-cart-merkt-2024"


def resolve(bot, question: str, focus: list[str], earlier: list[list[str]] | None = None):
    retriever = bot.retriever.snapshot()
    text, corrections = bot.resolver.corrected(question, retriever)
    return bot.resolver.resolve(text, [focus] + (earlier or []), retriever, corrections)


def test_the_first_question_is_a_new_topic(knowledge_bot):
    assert resolve(knowledge_bot, "What did she get before that?", []).kind == "new-topic"


@pytest.mark.parametrize("question", ["how is she now?", "and the outcome?", "any cases?"])
def test_words_that_only_point_back_are_refused_first_and_answered_after_an_answer(knowledge_bot, question):
    """Before: "how is she now?" as a conversation's first question was answered from three unrelated cases (it
    names nothing, so every case "held all" of it). After an answer the same words are a follow-up on it."""
    alone = knowledge_bot.ask(question, f"first-{question}")
    assert alone.refused and alone.citations == [] and alone.gate.nothing_asked
    assert "names nothing to look for" in alone.answer
    conversation = f"after-{question}"
    first = knowledge_bot.ask("Renal crisis not responding to ACE inhibitors: options?", conversation)
    assert not first.refused
    if question != "any cases?":  # no back-reference: a new question that still names nothing
        after = knowledge_bot.ask(question, conversation)
        assert not after.refused and after.resolution.kind == "follow-up"
        assert after.citations[0].case_id in {c.case_id for c in first.citations}
    else:
        assert knowledge_bot.ask(question, conversation).refused


@pytest.mark.parametrize("question", ["what is the capital of France?", "Who won the 2018 World Cup?",
                                      "RTX after CYC failure for lung", "CellCept intolerance - alternatives?"])
def test_a_question_that_does_not_point_back_is_a_new_topic_however_short(knowledge_bot, question):
    resolution = resolve(knowledge_bot, question, [CART])
    assert resolution.kind == "new-topic", resolution
    assert resolution.reason == "it does not refer back to the last answer"


def test_an_aspect_word_with_a_new_drug_is_still_a_new_topic(knowledge_bot):
    resolution = resolve(knowledge_bot, "eculizumab in SRC outcomes", [CART])
    assert resolution.kind == "new-topic" and "eculizumab" in resolution.reason


@pytest.mark.parametrize("question", ["What had she failed before that?", "and the outcome?", "Did it work?",
                                      "How did they do?"])
def test_a_question_that_points_back_is_a_follow_up(knowledge_bot, question):
    resolution = resolve(knowledge_bot, question, [CART, "ild-mmf-failure-nintedanib"])
    assert resolution.kind == "follow-up", resolution


def test_naming_what_the_last_cases_do_not_hold_starts_a_new_topic(knowledge_bot):
    moved = resolve(knowledge_bot, "And what about GAVE in that case?", [CART])
    assert moved.kind == "new-topic" and "GAVE" in moved.reason
    stays = resolve(knowledge_bot, "Was nintedanib continued in that case?", [CART])
    assert stays.kind == "follow-up" and stays.cases == [CART]


def test_a_condition_is_held_only_by_a_case_that_has_it_not_by_the_same_organ_or_a_verb(knowledge_bot):
    """One case checks the oesophagus (the gut), another "gave" iloprost (a verb): neither had GAVE."""
    for other in ("ild-progressive-despite-all-ahsct-ineligible", "vasc-dcssc-rnap-raynaud-iv-iloprost"):
        moved = resolve(knowledge_bot, "What about GAVE, then?", [other])
        assert moved.kind == "new-topic" and "GAVE" in moved.reason, (other, moved)
    gave = "gi-dcssc-rnap-gave-endoscopic-ablation"
    stays = resolve(knowledge_bot, "What about the GAVE then, how was it treated in her?", [gave])
    assert stays.kind == "follow-up" and stays.cases == [gave]


def test_a_reference_naming_what_an_earlier_answer_held_returns_to_it(knowledge_bot):
    src = "src-dcssc-rnap-ace-dialysis-recovery"
    back = resolve(knowledge_bot, "back to the renal crisis woman - did her kidneys recover?", [CART], [[src]])
    assert back.kind == "follow-up" and back.cases == [src]
    fresh = resolve(knowledge_bot, "did her kidneys recover after renal crisis?", [CART], [[CART]])
    assert fresh.kind == "new-topic"


def test_a_singular_reference_or_an_aspect_means_the_lead_case_and_a_plural_one_every_case(knowledge_bot):
    focus = [CART, "ild-mmf-failure-nintedanib"]
    outcome = resolve(knowledge_bot, "and the outcome?", focus)
    assert (outcome.cases, outcome.aspect) == ([CART], "Outcome")
    before = resolve(knowledge_bot, "what had they been given before that?", focus)
    assert (before.cases, before.aspect) == (focus, "Prior treatment")


def test_a_pronoun_picks_the_case_whose_patient_it_names_or_says_it_could_not(knowledge_bot):
    retriever = knowledge_bot.retriever
    sexes = {cid: knowledge_bot.resolver.case_sex(cid, retriever) for cid in sorted(retriever.cases)}
    man = next(cid for cid, sex in sexes.items() if sex == "male")
    woman = next(cid for cid, sex in sexes.items() if sex == "female")
    assert resolve(knowledge_bot, "What did she get before that?", [man, woman]).cases == [woman]
    assert resolve(knowledge_bot, "What did he get before that?", [man, woman]).cases == [man]
    lone = resolve(knowledge_bot, "What did she get before that?", [man])
    assert lone.cases == [man] and "says a woman" in lone.reason
    assert "says a woman" in lone.note({man: retriever.cases[man].title})


def test_an_outcome_follow_up_quotes_the_lead_cases_outcome_section(knowledge_bot):
    first = knowledge_bot.ask("Has anyone been treated with CAR-T cells for lung fibrosis?", "aspect-outcome")
    assert not first.refused
    lead = first.citations[0].case_id
    answer = knowledge_bot.ask("and the outcome?", "aspect-outcome")
    assert [c.case_id for c in answer.citations] == [lead]
    outcome = " ".join(meta["text"] for meta in knowledge_bot.retriever.side.case_passages(lead)
                       if meta["section"] == "Outcome")
    assert all(passage in outcome for passage in answer.citations[0].passages), answer.citations[0].passages
    assert answer.understood_as.startswith("follow-up on “") and answer.understood_as.endswith("(outcome)")
    assert len(answer.understood_as) < 100


def test_a_follow_up_quotes_what_it_asks_about_not_what_names_the_case(knowledge_bot):
    """Before: "back to the SIBO man: which antibiotic ..." quoted the SIBO sentences (the words that name the
    case), and "his NT-proBNP before that?" only the Prior treatment section, which has no NT-proBNP."""
    conversation = "asked-of"
    knowledge_bot.ask("SIBO treated with rotating antibiotics after prokinetics failed", conversation)
    knowledge_bot.ask("riociguat after sildenafil?", conversation)
    answer = knowledge_bot.ask("back to the SIBO man: which antibiotic did he start with?", conversation)
    assert answer.citations[0].case_id == "gi-dcssc-ata-sibo-rotating-antibiotics"
    assert "rifaximin" in " ".join(answer.citations[0].passages)
    knowledge_bot.ask("Which SSc-PAH patient had selexipag added to ambrisentan and tadalafil?", conversation)
    answer = knowledge_bot.ask("What was his NT-proBNP before that?", conversation)
    assert answer.citations[0].case_id == "pah-lcssc-aca-selexipag-escalation"
    assert "NT-proBNP 500" in " ".join(answer.citations[0].passages)


def test_a_singular_reference_naming_a_therapy_means_the_case_of_the_last_answer_that_holds_it(knowledge_bot):
    """Before: "and the one who went on fluoxetine?" was held to the last answer's lead case, which has none."""
    conversation = "the-one-who"
    first = knowledge_bot.ask("Raynaud's not controlled on nifedipine, what was tried?", conversation)
    cited = [c.case_id for c in first.citations]
    assert "vasc-lcssc-raynaud-losartan-fluoxetine-topical-nitrate" in cited[1:]
    answer = knowledge_bot.ask("and the one who went on fluoxetine?", conversation)
    assert [c.case_id for c in answer.citations] == ["vasc-lcssc-raynaud-losartan-fluoxetine-topical-nitrate"]
    assert answer.resolution.kind == "follow-up" and "holds what it names" in answer.resolution.reason
    knowledge_bot.ask("Raynaud's not controlled on nifedipine, what was tried?", conversation)
    lead = knowledge_bot.ask("and her outcome?", conversation)  # names nothing: the lead case
    assert lead.citations[0].case_id == cited[0]


def test_off_topic_mid_conversation_is_refused_as_it_would_be_alone(knowledge_bot):
    first = knowledge_bot.ask("Renal crisis not responding to ACE inhibitors: options?", "mid-off-topic")
    assert not first.refused
    for question in ("what is the capital of France?", "Who won the 2018 World Cup?"):
        answer = knowledge_bot.ask(question, "mid-off-topic")
        alone = knowledge_bot.ask(question, f"alone-{question}")
        assert answer.refused and alone.refused and answer.citations == []
        assert answer.resolution.kind == "new-topic" and not answer.gate.answer
    back = knowledge_bot.ask("What did they do after that?", "mid-off-topic")
    assert not back.refused and {c.case_id for c in back.citations} <= set(first.retrieved)


def test_a_misspelt_drug_is_understood_and_said_so(knowledge_bot):
    answer = knowledge_bot.ask("mycophenolte failure for skin", "spelling")
    assert not answer.refused
    assert "mycophenolte → mycophenolate" in answer.understood_as
    assert any("mycophenolate" in c.title.lower() or "mmf" in c.title.lower() or "skin" in c.case_id
               for c in answer.citations)


@pytest.mark.parametrize("question, failed", [
    ("RTX after CYC failure for lung", ["cyclophosphamide"]),
    ("CellCept intolerance - alternatives?", ["mycophenolate mofetil"]),
    ("Lung fibrosis keeps progressing on mycophenolate: what has been tried?", ["mycophenolate mofetil"]),
    ("SRC despite ACE inhibitors: what next?", ["ACE inhibitors"]),
    ("Has anyone been treated with rituximab?", []),
    ("Rituximab for skin in dcSSc", []),
    ("ambrisentan + tadalafil not enough for SSc-PAH, next step?", ["ambrisentan", "tadalafil"]),  # a listed pair
    ("MMF and CYC failed for the lungs", ["mycophenolate mofetil", "cyclophosphamide"]),
    ("CYC failed, then rituximab: how did it go?", ["cyclophosphamide"]),  # what came next did not fail
    ("Ofev added to MMF for progressive SSc-ILD", ["mycophenolate mofetil"]),  # what it was added to was not enough
    ("MMF didnt help her skin, what next?", ["mycophenolate mofetil"]),  # as typed at the bedside
    ("nifedipine did nothing for the Raynaud's", ["calcium-channel blockers"]),
    ("bosentan was no use", ["bosentan"]),
    ("nifedipine for Raynaud's: did nothing else help?", []),  # "nothing else" is not said of nifedipine
])
def test_the_failed_therapy_is_the_one_the_failure_is_said_of(knowledge_bot, question, failed):
    assert knowledge_bot.retriever.language.failed_therapies(question, LEXICON) == failed


def test_a_case_that_started_the_failed_therapy_is_no_companion_of_one_recording_its_failure(knowledge_bot):
    """Before: "ambrisentan + tadalafil not enough" cited the case that began upfront ambrisentan plus tadalafil
    beside the cases where they failed."""
    answer = knowledge_bot.ask("ambrisentan + tadalafil not enough for SSc-PAH, next step?", "started-failed")
    cited = [c.case_id for c in answer.citations]
    assert "pah-lcssc-aca-selexipag-escalation" in cited
    assert "pah-lcssc-aca-upfront-ambrisentan-tadalafil" not in cited


def test_every_case_that_gave_the_therapy_asked_about_is_cited_when_it_holds_the_whole_question(knowledge_bot):
    """Before: "eculizumab in SRC outcomes" cited two of the three eculizumab cases: the third was worded further
    from the question than the similarity gap allows."""
    answer = knowledge_bot.ask("eculizumab in SRC outcomes", "every-eculizumab")
    assert {"src-thomas-2015-eculizumab-after-plasmapheresis", "src-devresse-2016-eculizumab-died",
            "src-hurtado-uriarte-2018-eculizumab"} <= {c.case_id for c in answer.citations}
    answer = knowledge_bot.ask("the NEJM CD19 CAR-T series that included 4 SSc patients", "one-series")
    assert answer.citations[0].case_id == "ild-cart-mueller-2024-series"
    assert "ild-cart-merkt-2024" not in {c.case_id for c in answer.citations}  # a question it does not wholly hold


def test_a_named_failure_leads_the_ranking_with_the_cases_that_record_it(knowledge_bot):
    answer = knowledge_bot.ask("dcSSc ILD progressing on MMF, FVC dropping - what was tried next?", "failure-rank")
    lead = knowledge_bot.retriever.cases[answer.citations[0].case_id]
    assert "mycophenolate mofetil" in lead.failed_therapies, lead.id


def test_the_case_recording_most_of_the_named_failures_leads(knowledge_bot):
    """Before: a transplant case that recorded one of the four failures (and gave HSCT, which the question names)
    led; the case that failed all four and was found ineligible for HSCT was only listed."""
    answer = knowledge_bot.ask("ATA+ man, ILD worse through CYC, MMF, RTX and Ofev - was HSCT still an option?",
                               "most-failures")
    assert answer.citations[0].case_id == "ild-progressive-despite-all-ahsct-ineligible"


def test_a_therapy_placed_before_what_is_asked_is_history_not_the_therapy_asked_about(knowledge_bot):
    """"after HSCT" is the patient's history: before, the cases that gave HSCT next led "the one whose skin came
    back after HSCT" (and "yrs", "whose" weighed as the rarest words, so it was refused). Asked as the next step,
    HSCT still prefers the cases that gave it."""
    answer = knowledge_bot.ask("what happened to the one whose skin came back 4 yrs after HSCT?", "history")
    assert not answer.refused, answer.gate.reason
    assert answer.citations[0].case_id == "ild-skin-relapse-after-ahsct-mmf-restarted"
    hits = knowledge_bot.retriever.search("cyclophosphamide failed for the lungs: who went on to HSCT?")
    assert [h.records_next for h in hits if h.case.id == "seed-dcssc-ild-cyc-ahsct"] == [True]


def test_a_drug_named_as_no_case_writes_it_weighs_as_the_name_the_cases_use(knowledge_bot):
    """Before: "pred" (no case writes it) weighed as the rarest word of all and outweighed "renal crisis", so a
    heart case that gave steroids led "renal crisis with a normal BP after pred"."""
    retriever = knowledge_bot.retriever
    short = {c.label: c.weight for c in retriever.concepts("renal crisis after pred")}
    written = {c.label: c.weight for c in retriever.concepts("renal crisis after prednisone")}
    rarest = retriever.idf("pred")  # what an unseen word weighs
    assert short["pred"] <= written["prednisone"] < rarest  # as its commonest name in the cases (here "steroids")
    answer = knowledge_bot.ask("renal crisis with a normal BP after pred 30 mg", "pred")
    assert answer.citations[0].case_id == "src-dcssc-normotensive-renal-crisis"


def test_a_follow_up_on_every_case_of_the_last_answer_keeps_its_lead_unless_its_words_favour_another(
        knowledge_bot):
    """Before: "what did they do with the ACEi?" led with the other case of the answer (nearer in wording), and
    "and the outcome?" then followed that case instead of the one the conversation was about."""
    lead = "src-dcssc-renal-crisis-despite-prophylactic-ace-inhibitor"
    first = knowledge_bot.ask("SRC in an RNAP3 woman who was already on low-dose ramipril to prevent it", "keep-lead")
    assert first.citations[0].case_id == lead and len(first.citations) > 1
    again = knowledge_bot.ask("what did they do with the ACEi?", "keep-lead")
    assert again.resolution.kind == "follow-up" and again.citations[0].case_id == lead
    assert knowledge_bot.ask("and the outcome?", "keep-lead").citations[0].case_id == lead
    other = knowledge_bot.ask("which of them had the crisis set off by high-dose prednisone?", "keep-lead")
    assert other.citations[0].case_id == "src-dcssc-rnap-prednisone-trigger", other.resolution.reason


@pytest.mark.parametrize("written, canonical", [
    ("small-intestinal bacterial overgrowth", "gastrointestinal"), ("Scl70", "anti-Scl-70"),
    ("anti-Scl70", "anti-Scl-70"), ("CAR T", "CD19 CAR-T cell therapy"), ("CART cells", "CD19 CAR-T cell therapy"),
])
def test_spacing_and_hyphen_variants_name_the_same_term(written, canonical):
    assert canonical in {term.canonical for term in LEXICON.find(f"any case with {written}?")}


def test_spelling_is_corrected_only_towards_the_lexicon_and_never_for_words_the_library_uses():
    fixed, corrections = LEXICON.corrected("rituximb after cyclophosphamid for the capital", lambda w: False)
    assert fixed == "rituximab after cyclophosphamide for the capital"
    assert [(c.written, c.meant) for c in corrections] == [("rituximb", "rituximab"),
                                                           ("cyclophosphamid", "cyclophosphamide")]
    kept, none = LEXICON.corrected("rituximb", lambda w: True)
    assert kept == "rituximb" and none == []
    # A lexicon word cut to its stem looks known (the library is stored stemmed) but the lexicon would miss it
    assert LEXICON.corrected("cyclophosphamid", lambda w: True)[0] == "cyclophosphamide"
    assert LEXICON.corrected("kidneys and lungs", lambda w: True) == ("kidneys and lungs", [])
