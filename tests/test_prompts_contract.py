"""The use-case contract, run against all three modes: embedded, remote sqld, embedded replica."""

from __future__ import annotations

import math

import pytest

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import Conflict, InvalidInput, NotFound
from autoforge_data.ids import new_id
from autoforge_data.services import prompts as svc
from conftest import unique_email


@pytest.fixture
def owner(db: Database) -> str:
    """A fresh user id."""
    return svc.create_user(db, unique_email(), "owner").id


def test_user_round_trip(db: Database) -> None:
    """A created user reads back equal; emails are stored lower-case."""
    email = unique_email()
    user = svc.create_user(db, email.upper(), "ada", metadata={"team": "core"})
    got = svc.get_user(db, user.id)
    assert got == user
    assert got.email == email
    assert got.metadata == {"team": "core"}


def test_duplicate_email_is_conflict(db: Database) -> None:
    """A second user with the same email is a Conflict, and the first stays."""
    email = unique_email()
    first = svc.create_user(db, email, "a")
    with pytest.raises(Conflict):
        svc.create_user(db, email, "b")
    assert svc.get_user(db, first.id).username == "a"


@pytest.mark.parametrize(
    ("email", "username"), [("not-an-email", "a"), ("a@b.io", "bad name!"), ("", "a")]
)
def test_invalid_user_input(db: Database, email: str, username: str) -> None:
    """Malformed emails and usernames are rejected before any SQL."""
    with pytest.raises(InvalidInput):
        svc.create_user(db, email, username)


def test_missing_user_and_prompt(db: Database) -> None:
    """Unknown and malformed ids are NotFound."""
    with pytest.raises(NotFound):
        svc.get_user(db, new_id())
    with pytest.raises(NotFound):
        svc.get_prompt(db, new_id())
    with pytest.raises(NotFound):
        svc.get_prompt(db, "../../etc/passwd")


def test_create_prompt_has_version_one(db: Database, owner: str) -> None:
    """A new prompt is at version 1, with that version in its history."""
    p = svc.create_prompt(db, owner, "Title", "Body", metadata={"k": 1})
    got = svc.get_prompt(db, p.id)
    assert got == p
    assert got.current_version == 1 and got.status == "draft"
    history = svc.prompt_history(db, p.id)
    assert [(v.version, v.content) for v in history] == [(1, "Body")]


def test_create_prompt_for_missing_owner(db: Database) -> None:
    """A prompt needs an existing owner (foreign key), and nothing is written otherwise."""
    with pytest.raises(NotFound, match="user"):
        svc.create_prompt(db, new_id(), "T", "C")


def test_edit_makes_new_immutable_version(db: Database, owner: str) -> None:
    """An edit adds version n+1, keeps version n unchanged, and really updates updated_at."""
    p = svc.create_prompt(db, owner, "T", "v1 text")
    e = svc.edit_prompt(db, p.id, content="v2 text")
    assert e.current_version == 2 and e.content == "v2 text" and e.title == "T"
    assert e.updated_at >= p.updated_at and e.created_at == p.created_at
    e3 = svc.edit_prompt(db, p.id, title="T3")
    assert (e3.current_version, e3.title, e3.content) == (3, "T3", "v2 text")
    history = svc.prompt_history(db, p.id)
    assert [(v.version, v.title, v.content) for v in history] == [
        (1, "T", "v1 text"),
        (2, "T", "v2 text"),
        (3, "T3", "v2 text"),
    ]
    assert svc.get_prompt(db, p.id) == e3


def test_stale_edit_is_conflict_and_changes_nothing(db: Database, owner: str) -> None:
    """An edit against an old expected version is refused; the prompt stays as it was."""
    p = svc.create_prompt(db, owner, "T", "one")
    svc.edit_prompt(db, p.id, content="two", expected_version=1)
    with pytest.raises(Conflict):
        svc.edit_prompt(db, p.id, content="three", expected_version=1)
    assert svc.get_prompt(db, p.id).content == "two"
    assert len(svc.prompt_history(db, p.id)) == 2


def test_edit_needs_a_change(db: Database, owner: str) -> None:
    """An edit with neither content nor title is invalid input."""
    p = svc.create_prompt(db, owner, "T", "C")
    with pytest.raises(InvalidInput):
        svc.edit_prompt(db, p.id)
    with pytest.raises(NotFound):
        svc.edit_prompt(db, new_id(), content="x")


def test_status_changes(db: Database, owner: str) -> None:
    """Status moves between draft, active and archived; anything else is rejected."""
    p = svc.create_prompt(db, owner, "T", "C")
    assert svc.set_status(db, p.id, "active").status == "active"
    assert svc.get_prompt(db, p.id).status == "active"
    with pytest.raises(InvalidInput):
        svc.set_status(db, p.id, "deleted")
    with pytest.raises(NotFound):
        svc.set_status(db, new_id(), "active")


