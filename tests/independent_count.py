"""Count passing eval tests without `casebot eval`: a cross-check of its numbers.

    python tests/independent_count.py FILE.yaml... --db PATH

Reads the YAML with PyYAML alone, asks every question through `casebot chat --jsonl` (one conversation per
test, named by its id) and every vignette through `casebot similar`, checks the SPEC section 6 expectations
with its own few lines, and prints
{"total", "passed", "failed", "failed_ids"} as JSON. It deliberately imports nothing from bot/.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def turns_of(test: dict) -> list[dict]:
    """The questions of a test; a turn without its own filters uses the test's."""
    if not test.get("turns"):
        return [test]
    return [{**turn, "filters": turn.get("filters") or test.get("filters") or {}} for turn in test["turns"]]


def turn_passes(expected: dict, answer: dict) -> bool:
    cited = {citation["case_id"] for citation in answer["citations"]}
    text = answer["answer"].lower()
    return (all(case in cited for case in expected.get("expect_cases", []))
            and (not expected.get("expect_any") or any(case in cited for case in expected["expect_any"]))
            and not any(case in cited for case in expected.get("forbid_cases", []))
            and all(term.lower() in text for term in expected.get("must_include", []))
            and not any(term.lower() in text for term in expected.get("must_not_include", []))
            and answer["refused"] == expected.get("expect_refusal", False)
            and (expected.get("max_latency_ms") is None
                 or answer["timings_ms"]["total"] <= expected["max_latency_ms"]))


def vignette_passes(test: dict, db: str) -> bool:
    """A `vignette:` test through `casebot similar` (exit 2: refused): its expected cases among the k cases
    listed (3 unless it gives k), its words in what is printed."""
    k = test.get("k") or 3
    run = subprocess.run([sys.executable, "-m", "bot", "similar", test["vignette"], "--k", str(k), "--db", db],
                         capture_output=True, text=True, cwd=PROJECT_ROOT)
    if run.returncode not in (0, 2):
        raise SystemExit(f"casebot similar failed for {test['id']}: {run.stderr}")
    listed = set(re.findall(r"^\d+\. \[([a-z0-9-]+)\]", run.stdout, re.MULTILINE))
    text = run.stdout.lower()
    return (all(case in listed for case in test.get("expect_cases", []))
            and (not test.get("expect_any") or any(case in listed for case in test["expect_any"]))
            and not any(case in listed for case in test.get("forbid_cases", []))
            and all(term.lower() in text for term in test.get("must_include", []))
            and not any(term.lower() in text for term in test.get("must_not_include", []))
            and (run.returncode == 2) == test.get("expect_refusal", False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    tests = [test for path in args.files for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]]
    vignettes = [test for test in tests if test.get("vignette")]
    tests_asked = [test for test in tests if not test.get("vignette")]
    steps = [(test["id"], turn) for test in tests_asked for turn in turns_of(test)]
    lines = [json.dumps({"question": turn["question"], "conversation": test_id, "filters": turn.get("filters") or {}})
             for test_id, turn in steps]
    chat = subprocess.run([sys.executable, "-m", "bot", "chat", "--jsonl", "--db", args.db],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=PROJECT_ROOT)
    if chat.returncode != 0:
        print(chat.stderr, file=sys.stderr)
        return 2
    answers = [json.loads(line) for line in chat.stdout.splitlines() if line.strip()]
    if len(answers) != len(steps):
        print(f"{len(steps)} questions but {len(answers)} answers", file=sys.stderr)
        return 2
    failed = {test_id for (test_id, turn), answer in zip(steps, answers) if not turn_passes(turn, answer)}
    failed |= {test["id"] for test in vignettes if not vignette_passes(test, args.db)}
    failed_ids = [test["id"] for test in tests if test["id"] in failed]
    print(json.dumps({"total": len(tests), "passed": len(tests) - len(failed_ids), "failed": len(failed_ids),
                      "failed_ids": failed_ids}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
