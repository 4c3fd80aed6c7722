"""The search use case: vector, keyword and hybrid search, filters, and the indexing pipeline.

Search quality is checked with the real all-MiniLM-L6-v2 on a small corpus of realistic prompts;
the pipeline's bookkeeping (what gets embedded, resuming) with a counting wrapper around the
deterministic hashing embedder, registered as its own model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import ConfigError, InvalidInput, NotFound
from autoforge_data.services import prompts as svc
from autoforge_data.services.search import (
    SearchContext,
    fts_query,
    index_prompts,
    query_terms,
    reindex,
    search,
)
from autoforge_data.vector.base import Filter, Match
from autoforge_data.vector.embedders import FloatArray, HashEmbedder, Metric, MiniLMEmbedder
from autoforge_data.vector.mirror import stale_count
from autoforge_data.vector.store import activate_model, get_model, register_model
from conftest import settings_for, unique_email

# (title, content, status, owner index, created year, metadata)
CORPUS: list[tuple[str, str, str, int, int, dict[str, str]]] = [
    (
        "Summarize a long article",
        (
            "Read the article below and write a five-bullet summary of its key points for a"
            " busy executive."
        ),
        "active",
        0,
        2024,
        {"lang": "en", "team": "content"},
    ),
    (
        "Translate to German",
        (
            "Translate the following customer email into formal German, keeping names and "
            "product codes unchanged."
        ),
        "active",
        0,
        2024,
        {"lang": "de", "team": "support"},
    ),
    (
        "Code review for Python",
        (
            "Review this Python pull request for bugs, unclear names, missing tests and "
            "performance problems; list issues by severity."
        ),
        "active",
        1,
        2024,
        {"lang": "en", "team": "eng"},
    ),
    (
        "SQL query optimizer",
        (
            "Given this slow PostgreSQL query and its EXPLAIN ANALYZE output, suggest "
            "indexes and a rewritten query."
        ),
        "active",
        1,
        2024,
        {"lang": "en", "team": "eng"},
    ),
    (
        "Marketing email for a product launch",
        (
            "Write a short, upbeat launch email announcing our new running shoe to existing"
            " subscribers, with one call to action."
        ),
        "active",
        2,
        2024,
        {"lang": "en", "team": "marketing"},
    ),
    (
        "Customer support apology",
        (
            "Draft a sincere apology to a customer whose order arrived late and damaged, "
            "offering a refund or replacement."
        ),
        "active",
        0,
        2024,
        {"lang": "en", "team": "support"},
    ),
    (
        "Job description writer",
        (
            "Write a job posting for a senior backend engineer: responsibilities, "
            "requirements, benefits, inclusive language."
        ),
        "draft",
        2,
        2024,
        {"lang": "en", "team": "hr"},
    ),
    (
        "Unit test generator",
        (
            "Generate pytest unit tests for the function below, covering edge cases, "
            "invalid input and error paths."
        ),
        "active",
        1,
        2024,
        {"lang": "en", "team": "eng"},
    ),
    (
        "Recipe from leftovers",
        (
            "Suggest a dinner recipe using only these leftover ingredients from the fridge,"
            " with step-by-step instructions."
        ),
        "draft",
        2,
        2024,
        {"lang": "en", "team": "fun"},
    ),
    (
        "Meeting notes to action items",
        (
            "Turn these raw meeting notes into a list of action items with an owner and a "
            "due date for each."
        ),
        "active",
        0,
        2024,
        {"lang": "en", "team": "ops"},
    ),
    (
        "Regex builder",
        (
            "Write a regular expression that validates ISO-8601 dates and explain each part"
            " of the pattern."
        ),
        "active",
        1,
        2024,
        {"lang": "en", "team": "eng"},
    ),
    (
        "Legal contract risk scan",
        (
            "Identify clauses in this contract that create liability, auto-renewal or "
            "termination risks for the buyer."
        ),
        "archived",
        0,
        2024,
        {"lang": "en", "team": "legal"},
    ),
    (
        "Kubernetes CrashLoopBackOff triage",
        (
            "A pod is stuck in CrashLoopBackOff. Walk through kubectl commands to find the "
            "cause: logs, events, probes, resource limits."
        ),
        "active",
        1,
        2024,
        {"lang": "en", "team": "sre"},
    ),
    (
        "Blog post outline",
        (
            "Create an outline for a technical blog post about migrating a monolith to "
            "microservices, with section headings."
        ),
        "active",
        2,
        2024,
        {"lang": "en", "team": "content"},
    ),
    (
        "Sentiment classifier",
        (
            "Classify the sentiment of each product review as positive, negative or neutral"
            " and give a one-line reason."
        ),
        "active",
        0,
        2024,
        {"lang": "en", "team": "data"},
    ),
    (
        "Interview questions",
        (
            "Prepare ten behavioural interview questions to assess teamwork and conflict "
            "resolution in candidates."
        ),
        "draft",
        2,
        2024,
        {"lang": "en", "team": "hr"},
    ),
    (
        "Explain like I'm five",
        ("Explain the concept below to a five-year-old child using a simple everyday analogy."),
        "active",
        0,
        2024,
        {"lang": "en", "team": "content"},
    ),
    (
        "Git commit message",
        (
            "Write a concise conventional-commit message for this diff: type, scope and an "
            "imperative summary line."
        ),
        "active",
        1,
        2024,
        {"lang": "en", "team": "eng"},
    ),
    (
        "Social media captions",
        ("Write three Instagram captions with hashtags for a photo of our new coffee blend."),
        "archived",
        2,
        2024,
        {"lang": "en", "team": "marketing"},
    ),
    (
        "Data cleaning plan",
        (
            "Propose steps to clean this messy CSV dataset: missing values, duplicates, "
            "inconsistent date formats, outliers."
        ),
        "active",
        0,
        2024,
        {"lang": "en", "team": "data"},
    ),
    (
        "French cover letter",
        (
            "Rédige une lettre de motivation en français pour un poste de chef de projet, "
            "ton professionnel."
        ),
        "active",
        2,
        2025,
        {"lang": "fr", "team": "hr"},
    ),
    (
        "Security threat model",
        (
            "Build a STRIDE threat model for this login and password-reset flow and list "
            "mitigations."
        ),
        "active",
        1,
        2025,
        {"lang": "en", "team": "security"},
    ),
    (
        "Travel itinerary",
        (
            "Plan a three-day itinerary in Lisbon for a couple who like food markets, "
            "museums and sunset viewpoints."
        ),
        "draft",
        2,
        2025,
        {"lang": "en", "team": "fun"},
    ),
    (
        "Docstring writer",
        (
            "Write Google-style docstrings for every function in this module, documenting "
            "arguments, returns and raises."
        ),
        "active",
        1,
        2025,
        {"lang": "en", "team": "eng"},
    ),
    (
        "Product description",
        (
            "Write an SEO-friendly product description for a stainless steel water bottle "
            "that keeps drinks cold for 24 hours."
        ),
        "active",
        2,
        2025,
        {"lang": "en", "team": "marketing"},
    ),
    (
        "Bug report template",
        (
            "Rewrite this vague bug report into steps to reproduce, expected result, actual"
            " result and environment."
        ),
        "active",
        0,
        2025,
        {"lang": "en", "team": "eng"},
    ),
    (
        "Math tutor",
        (
            "Solve this algebra word problem step by step and explain the reasoning a "
            "student should follow."
        ),
        "active",
        0,
        2025,
        {"lang": "en", "team": "edu"},
    ),
    (
        "Incident postmortem",
        (
            "Write a blameless postmortem for last night's database outage: timeline, root "
            "cause, impact, follow-ups."
        ),
        "active",
        1,
        2025,
        {"lang": "en", "team": "sre"},
    ),
    (
        "Spanish grammar check",
        (
            "Corrige la gramática y la ortografía del siguiente texto en español sin "
            "cambiar su significado."
        ),
        "active",
        2,
        2025,
        {"lang": "es", "team": "content"},
    ),
    (
        "Naming brainstorm",
        ("Brainstorm twenty short, memorable names for a budgeting app aimed at students."),
        "draft",
        2,
        2025,
        {"lang": "en", "team": "marketing"},
    ),
    (
        "API design review",
        (
            "Review this REST API design for consistent resource naming, pagination, error "
            "format and versioning."
        ),
        "active",
        1,
        2025,
        {"lang": "en", "team": "eng"},
    ),
    (
        "Poem generator",
        "Write a haiku about autumn rain falling on a quiet city street.",
        "active",
        0,
        2025,
        {"lang": "en", "team": "fun"},
    ),
    (
        "Shell one-liner",
        ("Give a bash one-liner that finds the ten largest files under the current directory."),
        "active",
        1,
        2025,
        {"lang": "en", "team": "eng"},
    ),
    (
        "Negotiation coach",
        ("Role-play a salary negotiation and coach me on how to counter a low offer politely."),
        "archived",
        0,
        2025,
        {"lang": "en", "team": "hr"},
    ),
    (
        "Dockerfile hardening",
        (
            "Harden this Dockerfile: smaller base image, non-root user, pinned versions, "
            "multi-stage build."
        ),
        "active",
        1,
        2025,
        {"lang": "en", "team": "security"},
    ),
    (
        "Quiz maker",
        (
            "Create a ten-question multiple-choice quiz about the French Revolution with an"
            " answer key."
        ),
        "active",
        0,
        2025,
        {"lang": "en", "team": "edu"},
    ),
    (
        "Newsletter digest",
        (
            "Condense this week's company updates into a friendly internal newsletter of "
            "under 300 words."
        ),
        "active",
        2,
        2025,
        {"lang": "en", "team": "content"},
    ),
    (
        "Accessibility audit",
        (
            "Audit this web page markup for accessibility problems: alt text, contrast, "
            "labels, keyboard navigation."
        ),
        "active",
        1,
        2025,
        {"lang": "en", "team": "eng"},
    ),
    (
        "Fitness plan",
        ("Design a four-week beginner strength training plan with three sessions per week."),
        "draft",
        2,
        2025,
        {"lang": "en", "team": "fun"},
    ),
    (
        "Chart explanation",
        (
            "Describe the trend shown in this sales chart and point out anomalies worth "
            "investigating."
        ),
        "active",
        0,
        2025,
        {"lang": "en", "team": "data"},
    ),
]

# (paraphrased query, title of the prompt it must find in the top 3)
PARAPHRASES = [
    ("condense a lengthy piece of writing into its main takeaways", "Summarize a long article"),
    (
        "my container keeps restarting and failing on the cluster",
        "Kubernetes CrashLoopBackOff triage",
    ),
    ("make my database request run faster", "SQL query optimizer"),
    ("say sorry to a client whose package showed up broken", "Customer support apology"),
    ("write automated tests for this code", "Unit test generator"),
    ("what went wrong during the outage and how do we prevent it", "Incident postmortem"),
]


@dataclass
class Corpus:
    """The corpus database, its search context, and prompt ids by title."""

    db: Database
    ctx: SearchContext
    ids: dict[str, str]
    owners: list[str]


def write_corpus(db: Database) -> tuple[dict[str, str], list[str]]:
    """Create the corpus prompts (owners, statuses, created years, metadata)."""
    owners = [svc.create_user(db, unique_email(), f"owner{i}").id for i in range(3)]
    ids = {}
    for title, content, status, owner, _, meta in CORPUS:
        ids[title] = svc.create_prompt(
            db, owners[owner], title, content, status=status, metadata=meta
        ).id
    with UnitOfWork(db, write=True) as uow:  # created times: 2024 or 2025, in corpus order
        uow.executemany(
            "UPDATE prompts SET created_at = ? WHERE id = ?",
            [
                (f"{year}-03-{i % 28 + 1:02d}T10:00:00.000Z", ids[title])
                for i, (title, _, _, _, year, _) in enumerate(CORPUS)
            ],
        )
        uow.commit()
    return ids, owners


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    """The real model, loaded once for the module."""
    return MiniLMEmbedder(batch_size=32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, minilm: MiniLMEmbedder) -> Iterator[Corpus]:
    """The corpus, embedded with MiniLM through the pipeline, and a search context over it."""
    tmp = tmp_path_factory.mktemp("search")
    db = Database(settings_for("embedded", tmp))
    migrate.upgrade(db)
    ids, owners = write_corpus(db)
    report = reindex(db, embedder=minilm)
    assert report.embedded == len(CORPUS)
    ctx = SearchContext.open(db, data_dir=tmp / "idx", embedder=minilm)
    try:
        yield Corpus(db, ctx, ids, owners)
    finally:
        ctx.close()
        db.close()


def titles(matches: list[Match], ids: dict[str, str]) -> list[str]:
    """Titles of matches, in order."""
    by_id = {pid: title for title, pid in ids.items()}
    return [by_id[m.prompt_id] for m in matches]


# --- quality --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
@pytest.mark.parametrize(("query", "title"), PARAPHRASES)
def test_paraphrase_finds_prompt_in_top3(corpus: Corpus, mode: str, query: str, title: str) -> None:
    """A paraphrase sharing few words with its prompt finds it among the first three."""
    found = titles(search(corpus.ctx, query, k=3, mode=mode), corpus.ids)
    assert title in found


def test_vector_results_are_typed_and_ordered(corpus: Corpus) -> None:
    """Matches carry the prompt id, its current version, a descending score and a snippet."""
    matches = search(corpus.ctx, "translate an email into German", k=5, mode="vector")
    assert len(matches) == 5
    first = matches[0]
    assert first.prompt_id == corpus.ids["Translate to German"]
    assert first.version == 1
    assert first.snippet.startswith("Translate the following customer email")
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[0] <= 1.0


def test_keyword_finds_exact_words(corpus: Corpus) -> None:
    """Keyword mode finds a rare exact word, with an FTS snippet around it."""
    matches = search(corpus.ctx, "kubectl", mode="keyword")
    assert titles(matches, corpus.ids) == ["Kubernetes CrashLoopBackOff triage"]
    assert "**kubectl**" in matches[0].snippet
    stemmed = search(corpus.ctx, "docstring", mode="keyword")  # porter: docstrings
    assert titles(stemmed, corpus.ids)[0] == "Docstring writer"


HOSTILE = [
    '"',
    '""',
    "*",
    "AND OR NOT",
    "-x",
    "'; DROP TABLE prompts; --",
    "NEAR(kubectl pods, 2)",
    "title:kubectl",
    "^kubectl",
    "kube*",
    "(((",
    "a" * 1500,
    "ünïcödé ✓ 日本語",
    "\\",
    "{content}: AND",
]


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_keyword_input_never_fails(corpus: Corpus, mode: str, text: str) -> None:
    """Quotes, operators, '*', '-', SQL fragments and column filters are plain words or ignored."""
    matches = search(corpus.ctx, text, k=5, mode=mode)
    assert all(isinstance(m, Match) for m in matches)
    with UnitOfWork(corpus.db) as uow:
        assert uow.fetchone("SELECT count(*) FROM prompts")[0] >= len(CORPUS)


def test_keyword_operators_are_words(corpus: Corpus) -> None:
    """'kubectl AND nothing' matches like the words themselves: AND is not an operator."""
    matches = search(corpus.ctx, "NOT kubectl", mode="keyword")
    assert corpus.ids["Kubernetes CrashLoopBackOff triage"] in [m.prompt_id for m in matches]


def test_fts_query_quotes_every_word() -> None:
    """Every word is quoted and OR-ed, stopwords dropped unless nothing else is left."""
    assert fts_query(query_terms('kube* "AND" -x')) == '"kube" OR "x"'
    assert fts_query(query_terms("AND OR NOT")) == '"and" OR "or" OR "not"'
    assert fts_query(query_terms('"*^-()')) is None


def test_hybrid_ranks_prompt_matching_both_first(corpus: Corpus) -> None:
    """A prompt that matches the words and the meaning ranks first in hybrid mode."""
    query = "kubectl commands for a pod in CrashLoopBackOff"
    hybrid = search(corpus.ctx, query, k=5, mode="hybrid")
    keyword = search(corpus.ctx, query, k=5, mode="keyword")
    vector = search(corpus.ctx, query, k=5, mode="vector")
    target = corpus.ids["Kubernetes CrashLoopBackOff triage"]
    assert target in [m.prompt_id for m in keyword]
    assert target in [m.prompt_id for m in vector]
    assert hybrid[0].prompt_id == target
    assert "**" in hybrid[0].snippet  # the keyword snippet is kept


# --- filters --------------------------------------------------------------------------------------


def expected(corpus: Corpus, keep: object) -> set[str]:
    """Ids of corpus prompts for which ``keep(row)`` is true."""
    assert callable(keep)
    return {corpus.ids[row[0]] for row in CORPUS if keep(row)}


FILTERS = {
    "archived": (Filter(status=("archived",)), lambda r: r[2] == "archived"),
    "draft+archived": (Filter(status=("draft", "archived")), lambda r: r[2] != "active"),
    "2025": (
        Filter(created_from="2025-01-01T00:00:00Z", created_to="2026-01-01"),
        lambda r: r[4] == 2025,
    ),
    "meta-team": (Filter(metadata={"team": "eng"}), lambda r: r[5]["team"] == "eng"),
    "meta+status": (
        Filter(metadata={"team": "hr"}, status=("draft",)),
        lambda r: r[5]["team"] == "hr" and r[2] == "draft",
    ),
}


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
@pytest.mark.parametrize("name", list(FILTERS))
def test_filters_return_only_matching_prompts(corpus: Corpus, mode: str, name: str) -> None:
    """Status, created range and metadata filters hold in every mode; vector mode finds all."""
    flt, keep = FILTERS[name]
    want = expected(corpus, keep)
    query = "write review plan email test the a for"  # common words: keyword mode matches many
    got = {m.prompt_id for m in search(corpus.ctx, query, k=50, flt=flt, mode=mode)}
    assert got <= want
    if mode == "vector":
        assert got == want


def test_owner_filter(corpus: Corpus) -> None:
    """An owner filter returns exactly that owner's prompts."""
    owner = corpus.owners[1]
    want = expected(corpus, lambda r: r[3] == 1)
    got = search(corpus.ctx, "code", k=50, flt=Filter(owner_id=owner), mode="vector")
    assert {m.prompt_id for m in got} == want


