"""A local S3-compatible server for the backup tests: moto's server mode on a free loopback port.

moto (``moto[server]`` from PyPI) implements the S3 API in process; its server mode speaks real
HTTP, so boto3 goes through its whole client stack (signing, multipart upload, pagination).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from servers import Proc, free_port

ACCESS_KEY = "afdb-test-key"
SECRET_KEY = "afdb-test-secret"  # moto accepts any credentials


@dataclass
class S3Server:
    """A running moto server and the settings that reach it."""

    proc: Proc
    url: str

    def settings_overrides(self, bucket: str, prefix: str = "backups") -> dict[str, object]:
        """Settings fields that point backups at ``s3://bucket/prefix`` on this server."""
        return {
            "backup_url": f"s3://{bucket}/{prefix}",
            "s3_endpoint_url": self.url,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
        }

    def create_bucket(self, bucket: str) -> None:
        """Create a bucket through the S3 API."""
        import boto3  # type: ignore[import-untyped]

        boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket=bucket)

    def stop(self) -> None:
        """Stop the server."""
        self.proc.stop()


def start_s3(tmp: Path) -> S3Server:
    """Start ``moto_server`` on 127.0.0.1:<free port> and wait until it listens."""
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which(
        "moto_server"
    )
    if binary is None:
        raise RuntimeError("moto_server missing: pip install 'moto[server]' (make test does)")
    workdir = tmp / "moto"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = Proc(
        argv=[binary, "-H", "127.0.0.1", "-p", str(port)],
        port=port,
        workdir=workdir,
        log=workdir / "moto.log",
    )
    proc.start()
    return S3Server(proc, f"http://127.0.0.1:{port}")
