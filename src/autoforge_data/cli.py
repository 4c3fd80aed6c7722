"""`afdb`: the command line of the data platform.

Every command parses its arguments, calls one service function and prints. Failures print one
line with a hint and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from autoforge_data.errors import AfdbError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="afdb",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="AutoForgeNexus data platform: prompts on libSQL, search, cache and operations.\n\n"
    "Example: afdb --env dev init --demo",
)
prompts_app = typer.Typer(
    no_args_is_help=True,
    help="Create and read prompts.\n\nExample: afdb prompts list --owner 01J...",
)
users_app = typer.Typer(
    no_args_is_help=True,
    help="Create and list users.\n\nExample: afdb users add ada@example.com ada",
)
embeddings_app = typer.Typer(
    no_args_is_help=True,
    help="Embedding models: status, backfill (reindex) and cut-over.\n\n"
    "Example: afdb embeddings reindex --model all-MiniLM-L6-v2",
)
index_app = typer.Typer(
    no_args_is_help=True,
    help="The vector index: rebuild and statistics.\n\nExample: afdb index stats",
)
app.add_typer(prompts_app, name="prompts")
app.add_typer(users_app, name="users")
cache_app = typer.Typer(
    no_args_is_help=True, help="Inspect and flush the cache.\n\nExample: afdb cache stats"
)
app.add_typer(embeddings_app, name="embeddings")
app.add_typer(cache_app, name="cache")
app.add_typer(index_app, name="index")


@dataclass
class State:
    """Options of the top-level command, shared with every subcommand."""

    env: str | None = None
    debug: bool = False


_state = State()


@app.callback()
def _main(
    env: Annotated[
        str | None,
        typer.Option(
            "--env", "-e", help="Profile: dev, staging or prod (default: AFDB_ENV or dev)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """AutoForgeNexus data platform command line."""
    _state.env = env
    _state.debug = debug


def _settings() -> Any:
    import logging

    from autoforge_data.settings import Settings

    settings = Settings.load(_state.env)
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":  # libraries' INFO chatter is not for the terminal
        quiet = ("alembic", "httpx", "httpcore", "sentence_transformers", "transformers", "faiss")
        for name in quiet:
            logging.getLogger(name).setLevel(logging.WARNING)
    return settings


@contextmanager
def _database(*, check_schema: bool = True) -> Iterator[Any]:
    from autoforge_data.db import migrate
    from autoforge_data.db.engine import Database

    db = Database(_settings())
    try:
        if check_schema:
            rev = migrate.check_not_newer(db)
            if rev is None:
                raise AfdbError("the database has no schema yet", hint="run: afdb init")
        yield db
    finally:
        db.close()


@contextmanager
def _write_cache() -> Iterator[Any]:
    """With AFDB_REDIS_URL, the cache our writes invalidate (servers cache what we change)."""
    settings = _settings()
    if not settings.redis_url:
        yield None
        return
    from autoforge_data.cache import make_cache

    cache = make_cache(settings, listen=False)
    try:
        yield cache
    finally:
        cache.close()


def _json(obj: Any) -> None:
    console.print_json(json.dumps(obj, default=asdict))


@app.command()
def init(
    demo: Annotated[bool, typer.Option("--demo", help="Also load demo users and prompts.")] = False,
) -> None:
    """Create the data directory, migrate to the newest schema, optionally load demo data.

    Example: afdb init --demo
    """
    from autoforge_data.db import migrate
    from autoforge_data.services.demo import load_demo

    with _database(check_schema=False) as db:
        migrate.upgrade(db)
        console.print(f"database ready: {db.target.describe()} (migration {migrate.code_head()})")
        if demo:
            from autoforge_data.services.search import reindex

            n = load_demo(db)
            console.print(f"demo data: {n} prompts loaded" if n else "demo data already present")
            report = reindex(db)
            if report.embedded:
                console.print(f"search index: {report.embedded} prompts embedded")


@app.command("migrate")
def migrate_cmd(
    to: Annotated[str, typer.Option("--to", help="Target revision (default: head).")] = "head",
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only check: exit 2 if the database is behind the code or drifts from the models.",
        ),
    ] = False,
    down: Annotated[
        str | None,
        typer.Option("--downgrade", help="Downgrade to this revision ('base' drops everything)."),
    ] = None,
) -> None:
    """Upgrade (or downgrade) the schema; --check reports drift without changing anything.

    Example: afdb migrate --check
    """
    from autoforge_data.db import migrate

    with _database(check_schema=False) as db:
        if check:
            rev = migrate.check_not_newer(db)
            head = migrate.code_head()
            if rev != head:
                raise AfdbError(
                    f"database at {rev or 'no schema'}, code at {head}", hint="run: afdb migrate"
                )
            diffs = migrate.drift(db)
            if diffs:
                raise AfdbError(
                    f"schema drift: {len(diffs)} difference(s): {diffs[0]}",
                    hint="the database was changed by hand; restore or migrate",
                )
            console.print(f"ok: database at {head}, no drift")
        elif down is not None:
            migrate.downgrade(db, down)
            console.print(f"downgraded to {migrate.current_revision(db) or 'base'}")
        else:
            migrate.upgrade(db, to)
            console.print(f"database at {migrate.current_revision(db)}")


@app.command()
def doctor() -> None:
    """Check settings, connectivity, server version and migrations; print what is OK and not.

    Example: AFDB_ENV=prod afdb doctor
    """
    from autoforge_data.ops.doctor import run_checks

    settings = _settings()
    rows = run_checks(settings)
    table = Table(title=f"afdb doctor ({settings.env})")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    for name, ok, detail in rows:
        table.add_row(name, "OK" if ok else "FAIL", detail)
    console.print(table)
    failed = [name for name, ok, _ in rows if not ok]
    if failed:
        raise AfdbError(
            f"{len(failed)} check(s) failed: {', '.join(failed)}", hint="see the table above"
        )


@users_app.command("add")
def users_add(
    email: str,
    username: str,
    clerk_id: Annotated[str | None, typer.Option(help="The identity provider's user id.")] = None,
) -> None:
    """Create a user.

    Example: afdb users add ada@example.com ada
    """
    from autoforge_data.services import prompts as svc

    with _database() as db:
        user = svc.create_user(db, email, username, clerk_id=clerk_id)
    console.print(user.id)


@users_app.command("list")
def users_list(
    limit: Annotated[int, typer.Option(help="Rows per page.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List users.

    Example: afdb users list --json
    """
    from autoforge_data.services import prompts as svc

    with _database() as db:
        page = svc.list_users(db, limit=limit)
    if as_json:
        _json([asdict(u) for u in page.items])
        return
    table = Table()
    for col in ("id", "email", "username", "created_at"):
        table.add_column(col)
    for u in page.items:
        table.add_row(u.id, u.email, u.username, u.created_at)
    console.print(table)