# --- validation -----------------------------------------------------------------------------------


class CountingEmbedder:
    """Our Embedder protocol around the hashing embedder, recording every text it embeds."""

    metric: Metric = "cosine"
    normalized = True

    def __init__(self, name: str = "hash-384") -> None:
        self.inner = HashEmbedder(384)
        self.name = name
        self.dimension = 384
        self.texts: list[str] = []
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Record, then embed with the hashing embedder."""
        self.calls += 1
        self.texts += list(texts)
        return self.inner.embed(texts)


@pytest.fixture
def hashdb(tmp_path: Path) -> Iterator[tuple[Database, CountingEmbedder]]:
    """An embedded database whose active model is hash-384, with a counting embedder."""
    db = Database(settings_for("embedded", tmp_path))
    migrate.upgrade(db)
    register_model(db, "hash-384", 384)
    activate_model(db, "hash-384")
    try:
        yield db, CountingEmbedder()
    finally:
        db.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"query": "x", "vector": np.ones(384, np.float32)},
        {"query": ""},
        {"query": "   \n"},
        {"query": "x", "k": 0},
        {"query": "x", "k": 1001},
        {"query": "x", "k": 2.5},
        {"query": "x", "mode": "fuzzy"},
        {"vector": np.ones(383, np.float32)},
        {"vector": np.full(384, np.nan, np.float32)},
        {"vector": np.ones(384, np.float32), "mode": "keyword"},
        {"query": "x", "flt": Filter(created_from="last tuesday")},
        {"query": "x" * 5000},
        {"vector": ["a"] * 384},
    ],
    ids=lambda kw: ",".join(sorted(kw)) or "nothing",
)
def test_invalid_requests_fail_before_any_work(
    hashdb: tuple[Database, CountingEmbedder], tmp_path: Path, kwargs: dict[str, object]
) -> None:
    """Each malformed request is InvalidInput and embeds nothing."""
    db, embedder = hashdb
    with SearchContext.open(db, data_dir=tmp_path / "idx", embedder=embedder) as ctx:
        with pytest.raises(InvalidInput):
            search(ctx, **kwargs)  # type: ignore[arg-type]
    assert embedder.calls == 0


def test_invalid_filters_and_models(hashdb: tuple[Database, CountingEmbedder]) -> None:
    """Unknown statuses and malformed metadata keys are InvalidInput; unknown models NotFound."""
    db, embedder = hashdb
    with pytest.raises(InvalidInput):
        Filter(status=("published",))
    with pytest.raises(InvalidInput):
        Filter(metadata={"team') OR 1=1 --": "x"})
    with pytest.raises(NotFound):
        SearchContext.open(db, model="no-such-model", embedder=embedder)
    with pytest.raises(NotFound):
        reindex(db, "no-such-model", embedder=embedder)
    with pytest.raises(ConfigError):  # a 384-d model cannot be searched with 1536-d vectors
        SearchContext.open(db, embedder=HashEmbedder(1536))


def test_keyword_filter_holds_before_the_limit(
    hashdb: tuple[Database, CountingEmbedder], tmp_path: Path
) -> None:
    """60 drafts outrank the one active prompt on bm25: a status filter still finds it (the
    filter holds before the ranking's LIMIT), unfiltered keyword search ranks by words then
    bm25, and hybrid keeps FTS snippets for keyword hits it shows."""
    db, embedder = hashdb
    owner = svc.create_user(db, unique_email(), "writer").id
    drafts = [
        svc.create_prompt(db, owner, f"zebra notes {i}", "zebra zebra zebra stripes " * 3).id
        for i in range(60)
    ]
    active = svc.create_prompt(
        db, owner, "savanna log", "A long field report; one zebra was seen near the river "
        "among many other animals, birds, trees and rivers of the plain.", status="active"
    ).id
    with SearchContext.open(db, data_dir=tmp_path / "idx", embedder=embedder) as ctx:
        assert index_prompts(ctx, [*drafts, active]).embedded == 61
        only = search(ctx, "zebra", k=5, flt=Filter(status=("active",)), mode="keyword")
        assert [m.prompt_id for m in only] == [active]
        assert "**zebra**" in only[0].snippet
        every = search(ctx, "zebra stripes", k=70, mode="keyword")
        assert len(every) == 61
        assert every[-1].prompt_id == active  # one of two words: after all 60 with both
        assert all(m.score >= 2 for m in every[:60])
        assert 1 <= every[-1].score < 2
        hybrid = search(ctx, "zebra", k=3, flt=Filter(status=("active",)), mode="hybrid")
        assert hybrid[0].prompt_id == active
        assert "**zebra**" in hybrid[0].snippet


# --- indexing pipeline ----------------------------------------------------------------------------


def make_prompts(db: Database, n: int) -> list[str]:
    """n prompts with distinct texts, oldest id first."""
    owner = svc.create_user(db, unique_email(), "writer").id
    return [
        svc.create_prompt(
            db, owner, f"prompt {i}", f"distinct content number {i} about topic {i}"
        ).id
        for i in range(n)
    ]


def test_edit_reembeds_and_unchanged_embeds_nothing(
    hashdb: tuple[Database, CountingEmbedder], tmp_path: Path
) -> None:
    """Indexing embeds new and edited texts only; the edit is searchable at once, at version 2."""
    db, embedder = hashdb
    ids = make_prompts(db, 3)
    with SearchContext.open(db, data_dir=tmp_path / "idx", embedder=embedder) as ctx:
        assert index_prompts(ctx, ids).embedded == 3
        assert index_prompts(ctx, ids).unchanged == 3
        assert embedder.calls == 1
        svc.edit_prompt(db, ids[1], content="zebra giraffe savanna migration")
        report = index_prompts(ctx, ids)
        assert (report.embedded, report.unchanged) == (1, 2)
        assert embedder.texts[-1] == "prompt 1\nzebra giraffe savanna migration"
        assert embedder.calls == 2
        top = search(ctx, "zebra giraffe savanna migration", k=1, mode="vector")[0]
        assert (top.prompt_id, top.version) == (ids[1], 2)
        calls = embedder.calls  # the search embedded its query
        svc.edit_prompt(db, ids[2], content="distinct content number 2 about topic 2")
        report = index_prompts(ctx, ids)  # a new version with the same text: vector kept
        assert (report.embedded, report.reused) == (0, 1)
        assert embedder.calls == calls
        assert stale_count(db, get_model(db, "hash-384")) == 0
        with pytest.raises(NotFound):
            index_prompts(ctx, ["0" * 26])


def test_reindex_killed_halfway_resumes_without_reembedding(
    hashdb: tuple[Database, CountingEmbedder],
) -> None:
    """A reindex stopped by an error after 2 batches, then rerun, embeds every prompt once."""
    db, embedder = hashdb
    ids = make_prompts(db, 23)
    seen: list[tuple[int, int]] = []

    def crash_after_two(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        reindex(db, embedder=embedder, batch=5, progress=crash_after_two)
    assert seen == [(5, 23), (10, 23)]
    assert len(embedder.texts) == 10
    report = reindex(db, embedder=embedder, batch=5)
    assert (report.total, report.embedded, report.batches) == (13, 13, 3)
    assert len(embedder.texts) == len(set(embedder.texts)) == 23
    assert reindex(db, embedder=embedder, batch=5).embedded == 0
    assert stale_count(db, get_model(db, "hash-384")) == 0
    assert len(ids) == 23


def test_reindex_other_model_keeps_search_on_active(
    hashdb: tuple[Database, CountingEmbedder], tmp_path: Path
) -> None:
    """Backfilling a second model leaves the active model's index and results untouched."""
    db, embedder = hashdb
    make_prompts(db, 4)
    reindex(db, embedder=embedder)
    register_model(db, "hash-other", 384)
    other = CountingEmbedder("hash-other")
    with SearchContext.open(db, data_dir=tmp_path / "idx", embedder=embedder) as ctx:
        before = search(ctx, "content number 3", k=2, mode="vector")
        assert reindex(db, "hash-other", embedder=other).embedded == 4
        assert search(ctx, "content number 3", k=2, mode="vector") == before
        assert ctx.model.name == "hash-384"


def test_search_context_from_settings(tmp_path: Path) -> None:
    """from_settings opens the database and the active model's index, and closes both."""
    settings = settings_for("embedded", tmp_path)
    with Database(settings) as db:
        migrate.upgrade(db)
        register_model(db, "hash-384", 384)
        activate_model(db, "hash-384")
        make_prompts(db, 2)
        reindex(db)  # hash-384 is a known model: make_embedder builds it
    with SearchContext.from_settings(settings) as ctx:
        assert ctx.model.name == "hash-384"
        assert search(ctx, "distinct content number 1", k=1)[0].version == 1
    assert (tmp_path / "data" / "dev.index" / "hash_384" / "CURRENT").is_file()
