"""The secret canary: unique values for every secret setting, then every surface is searched.

Every SecretStr setting gets a fresh ``cnry-…`` value (the sqld token is a real JWT; the Redis
password really protects a redis-server), delivered the ways operators deliver them: environment,
secrets directory, encrypted env file. Then, with real servers, the CLI (successes and failures,
logging at DEBUG, one run with --debug), the HTTP app (health, /metrics, /openapi.json, error
bodies, faults), reprs of our objects, backups and Litestream when those commands exist, and the
files left behind are searched for any of them, while a watcher reads every process's command
line on the machine. The whole-suite variant is opt-in: ``AFDB_CANARY=1 pytest -p canary_plugin``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import typer

from autoforge_data import secrets
from autoforge_data.cli import app as cli_app
from autoforge_data.ops import keys, tokens
from canary import ProcWatcher, Scanner, canary_values, env_for, secret_fields
from fake_openai import FakeOpenAI
from servers import Redis, Sqld, free_port, start_sqld

AFDB = str(Path(sys.executable).parent / "afdb")
pytestmark = [pytest.mark.sqld, pytest.mark.redis]


@dataclass
class World:
    """The servers, the canary values and where they live."""

    root: Path
    cwd: Path  # the working folder of every command: holds .env.staging.enc
    sqld: Sqld
    redis: Redis
    values: dict[str, str]
    env: dict[str, str]  # remote mode (sqld + Redis), profile staging
    scanner: Scanner
    allowed: list[Path]  # files that hold a secret on purpose (0600 inputs)


def _start_redis(root: Path, password: str) -> Redis:
    """redis-server whose password is in a 0600 config file, never on its command line."""
    workdir = root / "redis"
    workdir.mkdir(mode=0o700)
    conf = workdir / "redis.conf"
    conf.write_text(f'requirepass "{password}"\nsave ""\nappendonly no\n')
    conf.chmod(0o600)
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary is not None
    argv = [binary, str(conf), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    server = Redis(argv=argv, port=port, workdir=workdir, log=workdir / "redis.log")
    server.start()
    return server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """sqld (JWT) and redis-server (password) on loopback, canaries for every secret setting."""
    root = tmp_path_factory.mktemp("canary")
    pair = keys.generate(root / "keys")
    sqld = start_sqld(root, extra=["--auth-jwt-key-file", str(pair.public_pem)])
    values = canary_values()
    values["auth_token"] = tokens.mint_from_file(
        pair.private, tokens.TokenOptions(timedelta(hours=1))
    )
    passphrase = f"cnry-secretskey-{os.urandom(8).hex()}"
    redis_server = _start_redis(root, values["redis_password"])
    cwd = root / "cwd"
    cwd.mkdir(mode=0o700)
    from_file = ("openai_api_key", "turso_api_token", "s3_secret_access_key")
    text = "".join(f"AFDB_{n.upper()}={values[n]}\n" for n in from_file)
    enc = cwd / ".env.staging.enc"
    enc.write_bytes(secrets.encrypt(text.encode(), secrets.Passphrase(passphrase, "test")))
    sdir = root / "run-secrets"
    sdir.mkdir(mode=0o700)
    (sdir / "AFDB_REDIS_PASSWORD").write_text(values["redis_password"] + "\n")
    direct = {k: v for k, v in values.items() if k not in from_file and k != "redis_password"}
    direct.pop("encryption_key")  # embedded files only; used by the embedded test below
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFDB_")}
    env |= env_for(direct) | {
        "AFDB_ENV": "staging",
        "AFDB_DATABASE_URL": sqld.url,
        "AFDB_REDIS_URL": redis_server.url,
        "AFDB_DATA_DIR": str(root / "data"),
        "AFDB_LOG_LEVEL": "DEBUG",
        "AFDB_SECRETS_DIR": str(sdir),
        "AFDB_SECRETS_KEY": passphrase,
        "AFDB_JWT_PRIVATE_KEY_FILE": str(pair.private),
        "AFDB_BACKUP_URL": f"file://{root / 'backups'}",
    }
    labels = dict(values) | {"secrets key": passphrase}
    scanner = Scanner(labels)
    try:
        yield World(
            root, cwd, sqld, redis_server, values, env, scanner, [sdir, enc, redis_server.workdir]
        )
    finally:
        redis_server.stop()
        sqld.stop()


def _afdb(world: World, args: Sequence[str], env: dict[str, str] | None = None) -> str:
    """Run `afdb`; returns stdout + stderr (scanned by the caller)."""
    proc = subprocess.run(  # noqa: PLW1510 - both outcomes are scanned
        [AFDB, *args],
        env=env or world.env,
        cwd=world.cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def _has_command(*path: str) -> bool:
    group = typer.main.get_command(cli_app)
    for part in path:
        commands = getattr(group, "commands", {})
        if part not in commands:
            return False
        group = commands[part]
    return True


def _new_findings(world: World, before: int) -> list[str]:
    return world.scanner.findings[before:]


def test_every_secret_setting_has_a_canary(world: World) -> None:
    """The canary covers every SecretStr field of Settings (new ones are picked up)."""
    assert set(secret_fields()) == set(world.values)
    assert {"auth_token", "redis_password", "openai_api_key", "backup_hmac_key"} <= set(
        world.values
    )


def test_scanner_sensitivity(world: World, tmp_path: Path) -> None:
    """The watcher sees a child's command line; text and file scans see a planted value."""
    marker = f"cnry-marker-{os.urandom(6).hex()}"
    probe = Scanner({"marker": marker})
    with ProcWatcher(probe):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
        deadline = time.monotonic() + 20  # generous: the machine may be loaded
        while not probe.findings and time.monotonic() < deadline:
            time.sleep(0.05)
        child.kill()
        child.wait()
    assert any("command line" in f for f in probe.findings)
    (tmp_path / "f.txt").write_text(f"x{marker}y")
    probe.files(tmp_path)
    probe.text("a body", f'{{"e": "{marker}"}}')
    assert len(probe.findings) >= 3


