"""1,000 synthetic PubMed-style abstracts (plain .txt, title on the first line, no front matter).

PubMed cannot be reached from here, so the abstracts are generated from templates: distinct conditions,
interventions, populations and designs, so that a question naming one combination has one right answer."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

CONDITIONS = ["type 2 diabetes", "chronic heart failure", "asthma", "rheumatoid arthritis", "psoriasis",
              "migraine", "major depressive disorder", "chronic kidney disease", "osteoporosis", "glaucoma",
              "atrial fibrillation", "Crohn's disease", "ulcerative colitis", "multiple sclerosis", "gout",
              "hypertension", "COPD", "atopic dermatitis", "Parkinson's disease", "epilepsy",
              "obstructive sleep apnoea", "chronic hepatitis B", "sepsis", "acne vulgaris", "endometriosis"]
INTERVENTIONS = ["metformin", "empagliflozin", "dupilumab", "adalimumab", "erenumab", "sertraline",
                 "denosumab", "apixaban", "ustekinumab", "ocrelizumab", "febuxostat", "tiotropium",
                 "levodopa", "lamotrigine", "tenofovir", "isotretinoin", "dienogest", "vitamin D",
                 "aerobic exercise training", "cognitive behavioural therapy", "acupuncture", "a low-sodium diet",
                 "mindfulness training", "home telemonitoring", "intermittent fasting"]
POPULATIONS = ["older adults", "adolescents", "pregnant women", "night-shift workers", "nursing home residents",
               "military veterans", "rural primary care patients", "elite athletes"]
DESIGNS = ["randomised controlled trial", "prospective cohort study", "retrospective registry analysis",
           "crossover trial", "pragmatic cluster trial"]
OUTCOMES = ["symptom scores", "hospital admissions", "quality of life", "all-cause mortality", "treatment adherence",
            "biomarker levels", "functional capacity", "relapse rate"]


def write_abstracts(folder: Path, n: int = 1000, seed: int = 7) -> list[dict]:
    """Write `n` abstracts into `folder`; return their facts (id, condition, intervention, population, design)."""
    rng = random.Random(seed)
    combos = list(itertools.product(CONDITIONS, INTERVENTIONS, POPULATIONS))
    rng.shuffle(combos)
    folder.mkdir(parents=True, exist_ok=True)
    facts = []
    for number, (condition, intervention, population) in enumerate(combos[:n]):
        design, outcome = rng.choice(DESIGNS), rng.choice(OUTCOMES)
        size, change, p = rng.randint(40, 4000), rng.randint(5, 60), rng.choice(["0.001", "0.01", "0.03", "0.2"])
        pmid = f"pmid-{30000000 + number * 37}"
        title = f"{intervention.capitalize()} for {condition} in {population}: a {design}"
        text = (f"{title}\n\nBackground: The effect of {intervention} on {outcome} in {population} with {condition} "
                f"is uncertain.\nMethods: In this {design} we enrolled {size} {population} with {condition} and "
                f"compared {intervention} with usual care over {rng.randint(3, 36)} months.\nResults: {outcome} "
                f"changed by {change}% with {intervention} (p={p}). Adverse events were "
                f"{rng.choice(['rare', 'mild', 'similar between groups', 'more frequent with treatment'])}.\n"
                f"Conclusions: In {population} with {condition}, {intervention} "
                f"{'improved' if p != '0.2' else 'did not clearly change'} {outcome}.\n")
        (folder / f"{pmid}.txt").write_text(text, encoding="utf-8")
        facts.append({"id": pmid, "condition": condition, "intervention": intervention,
                      "population": population, "design": design, "outcome": outcome})
    return facts
