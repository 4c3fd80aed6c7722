"""Backups on real libSQL files: one contract suite over both targets (file://, s3:// on moto),
encryption, retention, and every way a restore must refuse a bad backup before the swap.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoforge_data import cli
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import AfdbError, Busy, Corrupt, InvalidInput, SchemaError
from autoforge_data.ops import backup_format as fmt
from autoforge_data.ops.backup import (
    DATA,
    MANIFEST,
    BackupOptions,
    RetentionPolicy,
    backup_status,
    create_backup,
    hmac_key,
    kept,
    list_backups,
    prune_backups,
)
from autoforge_data.ops.backup_restore import (
    RestoreOptions,
    RestorePlan,
    restore_backup,
    rollback_restore,
)
from autoforge_data.ops.backup_verify import VerifyOptions, verify_backup
from autoforge_data.ops.snapshot import _open_libsql, describe
from autoforge_data.ops.targets import open_target
from autoforge_data.services import prompts as svc
from autoforge_data.services.search import reindex
from autoforge_data.settings import Settings
from autoforge_data.vector.embedders import HashEmbedder
from autoforge_data.vector.store import activate_model, register_model
from conftest import settings_for
from s3_server import S3Server, start_s3

PROMPTS = 12


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the module (each test uses its own bucket)."""
    server = start_s3(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


def make_live(settings: Settings, prompts: int = PROMPTS) -> None:
    """A migrated database with prompts embedded by the deterministic hash-384 model."""
    with Database(settings) as db:
        migrate.upgrade(db)
        register_model(db, "hash-384", 384)
        activate_model(db, "hash-384")
        owner = svc.create_user(db, f"u{uuid.uuid4().hex[:8]}@example.com", "writer").id
        for i in range(prompts):
            svc.create_prompt(db, owner, f"title {i}", f"backup drill prompt number {i} alpha")
        reindex(db, "hash-384", embedder=HashEmbedder(384))


def add_prompt(settings: Settings) -> None:
    """One more prompt (a change made after a backup)."""
    with Database(settings) as db:
        owner = svc.create_user(db, f"u{uuid.uuid4().hex[:8]}@example.com", "late").id
        svc.create_prompt(db, owner, "late", "written after the backup")


def backup(settings: Settings, **kwargs: object) -> fmt.Manifest:
    """create_backup through a fresh Database."""
    with Database(settings) as db:
        return create_backup(db, BackupOptions(**kwargs)).manifest  # type: ignore[arg-type]


def live_sha(settings: Settings) -> str:
    """sha256 of the live file (and its WAL, if any)."""
    path = settings.target.path
    assert path is not None
    digest = hashlib.sha256(path.read_bytes())
    wal = Path(f"{path}-wal")
    if wal.exists():
        digest.update(wal.read_bytes())
    return digest.hexdigest()


@pytest.fixture(params=["file", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Embedded settings whose backups go to a folder or to a fresh bucket on moto."""
    extra: dict[str, object] = {}
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3")
        bucket = f"afdb-{uuid.uuid4().hex[:12]}"
        server.create_bucket(bucket)
        extra = server.settings_overrides(bucket)
    s = settings_for("embedded", tmp_path, None, **extra)
    make_live(s)
    return s


# --- the contract: both targets ------------------------------------------------------------------


def test_backup_verify_restore_round_trip(settings: Settings) -> None:
    """create → list → verify (both searches hit) → change → restore brings the rows back."""
    m = backup(settings)
    assert m.row_counts["prompts"] == PROMPTS
    assert "hash-384" in m.models
    assert m.migration == migrate.code_head()
    [entry] = list_backups(settings)
    assert (entry.name, entry.verified, entry.size_bytes) == (m.name, False, m.size_bytes)
    report = verify_backup(settings)
    assert report.ok, report.error
    assert report.vector_hits and report.keyword_hits
    assert list_backups(settings)[0].verified
    add_prompt(settings)
    done = restore_backup(settings, RestoreOptions(yes=True))
    assert done.previous_path is not None and done.previous_path.exists()
    path = settings.target.path
    assert path is not None
    assert os.stat(path).st_mode & 0o777 == 0o600
    with _open_libsql(path) as conn:
        assert describe(conn)[2] == m.row_counts
    rollback_restore(settings)
    with _open_libsql(path) as conn:
        assert describe(conn)[2]["prompts"] == PROMPTS + 1


def test_list_json_has_one_object_per_backup(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """`afdb backup list --json`: name, path, created_at, size_bytes, verified for each backup."""
    names = [backup(settings, name=f"b{i}").name for i in range(2)]
    os.environ.update({k: str(v) for k, v in _env_of(settings).items()})
    try:
        assert cli.run(["backup", "list", "--json"]) == 0
    finally:
        for k in _env_of(settings):
            os.environ.pop(k, None)
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == names
    for r in rows:
        assert {"name", "path", "created_at", "size_bytes", "verified"} <= set(r)
        assert r["verified"] is False


def _env_of(settings: Settings) -> dict[str, object]:
    env: dict[str, object] = {"AFDB_DATA_DIR": settings.data_dir}
    if settings.backup_url:
        env |= {
            "AFDB_BACKUP_URL": settings.backup_url,
            "AFDB_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "AFDB_S3_ACCESS_KEY_ID": settings.s3_access_key_id,
            "AFDB_S3_SECRET_ACCESS_KEY": "afdb-test-secret",
        }
    return env


def test_prune_keeps_what_the_policy_says(settings: Settings) -> None:
    """keep-last 2 of 4 deletes the two oldest (manifest, data and verify record)."""
    names = [backup(settings, name=f"p{i}").name for i in range(4)]
    verify_backup(settings, VerifyOptions(name="p0", search=False))
    assert prune_backups(settings, RetentionPolicy(keep_last=2), dry_run=True) == names[:2]
    assert prune_backups(settings, RetentionPolicy(keep_last=2)) == names[:2]
    assert [e.name for e in list_backups(settings)] == names[2:]
    assert backup_status(settings)["count"] == 2
    assert not any(k.startswith(("p0", "p1")) for k in open_target(settings).list_keys())
    with pytest.raises(InvalidInput):
        prune_backups(settings, RetentionPolicy())


def test_prune_sweeps_temp_files_of_killed_writers(local: Settings) -> None:
    """Old '.<key>.*.tmp' files go, fresh ones (a running backup's) stay."""
    backup(local, name="s0")
    folder = Path(open_target(local).location("s0" + DATA)).parent
    old, fresh = folder / ".s9.afdb.abc.tmp", folder / ".s8.afdb.def.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(old, (0, 0))
    prune_backups(local, RetentionPolicy(keep_last=5))
    assert not old.exists() and fresh.exists()


def test_tampered_objects_are_refused(settings: Settings) -> None:
    """A flipped byte in the data, a cut-off data object or an edited manifest: no restore."""
    m = backup(settings, name="t")
    target = open_target(settings)
    with target.reader("t" + DATA) as fh:
        data = fh.read()
    with target.reader("t" + MANIFEST) as fh:
        manifest = fh.read()
    before = live_sha(settings)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    edited = json.loads(manifest)
    edited["row_counts"]["prompts"] += 1
    for key, body in (
        ("t" + DATA, bytes(flipped)),
        ("t" + DATA, data[: len(data) - 100]),
        ("t" + MANIFEST, json.dumps(edited).encode()),
    ):
        with target.writer(key) as out:
            out.write(body)
        with pytest.raises(Corrupt):
            restore_backup(settings, RestoreOptions(name=m.name, yes=True))
        assert not verify_backup(settings, VerifyOptions(name="t")).ok
        assert live_sha(settings) == before
        with target.writer("t" + DATA) as out:
            out.write(data)
        with target.writer("t" + MANIFEST) as out:
            out.write(manifest)
    assert verify_backup(settings, VerifyOptions(name="t")).ok  # the sensitivity arm


# --- encryption, names, status, refusals (file target) -------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> Settings:
    """Embedded settings with backups in the default folder."""
    s = settings_for("embedded", tmp_path, backup_encryption_key="k1-" + "x" * 40)
    make_live(s)
    return s


def test_encrypted_backup_round_trip_and_wrong_key(local: Settings, tmp_path: Path) -> None:
    """Encrypted data has no plaintext; the right key restores, a wrong key is refused."""
    m = backup(local, name="enc")
    assert m.encrypted
    raw = open_target(local).location("enc" + DATA)
    assert b"backup drill prompt" not in Path(raw).read_bytes()
    assert verify_backup(local, VerifyOptions(name="enc")).ok
    wrong = settings_for("embedded", tmp_path, backup_encryption_key="k2-" + "y" * 40)
    before = live_sha(local)
    with pytest.raises(Corrupt) as err:
        restore_backup(wrong, RestoreOptions(name="enc", yes=True))
    assert "k1-" not in str(err.value) and "k2-" not in str(err.value)
    assert live_sha(local) == before
    restore_backup(local, RestoreOptions(name="enc", yes=True))


def test_chunked_encryption_rejects_reorder_truncation_and_append(tmp_path: Path) -> None:
    """Multi-chunk stream: swapping two chunks, dropping the last one or appending data fails."""
    src = tmp_path / "src.bin"
    src.write_bytes(random.Random(1).randbytes(3 * fmt.CHUNK + 123))
    enc = tmp_path / "enc.bin"
    with open(enc, "wb") as out:
        fmt.encode(src, out, compression="none", level=0, secret="s3cret")
    blob = enc.read_bytes()
    head, rest = blob[:24], blob[24:]
    chunks, pos = [], 0
    while pos < len(rest):
        size = int.from_bytes(rest[pos : pos + 4], "big")
        chunks.append(rest[pos : pos + 4 + 12 + size])
        pos += 4 + 12 + size
    assert len(chunks) == 4
    variants = [
        head + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        head + b"".join(chunks[:-1]),
        blob + b"x",
        blob[:-1],
    ]
    for bad in variants:
        (tmp_path / "bad.bin").write_bytes(bad)
        with (
            open(tmp_path / "bad.bin", "rb") as fh,
            open(os.devnull, "wb") as sink,
            pytest.raises(Corrupt),
        ):
            fmt.decode(fh, sink, compression="none", secret="s3cret")
    with open(enc, "rb") as fh, open(tmp_path / "out.bin", "wb") as out:
        fmt.decode(fh, out, compression="none", secret="s3cret")
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()


HOSTILE = ["../../etc/passwd", "%2e%2e/", "\uff0e\uff0e\uff0f", "a\x00b", "-o/tmp/x", "y" * 300]


@pytest.mark.parametrize("name", HOSTILE, ids=lambda n: repr(n)[:20])
def test_hostile_backup_names_create_nothing(local: Settings, tmp_path: Path, name: str) -> None:
    """Each hostile name is refused before any file is written anywhere."""
    before = _tree(tmp_path)
    with pytest.raises(InvalidInput):
        backup(local, name=name)
    assert _tree(tmp_path) == before


def _tree(root: Path) -> list[str]:
    """Every path under root (SQLite's -wal/-shm of the live file aside)."""
    return sorted(str(p) for p in root.rglob("*") if not str(p).endswith(("-wal", "-shm")))


def test_planted_symlink_at_the_target_is_refused(local: Settings, tmp_path: Path) -> None:
    """A symlink named like the backup, pointing outside, is never followed."""
    folder = Path(open_target(local).location("x")).parent
    folder.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside.afdb"
    (folder / ("evil" + DATA)).symlink_to(outside)
    with pytest.raises(InvalidInput):
        backup(local, name="evil")
    assert not outside.exists()
    assert backup_status(local)["last_result"] == "error"


def test_status_and_hmac_key_file(local: Settings) -> None:
    """Status after a success; the generated HMAC key is a 0600 file beside the data."""
    backup(local)
    status = backup_status(local)
    assert status["last_result"] == "ok" and status["count"] == 1
    assert status["age_seconds"] is not None and status["age_seconds"] < 60
    key_file = Path(local.data_dir) / fmt.HMAC_KEY_FILE
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert hmac_key(local) == hmac_key(local)


def test_retention_rules() -> None:
    """keep-daily keeps the newest per day, keep-weekly per ISO week; rules add up."""
    import datetime as dt

    base = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)
    stamps = [
        (f"d{i}-{h}", base - dt.timedelta(days=i, hours=h)) for i in range(20) for h in (0, 5)
    ]
    daily = kept(stamps, RetentionPolicy(keep_daily=3))
    assert daily == {"d0-0", "d1-0", "d2-0"}
    weekly = kept(stamps, RetentionPolicy(keep_weekly=2))
    assert len(weekly) == 2 and "d0-0" in weekly
    assert kept(stamps, RetentionPolicy(keep_last=1, keep_daily=2)) == {"d0-0", "d1-0"}


# --- restore refuses bad backups before the swap -------------------------------------------------


def plant(settings: Settings, name: str, dbfile: Path, **manifest_fields: object) -> None:
    """Store ``dbfile`` as a correctly signed backup (what an attacker with the key, or a bug,
    could produce): only the checks after the HMAC and digests can catch it."""
    target = open_target(settings)
    with target.writer(name + DATA) as out:
        enc = fmt.encode(dbfile, out, compression="zstd", level=1, secret=None)
    try:
        with _open_libsql(dbfile) as conn:
            migration, models, counts = describe(conn)
    except Exception:
        migration, models, counts = migrate.code_head(), [], {}
    fields: dict[str, object] = {
        "name": name,
        "created_at": "2026-11-27T00:00:00Z",
        "profile": "dev",
        "size_bytes": enc.size,
        "sha256": enc.sha256,
        "raw_size_bytes": enc.raw_size,
        "raw_sha256": enc.raw_sha256,
        "compression": "zstd",
        "encrypted": False,
        "migration": migration,
        "models": models,
        "row_counts": counts,
    }
    m = fmt.Manifest(**(fields | manifest_fields))  # type: ignore[arg-type]
    m.sign(hmac_key(settings))
    with target.writer(name + MANIFEST) as out:
        out.write(m.to_bytes())


def _snapshot_copy(settings: Settings, tmp_path: Path) -> Path:
    """A consistent copy of the live database to damage."""
    from autoforge_data.ops.snapshot import snapshot_to

    with Database(settings) as db:
        return snapshot_to(db, tmp_path / "copy.db").path


def _truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _bitflips(p: Path) -> None:
    data = bytearray(p.read_bytes())
    rng = random.Random(7)
    for _ in range(40):
        data[rng.randrange(100, len(data))] ^= 1 << rng.randrange(8)
    p.write_bytes(bytes(data))


def _sql(statement: str) -> object:
    def run(p: Path) -> None:
        conn = sqlite3.connect(p)
        conn.execute(statement)
        conn.commit()
        conn.close()

    return run


DAMAGE = {
    "truncated": _truncated,
    "bit-flips": _bitflips,
    "empty": lambda p: p.write_bytes(b""),
    "not-a-database": lambda p: p.write_bytes(b"PK\x03\x04 a zip file, not SQLite " * 200),
    "newer-migration": _sql("UPDATE alembic_version SET version_num = '9999_future'"),
    "unexpected-trigger": _sql(
        "CREATE TRIGGER trg_evil AFTER INSERT ON users BEGIN DELETE FROM prompts; END"
    ),
    "unexpected-view": _sql("CREATE VIEW v_users AS SELECT email FROM users"),
    "allowed-name-wrong-table": _sql(
        "CREATE TRIGGER trg_users_touch_x AFTER INSERT ON prompts BEGIN SELECT 1; END"
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_restore_refuses_a_bad_backup(local: Settings, tmp_path: Path, damage: str) -> None:
    """Each damaged (but correctly signed) backup is refused; the live file is untouched."""
    copy = _snapshot_copy(local, tmp_path)
    DAMAGE[damage](copy)  # type: ignore[operator]
    plant(local, "bad", copy)
    before = live_sha(local)
    with pytest.raises((Corrupt, SchemaError)) as err:
        restore_backup(local, RestoreOptions(name="bad", yes=True))
    assert err.value.hint is None or "Traceback" not in err.value.hint
    assert live_sha(local) == before
    assert not list(Path(local.data_dir).glob("*.pre-restore-*"))
    report = verify_backup(local, VerifyOptions(name="bad"))
    assert not report.ok and report.error


def test_restore_refuses_a_failing_hmac(local: Settings, tmp_path: Path) -> None:
    """A backup signed with another key is refused (and the sensitivity arm: ours passes)."""
    copy = _snapshot_copy(local, tmp_path)
    plant(local, "good", copy)
    assert verify_backup(local, VerifyOptions(name="good")).ok
    other = settings_for("embedded", tmp_path, backup_hmac_key="another key entirely")
    before = live_sha(local)
    with pytest.raises(Corrupt, match="HMAC"):
        restore_backup(other, RestoreOptions(name="good", yes=True))
    assert live_sha(local) == before


def test_restore_refuses_while_the_database_is_open(local: Settings) -> None:
    """An open Database in this process (a running service) blocks the swap."""
    backup(local, name="open")
    with Database(local):
        before = live_sha(local)
        with pytest.raises(Busy):
            restore_backup(local, RestoreOptions(name="open", yes=True))
        assert live_sha(local) == before


def test_restore_asks_and_a_no_changes_nothing(local: Settings) -> None:
    """Without --yes the confirmation decides; refusing leaves the live file as it was."""
    backup(local, name="ask")
    before = live_sha(local)
    asked: list[RestorePlan] = []

    def say_no(plan: RestorePlan) -> bool:
        asked.append(plan)
        return False

    with pytest.raises(AfdbError, match="cancelled"):
        restore_backup(local, RestoreOptions(name="ask", confirm=say_no))
    assert asked and asked[0].name == "ask"
    assert live_sha(local) == before
    with pytest.raises(InvalidInput):
        restore_backup(local, RestoreOptions(name="ask"))


def test_libsql_encrypted_database_round_trip(tmp_path: Path) -> None:
    """A database encrypted at rest (AFDB_ENCRYPTION_KEY) backs up, verifies and restores."""
    hmac_secret = "shared signing key"  # set explicitly: another machine can check the HMAC
    s = settings_for(
        "embedded", tmp_path, encryption_key="at-rest-" + "z" * 32, backup_hmac_key=hmac_secret
    )
    make_live(s, prompts=4)
    m = backup(s, name="atrest")
    assert m.db_encrypted and m.method == "locked-copy"
    report = verify_backup(s, VerifyOptions(name="atrest"))
    assert report.ok, report.error
    add_prompt(s)
    restore_backup(s, RestoreOptions(name="atrest", yes=True))
    with Database(s) as db, UnitOfWork(db) as uow:
        assert int(uow.fetchone("SELECT count(*) FROM prompts")[0]) == 4
    no_key = settings_for("embedded", tmp_path / "other", backup_hmac_key=hmac_secret)
    with pytest.raises(Corrupt, match="AFDB_ENCRYPTION_KEY"):
        restore_backup(
            no_key, RestoreOptions(name="atrest", url=str(Path(open_target(s).url[7:])), yes=True)
        )
