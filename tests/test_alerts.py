"""Alert rules: valid for promtool, proven by promtool's unit tests, and on metrics we export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from autoforge_data.db.engine import Database
from autoforge_data.observability import GAUGES
from conftest import settings_for
from obs_helpers import app_client, samples

PROM = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: run scripts/ensure-promtool"
)


def _promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_and_config_are_valid() -> None:
    """`promtool check rules` and `promtool check config` accept the files."""
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_rule_unit_tests_pass() -> None:
    """promtool's unit tests: each alert fires where it should and nowhere else."""
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("< 0.7", "< 0.4"),  # the hit-ratio threshold
        ("for: 10m", "for: 30m"),  # how long the ratio must stay low
        ("> 1.5 * afdb_backup_interval_seconds", "> 3 * afdb_backup_interval_seconds"),
    ],
)
def test_unit_tests_notice_a_changed_rule(tmp_path: Path, old: str, new: str) -> None:
    """Sensitivity arm: with a threshold or duration changed, the unit tests fail."""
    text = (PROM / "alerts.yml").read_text()
    assert old in text
    (tmp_path / "alerts.yml").write_text(text.replace(old, new, 1))
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0


def test_rules_use_metrics_the_app_exports(tmp_path: Path) -> None:
    """Every afdb_* name in the rules is one /metrics serves (or a gauge set by a probe)."""
    settings = settings_for("embedded", tmp_path)
    with Database(settings) as db, app_client(settings, db) as client:
        client.get("/api/v1/search", params={"q": "release notes"})
        client.get("/api/v1/search", params={"q": "release notes"})
        exported = {name for name, _, _ in samples(client.get("/metrics").text)}
    exported |= set(GAUGES)
    used = set(re.findall(r"\bafdb_[a-z0-9_]+", (PROM / "alerts.yml").read_text()))
    assert used, "no afdb metric in the rules"
    missing = sorted(used - exported)
    assert not missing, f"rules use metrics nobody exports: {missing}"