@prompts_app.command("add")
def prompts_add(
    owner: Annotated[str, typer.Option(help="Owner's user id.")],
    title: Annotated[str, typer.Option(help="Title.")],
    content: Annotated[str, typer.Option(help="Prompt text ('-' reads standard input).")],
    status: Annotated[str, typer.Option(help="draft, active or archived.")] = "draft",
) -> None:
    """Create a prompt (version 1).

    Example: afdb prompts add --owner 01J... --title "Summariser" --content "Summarise: ..."
    """
    from autoforge_data.services import prompts as svc

    text = sys.stdin.read() if content == "-" else content
    with _database() as db, _write_cache() as cache:
        prompt = svc.create_prompt(db, owner, title, text, status=status, cache=cache)
    console.print(prompt.id)


@prompts_app.command("edit")
def prompts_edit(
    prompt_id: str,
    content: Annotated[
        str | None, typer.Option(help="New text ('-' reads standard input).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="New title.")] = None,
    expected_version: Annotated[
        int | None, typer.Option(help="Refuse if not at this version.")
    ] = None,
) -> None:
    """Save a new version of a prompt.

    Example: afdb prompts edit 01J... --content "Better text"
    """
    from autoforge_data.services import prompts as svc

    text = sys.stdin.read() if content == "-" else content
    with _database() as db, _write_cache() as cache:
        prompt = svc.edit_prompt(
            db,
            prompt_id,
            content=text,
            title=title,
            expected_version=expected_version,
            cache=cache,
        )
    console.print(f"{prompt.id} is now at version {prompt.current_version}")


@prompts_app.command("list")
def prompts_list(
    owner: Annotated[str, typer.Option(help="Owner's user id.")],
    limit: Annotated[int, typer.Option(help="Rows per page (1-200).")] = 20,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A user's prompts, newest first.

    Example: afdb prompts list --owner 01J... --status active
    """
    from autoforge_data.services import prompts as svc

    with _database() as db:
        page = svc.list_prompts(db, owner, limit=limit, cursor=cursor, status=status)
    if as_json:
        _json({"items": [asdict(p) for p in page.items], "next_cursor": page.next_cursor})
        return
    table = Table()
    for col in ("id", "title", "status", "version", "updated_at"):
        table.add_column(col)
    for p in page.items:
        table.add_row(p.id, p.title, p.status, str(p.current_version), p.updated_at)
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@prompts_app.command("show")
def prompts_show(
    prompt_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a prompt with its current text.

    Example: afdb prompts show 01J...
    """
    from autoforge_data.services import prompts as svc

    with _database() as db:
        p = svc.get_prompt(db, prompt_id)
    if as_json:
        _json(asdict(p))
        return
    console.print(f"[bold]{p.title}[/bold]  ({p.status}, version {p.current_version})")
    console.print(f"id {p.id}  owner {p.owner_id}  updated {p.updated_at}")
    console.print(p.content, markup=False)


@prompts_app.command("history")
def prompts_history(
    prompt_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every version of a prompt, oldest first.

    Example: afdb prompts history 01J...
    """
    from autoforge_data.services import prompts as svc

    with _database() as db:
        versions = svc.prompt_history(db, prompt_id)
    if as_json:
        _json([asdict(v) for v in versions])
        return
    table = Table()
    for col in ("version", "created_at", "title", "content"):
        table.add_column(col)
    for v in versions:
        table.add_row(
            str(v.version),
            v.created_at,
            v.title,
            v.content[:80],
        )
    console.print(table)


def _filter(
    status: list[str] | None,
    owner: str | None,
    created_from: str | None,
    created_to: str | None,
    meta: list[str] | None,
) -> Any:
    from autoforge_data.vector.base import Filter

    metadata: dict[str, str | int | float | bool] = {}
    for item in meta or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise AfdbError(f"--meta {item!r} is not KEY=VALUE", hint="e.g. --meta topic=sql")
        metadata[key] = value
    return Filter(
        status=tuple(status) if status else None,
        owner_id=owner,
        created_from=created_from,
        created_to=created_to,
        metadata=metadata,
    )


@app.command("search")
def search_cmd(
    query: str,
    k: Annotated[int, typer.Option("-k", help="How many results (1-1000).")] = 10,
    mode: Annotated[str, typer.Option(help="vector, keyword or hybrid.")] = "hybrid",
    status: Annotated[list[str] | None, typer.Option(help="Only this status (repeatable).")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's prompts.")] = None,
    created_from: Annotated[str | None, typer.Option(help="Created at or after (ISO).")] = None,
    created_to: Annotated[str | None, typer.Option(help="Created before (ISO).")] = None,
    meta: Annotated[list[str] | None, typer.Option(help="Metadata KEY=VALUE (repeatable).")] = None,
    backend: Annotated[
        str | None, typer.Option(help="memory, exact or libsql (default AFDB_INDEX_BACKEND).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search prompts by meaning and words.

    Example: afdb search "summarise a support ticket" -k 5 --status active --mode hybrid
    """
    from autoforge_data.services.search import SearchContext, search

    flt = _filter(status, owner, created_from, created_to, meta)
    with (
        _database() as db,
        SearchContext.open(db, kind=backend or db.settings.index_backend) as ctx,
    ):
        matches = search(ctx, query, k=k, flt=flt, mode=mode)
    if as_json:
        _json([asdict(m) for m in matches])
        return
    table = Table()
    for col in ("#", "score", "prompt", "v", "snippet"):
        table.add_column(col, overflow="fold")
    for rank, m in enumerate(matches, 1):
        table.add_row(str(rank), f"{m.score:.4f}", m.prompt_id, str(m.version), m.snippet)
    console.print(table)


@embeddings_app.command("status")
def embeddings_status() -> None:
    """Registered models, which one is active, and how many prompts each still lacks.

    Example: afdb embeddings status
    """
    from autoforge_data.vector.mirror import stale_count
    from autoforge_data.vector.store import VectorStore, list_models

    with _database() as db:
        models = list_models(db)
        table = Table()
        for col in ("model", "status", "dim", "metric", "vectors", "stale"):
            table.add_column(col)
        for m in models:
            count = VectorStore(m).count(db)
            table.add_row(
                m.name, m.status, str(m.dimension), m.metric, str(count), str(stale_count(db, m))
            )
    console.print(table)


@embeddings_app.command("reindex")
def embeddings_reindex(
    model: Annotated[str | None, typer.Option(help="Model name (default: the active one).")] = None,
    activate: Annotated[
        bool, typer.Option("--activate", help="Make it the active model after a complete backfill.")
    ] = False,
    batch: Annotated[int, typer.Option(help="Prompts per committed batch.")] = 256,
) -> None:
    """Embed every prompt whose vector is missing or stale; resumable (rerun to continue).

    Search keeps using the active model meanwhile. Example:
    afdb embeddings reindex --model text-embedding-3-small --activate
    """
    from rich.progress import Progress

    from autoforge_data.services.search import reindex
    from autoforge_data.vector.embedders import model_spec
    from autoforge_data.vector.store import activate_model, register_model

    with _database() as db:
        name = model
        if name is not None:
            spec = model_spec(name)
            register_model(db, spec.name, spec.dimension, spec.metric, spec.normalized)
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("embedding", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            with _write_cache() as cache:
                report = reindex(db, name, batch=batch, progress=progress, cache=cache)
        console.print(f"embedded {report.embedded}, unchanged {report.unchanged}")
        if activate:
            row = activate_model(db, name) if name else None
            console.print(f"active model: {row.name if row else 'unchanged'}")


@embeddings_app.command("activate")
def embeddings_activate(name: str) -> None:
    """Make a registered model the active one (the previous one is retired; rollback = activate it).

    Example: afdb embeddings activate all-MiniLM-L6-v2
    """
    from autoforge_data.vector.mirror import stale_count
    from autoforge_data.vector.store import activate_model, get_model

    with _database() as db:
        row = get_model(db, name)
        missing = stale_count(db, row)
        if missing:
            raise AfdbError(
                f"model {name} still lacks vectors for {missing} prompts",
                hint=f"run: afdb embeddings reindex --model {name}",
            )
        activate_model(db, name)
    console.print(f"active model: {name}")


@index_app.command("rebuild")
def index_rebuild(
    backend: Annotated[str, typer.Option(help="memory or libsql.")] = "memory",
) -> None:
    """Rebuild the active model's index from the vectors in the database and save it.

    Example: afdb index rebuild --backend memory
    """
    from autoforge_data.vector.index import open_index
    from autoforge_data.vector.store import active_model

    with _database() as db:
        index = open_index(db, active_model(db), backend)
        try:
            rebuild = getattr(index, "rebuild", None)
            if callable(rebuild):
                rebuild()
            stats = index.stats()
        finally:
            index.close()
    _json(stats)


@index_app.command("stats")
def index_stats(
    backend: Annotated[str, typer.Option(help="memory, exact or libsql.")] = "memory",
) -> None:
    """Size, vectors, journal position and build facts of the active model's index.

    Example: afdb index stats
    """
    from autoforge_data.vector.index import open_index
    from autoforge_data.vector.store import active_model

    with _database() as db:
        index = open_index(db, active_model(db), backend)
        try:
            stats = index.stats()
        finally:
            index.close()
    _json(stats)


@cache_app.command("stats")
def cache_stats_cmd() -> None:
    """Show the cache backend, Redis reachability, breaker and our keys per kind.

    Example: afdb cache stats
    """
    from autoforge_data.cache import cache_stats, make_cache

    cache = make_cache(_settings(), listen=False)
    try:
        _json(cache_stats(cache, count_keys=True))
    finally:
        cache.close()


@cache_app.command("flush")
def cache_flush_cmd(
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only this kind, e.g. search (default: all).")
    ] = None,
) -> None:
    """Delete our cache keys (SCAN on the afdb:v<schema>: prefix; never KEYS or FLUSHDB).

    Example: afdb cache flush --kind search
    """
    from autoforge_data.cache import flush, make_cache

    settings = _settings()
    cache = make_cache(settings, listen=False)
    try:
        n = flush(cache, kind)
    finally:
        cache.close()
    note = "" if settings.redis_url else " (no AFDB_REDIS_URL: only this process's memory cache)"
    console.print(f"flushed {n} key(s){note}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default AFDB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default AFDB_PORT, 8000).")] = None,
) -> None:
    """Serve the HTTP API and dashboard.

    Example: AFDB_PORT=8080 afdb serve
    """
    import uvicorn

    from autoforge_data.api.app import create_app

    settings = _settings()
    host = host or settings.host
    port = port or settings.port
    application = create_app(settings)
    console.print(f"serving on http://{host}:{port}  (health: http://{host}:{port}/health/ready)")
    uvicorn.run(application, host=host, port=port, log_level="warning")


def _fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"error: {message}", markup=False, soft_wrap=True)
    raise SystemExit(code)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (used by `main` and the tests)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="afdb", standalone_mode=False)
    except AfdbError as exc:
        if _state.debug:
            raise
        _fail(exc.one_line())
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        _fail("aborted")
    except TyperException as exc:  # usage errors: unknown option, missing argument, bad value
        fmt = getattr(exc, "format_message", None)
        message = fmt() if callable(fmt) else str(exc)
        _fail(f"{message} (hint: see afdb {' '.join(_subcommand(argv))} --help)")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if _state.debug:
            raise
        _fail(f"unexpected {type(exc).__name__} (hint: rerun with --debug and report it)")
    return int(result) if isinstance(result, int) else 0


def _subcommand(argv: list[str] | None) -> list[str]:
    args = sys.argv[1:] if argv is None else argv
    return [a for a in args[:2] if not a.startswith("-")]


def main() -> None:
    """Console script entry point."""
    raise SystemExit(run())


# --- command groups that live in their own modules; imported last because they reach the helpers
# above through `from autoforge_data import cli` ---
from autoforge_data import (  # noqa: E402
    cli_backup,
    cli_env,
    cli_replicate,
    cli_security,
    cli_service,
)

for _group in (cli_env, cli_backup, cli_replicate, cli_service, cli_security):
    _group.register(app)
