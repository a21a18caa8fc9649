"""All settings in one place: command-line flags > CASEBOT_* environment variables > defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
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
    chroma_timeout: float = Field(120.0, gt=0, description="Seconds one call to the Chroma server may take before "
                                  "the question is answered with 'not reachable' (a hung server holds nothing)")
    knowledge: Path = Field(Path("knowledge"), description="Case library folder (cases/ and lexicon.yaml)")
    lexicon: Path | None = Field(None, description="Lexicon file; default: the knowledge folder's, else the bundled one")
    llm: str = Field("extractive", description="Answer backend: extractive | llamacpp:PATH.gguf | openai:MODEL | ollama:MODEL")
    collection: str = "casebot-cases"
    prompts_dir: Path = PROJECT_ROOT / "prompts"

    # Chunking: recorded in the index; an index built with other values is refused, not mixed.
    chunk_size: int = 1000
    chunk_overlap: int = 100
    max_case_chars: int = Field(200_000, ge=1, description="Most characters of text in one case file (a case "
                                "report has a few thousand); a larger file is refused by name before embedding")

    # Retrieval
    candidates: int = Field(40, description="Chunks taken from each of dense and BM25 before fusion")
    rrf_k: int = Field(60, description="Reciprocal rank fusion constant, 1/(k + rank)")
    retrieval: Literal["hybrid", "dense", "bm25"] = Field("hybrid", description="Rankings fused (bench compares them)")
    max_upload_mb: int = Field(10, ge=1, description="Largest file the web app accepts for upload, in MB: a case "
                               "file (even a PDF) is far smaller; without a login anyone who reaches the page "
                               "can upload")
    max_cases: int = Field(3, description="At most this many cases are cited in one answer")
    sentence_budget: int = Field(6, description="Quoted sentences per answer, shared among its cases (2 at least each)")
    table_cases_per_cell: int = Field(3, ge=1, description="Case markers per cell of a pathway table in an answer "
                                      "(then \"+N more\"; the counts are complete)")

    # Patients like mine (bot/similar.py): a case's score is the sum of these weights times its agreement with
    # the vignette's profile (share of the failed therapies, organs, antibodies and measures it holds; subtype
    # 0/1; text similarity rescaled 0..1 over the library), minus a conflict per finding written as absent.
    similar_weight_failed: float = Field(3.0, description="Same failed (or not tolerated) therapy")
    similar_weight_tried: float = Field(1.0, description="A therapy the vignette names without saying how it went, "
                                        "recorded as failed by the case")
    similar_weight_organs: float = Field(2.0, description="Same organs involved")
    similar_weight_antibody: float = Field(1.0, description="Same antibody")
    similar_weight_subtype: float = Field(1.0, description="Same subtype")
    similar_weight_measures: float = Field(0.5, description="Measures (FVC %, mRSS, mPAP...) in the same band")
    similar_weight_conflict: float = Field(1.5, description="Subtracted per antibody or finding written as absent "
                                           "(ACA-, no PH) that the case has")
    similar_weight_text: float = Field(1.5, description="MiniLM similarity of the vignette to the case's text")
    similar_k: int = Field(5, ge=1, description="Similar cases shown")

    # Relevance gate (bot/gate.py): fitted on each library itself; these only shape its fit and the answer.
    gate_calibration_questions: int = Field(400, ge=10, description="Questions written from the library's cases "
                                            "to fit the gate on (a sample of cases in a larger library)")
    everyday_word_share: float = Field(0.03, gt=0, le=1, description="A question's word that no case uses but "
                                       "that is everyday English (held whole by the embedding model's vocabulary) "
                                       "weighs as a word in this share of the library's chunks: the middle of the "
                                       "calibration's everyday band (gate_calibration.yaml padding.chunk_share)")
    spelling_cutoff: float = Field(0.88, gt=0, le=1, description="A word the library does not know is read as "
                                   "its closest library word at or above this difflib ratio ('toclizumab' -> "
                                   "'tocilizumab' 0.95); 0.8 read 'insurance' as 'injury' and 'bread' as 'breadth'")
    gate_case_ratio: float = Field(0.70, description="A further case is cited when its concept coverage is at "
                                   "least this share of the lead case's")
    lead_coverage_tolerance: float = Field(0.2, ge=0, le=1, description="Cases recording the failure asked about and "
                                           "within this much of the best concept coverage are led by retrieval rank (shipped evals: 0 -> "
                                           "355/370 turns right, 0.1 -> 356, 0.2 -> 358, 0.3 -> 357)")
    gate_similarity_gap: float = Field(0.15, description="... and its similarity at most this far below the lead's")

    # Generation backends (bot/generation.py) and the citation check (bot/verification.py)
    llm_timeout: float = Field(60.0, gt=0, description="Seconds one model call may take before the extractive answer is shown")
    llm_max_tokens: int = Field(400, gt=0, description="Most tokens the model may write for one answer")
    llm_temperature: float = 0.0
    llm_context: int = Field(4096, description="Context window of an in-process llama.cpp model, in tokens")
    llm_threads: int | None = Field(None, description="CPU threads for llama.cpp generation; default: llama-cpp-python's")
    llm_passages: int = Field(3, description="Passages per chosen case given to the model, besides its title and summary")
    llm_max_sentences: int = Field(6, description="Sentences the prompt asks the model to stay within")
    openai_base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY"),
        description="From OPENAI_API_KEY; local servers need none (a placeholder is sent)")
    ollama_url: str = Field("http://127.0.0.1:11434", description="Ollama server")
    # Calibrated in tests/test_generation.py: paraphrases of a case's sentences score >= 0.62 against it,
    # claims taken from other cases <= 0.44.
    verify_min_similarity: float = Field(0.5, description="Cosine similarity a sentence needs to a passage it cites")
    verifier: Literal["claims", "llm"] = Field("claims", description="Citation check: claims (the deterministic "
                                               "claim check, bot/claims.py) or llm (that check, then the configured "
                                               "model asked per sentence whether its cited passages support it)")

    host: str = "127.0.0.1"
    port: int = 7860
    auth: str | None = Field(None, description="Web app login as user:password (CASEBOT_AUTH); none by default")
    web_concurrency: int = Field(4, ge=1, description="Questions the web app answers at once; more wait in a queue")
    database_url: str | None = Field(None, description="Feedback and audit log in one shared database for all "
                                     "replicas, e.g. postgresql://user:password@host:5432/casebot; default: SQLite "
                                     "beside the index")
    audit: Literal["off", "ids", "full"] = Field("off", description="Audit log of the answers the web app and the "
                                                 "HTTP API give: off, ids (question, cited case ids, backend, "
                                                 "refused; no answer text) or full (with the answer text)")
    api_key: SecretStr | None = Field(None, description="Bearer key of the HTTP API (/v1, /api/ask) of `casebot "
                                      "serve` (CASEBOT_API_KEY): required when set, and the API is closed without "
                                      "one when CASEBOT_AUTH is on")

    @property
    def lexicon_path(self) -> Path:
        if self.lexicon:
            return self.lexicon
        own = self.knowledge / "lexicon.yaml"
        return own if own.exists() else PROJECT_ROOT / "knowledge" / "lexicon.yaml"

    @property
    def question_language_path(self) -> Path:
        """How questions refer back and name failures (knowledge/question_language.yaml), the library's own first."""
        own = self.knowledge / "question_language.yaml"
        return own if own.exists() else PROJECT_ROOT / "knowledge" / "question_language.yaml"

    @property
    def gate_calibration_path(self) -> Path:
        """Templates and the off-topic bank the gate is calibrated with (knowledge/gate_calibration.yaml)."""
        own = self.knowledge / "gate_calibration.yaml"
        return own if own.exists() else PROJECT_ROOT / "knowledge" / "gate_calibration.yaml"

    @property
    def vignette_language_path(self) -> Path:
        """How vignettes write measures, age and sex (knowledge/vignette_language.yaml), the library's own first."""
        own = self.knowledge / "vignette_language.yaml"
        return own if own.exists() else PROJECT_ROOT / "knowledge" / "vignette_language.yaml"

    @property
    def cases_dir(self) -> Path:
        return self.knowledge / "cases"

    @property
    def credentials(self) -> tuple[str, str] | None:
        """The web login from `auth`, checked here so a malformed value stops the server with a clear
        message (which never repeats the password)."""
        if self.auth is None:
            return None
        user, sep, password = self.auth.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError("CASEBOT_AUTH must be user:password, with a non-empty user and password")
        return user.strip(), password


def load_settings(**flags: object) -> Settings:
    """Settings with the given flags applied; flags left as None fall through to env/defaults."""
    return Settings(**{key: value for key, value in flags.items() if value is not None})