def test_schema_check_constraint_holds_behind_the_service(db: Database, owner: str) -> None:
    """The database itself rejects a bad status (CHECK), mapped to InvalidInput."""
    p = svc.create_prompt(db, owner, "T", "C")
    with pytest.raises(InvalidInput), UnitOfWork(db, write=True) as uow:
        uow.execute("UPDATE prompts SET status = 'bogus' WHERE id = ?", (p.id,))
        uow.commit()
    assert svc.get_prompt(db, p.id).status == "draft"


def test_versions_are_immutable_in_the_database(db: Database, owner: str) -> None:
    """UPDATE and DELETE of prompt_versions are refused by triggers."""
    p = svc.create_prompt(db, owner, "T", "C")
    for sql in (
        "UPDATE prompt_versions SET content = 'x' WHERE prompt_id = ?",
        "DELETE FROM prompt_versions WHERE prompt_id = ?",
    ):
        with pytest.raises(Conflict), UnitOfWork(db, write=True) as uow:
            uow.execute(sql, (p.id,))
            uow.commit()
    assert svc.prompt_history(db, p.id)[0].content == "C"


def test_list_newest_first_with_keyset_paging(db: Database, owner: str) -> None:
    """Pages of a user's prompts are newest first, disjoint, and cover everything."""
    made = [
        svc.create_prompt(db, owner, f"P{i}", "C", status="active" if i % 2 else "draft")
        for i in range(7)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        page = svc.list_prompts(db, owner, limit=3, cursor=cursor)
        seen += [p.id for p in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [p.id for p in reversed(made)]
    active = svc.list_prompts(db, owner, limit=10, status="active")
    assert [p.id for p in active.items] == [p.id for p in reversed(made) if p.status == "active"]
    with pytest.raises(InvalidInput):
        svc.list_prompts(db, owner, limit=0)
    with pytest.raises(InvalidInput):
        svc.list_prompts(db, owner, cursor="'; DROP TABLE prompts; --")


def test_list_uses_the_covering_index(db: Database, owner: str) -> None:
    """The list query is answered from the covering index alone (no table lookups)."""
    with UnitOfWork(db) as uow:
        plan = uow.fetchall(
            "EXPLAIN QUERY PLAN SELECT id, title, status, current_version, created_at, updated_at "
            "FROM prompts INDEXED BY ix_prompts_owner_list WHERE owner_id = ? AND id < ? "
            "ORDER BY id DESC LIMIT ?",
            (owner, "~", 20),
        )
    detail = " ".join(str(row[-1]) for row in plan)
    assert "COVERING INDEX ix_prompts_owner_list" in detail
    assert "TEMP B-TREE" not in detail


def test_evaluations(db: Database, owner: str) -> None:
    """Evaluations attach to an existing version and list newest first."""
    p = svc.create_prompt(db, owner, "T", "C")
    e1 = svc.add_evaluation(db, p.id, 1, 0.5, metrics={"bleu": 0.3})
    svc.edit_prompt(db, p.id, content="C2")
    e2 = svc.add_evaluation(db, p.id, 2, 0.9)
    page = svc.list_evaluations(db, p.id)
    assert [e.id for e in page.items] == [e2.id, e1.id]
    assert page.items[1].metrics == {"bleu": 0.3}
    with pytest.raises(NotFound):
        svc.add_evaluation(db, p.id, 3, 0.1)
    with pytest.raises(InvalidInput):
        svc.add_evaluation(db, p.id, 1, math.nan)


def test_bulk_import(db: Database, owner: str) -> None:
    """A bulk import creates every prompt with its version 1."""
    n = svc.import_prompts(db, owner, [(f"T{i}", f"C{i}") for i in range(250)], batch_size=100)
    assert n == 250
    page = svc.list_prompts(db, owner, limit=200)
    assert len(page.items) == 200 and page.next_cursor is not None
    assert len(svc.prompt_history(db, page.items[0].id)) == 1


def test_updated_at_moves_forward_within_one_millisecond(db: Database, owner: str) -> None:
    """Edits faster than the clock's millisecond still move updated_at strictly forward."""
    p = svc.create_prompt(db, owner, "T", "C")
    stamps = [p.updated_at]
    for i in range(5):
        e = svc.edit_prompt(db, p.id, content=f"C{i}")
        assert svc.get_prompt(db, p.id) == e  # what the edit returned is what is stored
        stamps.append(e.updated_at)
    s = svc.set_status(db, p.id, "active")
    stamps.append(s.updated_at)
    assert svc.get_prompt(db, p.id) == s
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
