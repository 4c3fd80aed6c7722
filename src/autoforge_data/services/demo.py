"""Demo data for `afdb init --demo` and `make run`: a few users, prompts, versions, evaluations."""

from __future__ import annotations

from autoforge_data.db.engine import Database
from autoforge_data.db.repositories import Users
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.services import prompts as svc

_USERS = [
    ("ada@example.com", "ada"),
    ("grace@example.com", "grace"),
    ("linus@example.com", "linus"),
]
_PROMPTS = [
    (
        "Summarise a support ticket",
        "Summarise the customer's issue in two sentences, then list "
        "the product areas involved and the urgency (low, medium, high).",
        "active",
    ),
    (
        "SQL query reviewer",
        "You review SQL queries. Point out missing indexes, N+1 patterns and "
        "unsafe string concatenation. Answer with a numbered list.",
        "active",
    ),
    (
        "Release notes writer",
        "Turn this list of merged pull requests into release notes grouped "
        "by Features, Fixes and Internal changes. Keep each line under 100 characters.",
        "active",
    ),
    (
        "Translate to French",
        "Translate the following text into French. Keep technical terms in "
        "English and preserve Markdown formatting.",
        "draft",
    ),
    (
        "Code explainer",
        "Explain what this function does to a junior developer, step by step, "
        "and mention one edge case it does not handle.",
        "active",
    ),
    (
        "Meeting minutes",
        "From this transcript, write minutes with decisions, action items "
        "(owner, due date) and open questions.",
        "active",
    ),
    (
        "Unit test generator",
        "Write pytest unit tests for the given Python function. Cover the "
        "happy path, boundaries and one failure mode.",
        "draft",
    ),
    (
        "Email tone fixer",
        "Rewrite this email so it is polite, direct and under 120 words.",
        "archived",
    ),
    (
        "Vector search tuning advisor",
        "Given recall and latency numbers for an ANN index, "
        "suggest parameter changes (ef, M, search list size) and explain the trade-off.",
        "active",
    ),
    (
        "Incident postmortem",
        "Draft a blameless postmortem: summary, impact, timeline, root "
        "cause, what went well, action items.",
        "active",
    ),
]
_EDITS = {
    0: "Summarise the customer's issue in two sentences. List the product areas involved, "
    "the urgency (low, medium, high) and the customer's sentiment.",
    2: "Turn these merged pull requests into release notes grouped by Features, Fixes and "
    "Internal changes; link each line to its pull request.",
}


def load_demo(db: Database) -> int:
    """Load the demo data once; returns the number of prompts created (0 if already there)."""
    with UnitOfWork(db) as uow:
        if Users(uow).by_email(_USERS[0][0]) is not None:
            return 0
    users = [svc.create_user(db, email, name) for email, name in _USERS]
    created = 0
    for i, (title, content, status) in enumerate(_PROMPTS):
        owner = users[i % len(users)]
        prompt = svc.create_prompt(
            db,
            owner.id,
            title,
            content,
            status=status,
            metadata={"demo": True, "topic": title.split()[0].lower()},
        )
        created += 1
        if i in _EDITS:
            prompt = svc.edit_prompt(db, prompt.id, content=_EDITS[i])
        svc.add_evaluation(
            db,
            prompt.id,
            prompt.current_version,
            0.6 + 0.03 * i,
            metrics={"judge": "demo", "samples": 20},
        )
    return created