LEAKY_TEST = """
import logging
from autoforge_data.settings import Settings


def test_leaks(tmp_path):
    key = Settings.load(base_dir=tmp_path).openai_api_key
    logging.getLogger("leaky").warning("key is %s", key.get_secret_value())
"""


def test_whole_suite_plugin_catches_a_leak(tmp_path: Path) -> None:
    """The opt-in plugin (AFDB_CANARY=1 -p canary_plugin) fails a session that logs a secret."""
    (tmp_path / "test_leaky.py").write_text(LEAKY_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFDB_")}
    env |= {"AFDB_CANARY": "1", "PYTHONPATH": str(Path(__file__).parent)}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "canary_plugin"]
    args += ["--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "base"), "test_leaky.py"]
    proc = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout and "AFDB_OPENAI_API_KEY in log record leaky" in proc.stdout
    assert "cnrysuite-" not in proc.stdout.split("secret canary")[1]  # findings name, never show


def test_cli_success_and_failure_paths(world: World) -> None:
    """CLI commands at DEBUG, each failure path too: no canary in any output or command line."""
    before = len(world.scanner.findings)
    other = keys.generate(world.root / "other-keys").private
    bad_token = tokens.mint_from_file(other, tokens.TokenOptions(timedelta(hours=1)))
    expired = tokens.mint(
        keys.load_private(world.root / "keys" / keys.PRIVATE_NAME),
        tokens.TokenOptions(timedelta(minutes=5)),
        now=time.time() - 3600,
    )
    world.scanner.add("wrong-key token", bad_token)
    world.scanner.add("expired token", expired)
    runs: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "init": (["init"], None),
        "users add": (["users", "add", "canary@example.com", "canary"], None),
        "doctor": (["doctor"], None),
        "cache stats": (["cache", "stats"], None),
        "wrong-key token": (["users", "list"], world.env | {"AFDB_AUTH_TOKEN": bad_token}),
        "expired, --debug": (
            ["--debug", "users", "list"],
            world.env | {"AFDB_AUTH_TOKEN": expired},
        ),
        "redis without password": (
            ["cache", "stats"],
            world.env | {"AFDB_SECRETS_DIR": str(world.root / "keys")},
        ),
        "plain http to a remote host": (
            ["users", "list"],
            world.env | {"AFDB_DATABASE_URL": "http://db.example.invalid"},
        ),
        "unreachable server": (
            ["users", "list"],
            world.env | {"AFDB_DATABASE_URL": f"http://127.0.0.1:{free_port()}"},
        ),
    }
    if _has_command("env", "show"):
        runs["env show"] = (["env", "show", "staging"], None)
    outputs, durations = {}, {}
    with ProcWatcher(world.scanner) as watcher:
        for label, (args, env) in runs.items():
            start = time.monotonic()
            outputs[label] = _afdb(world, args, env)
            durations[label] = round(time.monotonic() - start, 1)
            world.scanner.text(f"afdb {' '.join(args)} ({label})", outputs[label])
        key_out = _afdb(world, ["apikey", "create", "--scope", "admin", "--name", "canary"])
        token_out = _afdb(world, ["token", "create", "--read-only", "--expires", "5m"])
    print("durations", durations)
    assert outputs["init"].startswith("exit 0"), outputs["init"]
    assert outputs["doctor"].startswith("exit 0"), outputs["doctor"]
    assert "DEBUG" in outputs["users add"]  # logging really was at DEBUG
    for label in ("wrong-key token", "redis without password", "unreachable server"):
        assert outputs[label].startswith("exit 2") and "Traceback" not in outputs[label], label
    assert "Traceback" in outputs["expired, --debug"]
    world.scanner.add("api key", key_out.split("\n")[1].strip())
    world.scanner.add("minted token", token_out.split("\n")[1].strip())
    world.scanner.text("apikey create (stderr)", key_out.split("\n", 2)[2])
    world.scanner.text("token create (stderr)", token_out.split("\n", 2)[2])
    assert len(watcher.seen) > 10
    assert not _new_findings(world, before)


