"""All settings in one place: command-line flags > CASEBOT_* environment variables > defaults."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Offline at run time: no model hub, no telemetry. Set before any library reads them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Runtime settings. Flags are passed as keyword arguments, which win over the environment."""

    model_config = SettingsConfigDict(env_prefix="CASEBOT_", extra="ignore")

    db: Path = Field(Path(".casebot/chroma"), description="Embedded Chroma folder (ignored with chroma_url)")
    chroma_url: str | None = Field(None, description="Chroma server, e.g. http://127.0.0.1:8000")
    knowledge: Path = Field(Path("knowledge"), description="Case library folder (cases/ and lexicon.yaml)")
    lexicon: Path | None = Field(None, description="Lexicon file; default: the knowledge folder's, else the bundled one")
    llm: str = Field("extractive", description="Answer backend")
    collection: str = "casebot-cases"
    prompts_dir: Path = PROJECT_ROOT / "prompts"

    # Chunking: recorded in the index; an index built with other values is refused, not mixed.
    chunk_size: int = 1000
    chunk_overlap: int = 100

    # Retrieval
    candidates: int = Field(40, description="Chunks taken from each of dense and BM25 before fusion")
    rrf_k: int = Field(60, description="Reciprocal rank fusion constant, 1/(k + rank)")
    max_cases: int = Field(3, description="At most this many cases are cited in one answer")
    sentence_budget: int = Field(6, description="Quoted sentences per answer, shared among its cases (2 at least each)")

    # Relevance gate, calibrated by bench/calibrate_gate.py on the shipped eval set (see README).
    gate_min_similarity: float = 0.25
    gate_min_coverage: float = 0.42
    gate_case_ratio: float = 0.70

    host: str = "127.0.0.1"
    port: int = 7860

    @property
    def lexicon_path(self) -> Path:
        if self.lexicon:
            return self.lexicon
        own = self.knowledge / "lexicon.yaml"
        return own if own.exists() else PROJECT_ROOT / "knowledge" / "lexicon.yaml"

    @property
    def cases_dir(self) -> Path:
        return self.knowledge / "cases"


def load_settings(**flags: object) -> Settings:
    """Settings with the given flags applied; flags left as None fall through to env/defaults."""
    return Settings(**{key: value for key, value in flags.items() if value is not None})