def test_reprs_and_logs(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """repr/str of Settings, Database, cache, embedder and errors; DEBUG logs of real calls."""
    from autoforge_data.cache import make_cache
    from autoforge_data.db.engine import Database
    from autoforge_data.errors import AfdbError
    from autoforge_data.settings import Settings
    from autoforge_data.vector.openai_embedder import OpenAIEmbedder

    before = len(world.scanner.findings)
    for name, value in world.env.items():
        if name.startswith("AFDB_"):
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(world.cwd)
    caplog.set_level(logging.DEBUG)
    settings = Settings.load()
    assert settings.openai_api_key is not None  # really read from the encrypted file
    assert settings.redis_password is not None  # really read from the secrets directory
    objects: list[object] = [settings, settings.target, settings.redacted()]
    objects.append(secrets.passphrase())
    with Database(settings) as db:
        from autoforge_data.services import prompts as svc

        svc.list_users(db) if hasattr(svc, "list_users") else None
        objects += [db, getattr(db, "engine", None)]
    cache = make_cache(settings, listen=False)
    try:
        cache.backend.stats()
        objects += [cache, cache.backend]
    finally:
        cache.close()
    with FakeOpenAI(api_key=world.values["openai_api_key"]) as fake:
        embedder = OpenAIEmbedder.from_settings(
            settings.model_copy(update={"openai_base_url": fake.url})
        )
        embedder.embed(["canary"])
        assert fake.requests[0].authorization == f"Bearer {world.values['openai_api_key']}"
        objects.append(embedder)
    wrong = settings.model_copy(update={"auth_token": None})
    errors: list[BaseException] = []
    try:
        with Database(wrong) as db:
            from autoforge_data.db.uow import UnitOfWork

            with UnitOfWork(db) as uow:
                uow.fetchone("SELECT 1")
    except AfdbError as exc:
        errors.append(exc)
    assert errors, "a missing token must fail against a JWT sqld"
    for obj in objects + errors:
        world.scanner.text(f"repr of {type(obj).__name__}", repr(obj))
        world.scanner.text(f"str of {type(obj).__name__}", str(obj))
    world.scanner.text("model_dump_json", settings.model_dump_json())
    world.scanner.text("DEBUG log records", "\n".join(r.getMessage() for r in caplog.records))
    assert not _new_findings(world, before)


def test_embedded_backups_and_replication(world: World) -> None:
    """Embedded file with an encryption key: backups (manifests), Redis backup and Litestream
    when those commands exist; their output, children's command lines and files are clean."""
    before = len(world.scanner.findings)
    env = {k: v for k, v in world.env.items() if k != "AFDB_DATABASE_URL"}
    env |= {
        "AFDB_DATA_DIR": str(world.root / "embedded"),
        "AFDB_ENCRYPTION_KEY": world.values["encryption_key"],
    }
    runs = [["init"], ["users", "add", "emb@example.com", "emb"]]
    if _has_command("backup", "create"):
        runs += [["backup", "create", "--name", "canary"], ["backup", "list"]]
    if _has_command("backup", "redis"):
        runs.append(["backup", "redis", "--url", world.redis.url, "--to", str(world.root / "rdb")])
    with ProcWatcher(world.scanner) as watcher:
        outputs = {" ".join(a): _afdb(world, a, env) for a in runs}
        if _has_command("replicate"):
            outputs["replicate"] = _replicate_briefly(world, env)
    assert outputs["init"].startswith("exit 0"), outputs["init"]
    for name, out in outputs.items():
        world.scanner.text(f"afdb {name}", out)
    if "backup create --name canary" in outputs:
        assert outputs["backup create --name canary"].startswith("exit 0")
        manifests = list((world.root / "backups").rglob("*"))
        assert manifests, "backup create wrote nothing to scan"
    assert watcher.seen
    assert not _new_findings(world, before)


def _replicate_briefly(world: World, env: dict[str, str]) -> str:
    """Run `afdb replicate` (Litestream child) for a few seconds, then stop it with SIGTERM."""
    log = world.root / "replicate.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [AFDB, "replicate", "--to", f"file://{world.root / 'replica'}"],
            env=env,
            cwd=world.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        time.sleep(6)  # long enough for the supervisor to start litestream (watched meanwhile)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return f"exit {proc.returncode}\n{log.read_text(errors='replace')}"


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "afdb serve exited"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError("afdb serve did not answer")


def test_app_surfaces_and_faults(world: World) -> None:
    """Health, /metrics, /openapi.json, error bodies; then Redis down and sqld down."""
    before = len(world.scanner.findings)
    key = world.scanner.secrets.get("api key")
    port = free_port()
    log = world.root / "serve.log"
    with ProcWatcher(world.scanner), log.open("wb") as out:
        proc = subprocess.Popen(
            [AFDB, "serve", "--port", str(port)],
            env=world.env,
            cwd=world.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_http(f"{base}/health/live", proc)
            bodies = _drive_app(base, key)
            world.redis.stop()
            bodies["ready, redis down"] = httpx.get(f"{base}/health/ready", timeout=10)
            world.sqld.stop()
            bodies["ready, sqld down"] = httpx.get(f"{base}/health/ready", timeout=10)
            bodies["database, sqld down"] = httpx.get(f"{base}/health/database", timeout=10)
            auth = {"Authorization": f"Bearer {key}"} if key else {}
            bodies["users, sqld down"] = httpx.get(f"{base}/api/v1/users", headers=auth, timeout=30)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert bodies["ready, sqld down"].status_code == 503
    assert bodies["openapi"].status_code == 200 and bodies["live"].status_code == 200
    assert bodies["no key"].status_code == 401 and bodies["bad key"].status_code == 401
    if key:  # the admin key from the CLI test really opened the API
        assert bodies["users"].status_code == 200 and bodies["ops cache"].status_code == 200
    print({name: r.status_code for name, r in bodies.items()})
    if importlib.util.find_spec("autoforge_data.api.metrics") is not None:
        assert bodies["metrics"].status_code == 200
    for name, response in bodies.items():
        world.scanner.text(f"HTTP {name} ({response.status_code})", response.content)
        world.scanner.text(f"HTTP {name} headers", str(response.headers))
    world.scanner.text("afdb serve output", log.read_bytes())
    assert not _new_findings(world, before)


def _drive_app(base: str, key: str | None) -> dict[str, httpx.Response]:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    bad = {"Authorization": "Bearer cnry-not-a-key"}
    get = {
        "live": "/health/live",
        "ready": "/health/ready",
        "database": "/health/database",
        "metrics": "/metrics",
        "openapi": "/openapi.json",
        "index": "/",
        "not found route": "/no/such/route",
        "missing prompt": "/api/v1/prompts/01J0000000000000000000000A",
        "ops cache": "/api/v1/ops/cache",
        "ops index": "/api/v1/ops/index",
        "ops backups": "/api/v1/ops/backups",
    }
    out = {name: httpx.get(base + path, headers=auth, timeout=30) for name, path in get.items()}
    out["no key"] = httpx.get(f"{base}/api/v1/users", timeout=30)
    out["bad key"] = httpx.get(f"{base}/api/v1/users", headers=bad, timeout=30)
    out["users"] = httpx.get(f"{base}/api/v1/users", headers=auth, timeout=30)
    out["invalid body"] = httpx.post(
        f"{base}/api/v1/prompts", headers=auth, json={"title": 5}, timeout=30
    )
    out["too large"] = httpx.post(
        f"{base}/api/v1/users", headers=auth, content=b"{" + b" " * 2_000_000, timeout=30
    )
    out["backup via the API"] = httpx.post(f"{base}/api/v1/ops/backups", headers=auth, timeout=60)
    out["metrics after"] = httpx.get(f"{base}/metrics", timeout=30)
    return out


def test_files_left_behind(world: World) -> None:
    """Every file the run wrote (logs, data, snapshots, status) holds no canary in plaintext."""
    before = len(world.scanner.findings)
    count = world.scanner.files(world.root, skip=world.allowed)
    assert count > 5
    assert not _new_findings(world, before)
