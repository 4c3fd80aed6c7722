"""The backup file format: compression, streamed authenticated encryption, the signed manifest.

A backup is two objects: the data (``<name>.afdb``: the snapshot, compressed, optionally
encrypted) and its manifest (``<name>.manifest.json``), written after the data, so a manifest
names only complete data. The manifest is signed with HMAC-SHA256 (``AFDB_BACKUP_HMAC_KEY``, or
a random key generated once into ``<data dir>/backup-hmac.key``, mode 0600).

Encryption (``AFDB_BACKUP_ENCRYPTION_KEY``): AES-256-GCM over 1 MiB chunks, streamed (a
multi-GB file never sits in memory). Per file a random 16-byte salt; the chunk key is
HKDF-SHA256(secret, salt). Each chunk has its own random 96-bit nonce, and its associated data
binds the file header, the chunk index and a final-chunk flag: a flipped byte, a reordered,
dropped or appended chunk, and a truncated file all fail to decrypt.

Layout of an encrypted stream: ``AFDBENC1`` + salt(16), then per chunk: length(4, big endian)
+ nonce(12) + ciphertext with tag, the last chunk flagged final.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from autoforge_data.errors import Corrupt, InvalidInput
from autoforge_data.fsutil import ensure_private_dir

FORMAT_VERSION = 1
CHUNK = 1 << 20
MAGIC = b"AFDBENC1"
_SALT = 16
_NONCE = 12
_TAG = 16
COMPRESSIONS = ("zstd", "gzip", "none")
HMAC_KEY_FILE = "backup-hmac.key"


# --- manifest ------------------------------------------------------------------------------------


@dataclass
class Manifest:
    """What a backup holds and how to read it; signed as a whole (``hmac``)."""

    name: str
    created_at: str  # ISO 8601 UTC
    profile: str
    size_bytes: int  # of the stored data object
    sha256: str  # of the stored data object
    raw_size_bytes: int  # of the database file
    raw_sha256: str  # of the database file
    compression: str
    encrypted: bool
    migration: str | None
    models: list[str] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    method: str = ""
    db_encrypted: bool = False  # the database file itself uses libSQL's at-rest encryption
    format_version: int = FORMAT_VERSION
    hmac: str = ""

    def payload(self) -> bytes:
        """The canonical bytes the HMAC covers (everything but the HMAC)."""
        body = asdict(self)
        body.pop("hmac")
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def sign(self, key: bytes) -> None:
        """Set ``hmac`` from the key."""
        self.hmac = hmac.new(key, self.payload(), hashlib.sha256).hexdigest()

    def check(self, key: bytes) -> None:
        """Raise Corrupt unless the HMAC matches (constant-time compare)."""
        want = hmac.new(key, self.payload(), hashlib.sha256).hexdigest()
        if not self.hmac or not hmac.compare_digest(want, self.hmac):
            raise Corrupt(
                f"the manifest of backup {self.name!r} fails its HMAC check",
                hint="the manifest was changed, or AFDB_BACKUP_HMAC_KEY differs from the one "
                "that signed it",
            )

    def to_bytes(self) -> bytes:
        """The manifest as pretty JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes, name: str) -> Manifest:
        """Parse a manifest; anything malformed is Corrupt."""
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise TypeError("not an object")
            if body.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {body.get('format_version')!r}")
            return cls(**body)
        except (ValueError, TypeError) as exc:
            raise Corrupt(f"the manifest of backup {name!r} is malformed: {exc}"[:300]) from None


def load_hmac_key(secret: str | None, data_dir: Path) -> bytes:
    """The manifest signing key: the setting, else a random key kept in a 0600 file."""
    if secret:
        return hashlib.sha256(b"afdb-backup-hmac\x00" + secret.encode()).digest()
    path = data_dir / HMAC_KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read_key_file(path)
    ensure_private_dir(data_dir)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)  # another process created it first
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    text = path.read_text().strip()
    if len(text) != 64:
        raise InvalidInput(
            f"{path} does not hold a 64-hex-digit key",
            hint="delete it to generate a new one (old backups then fail their HMAC), or set "
            "AFDB_BACKUP_HMAC_KEY",
        )
    return hashlib.sha256(b"afdb-backup-hmac\x00" + text.encode()).digest()


# --- compression ---------------------------------------------------------------------------------


class _Compressor:
    """A streaming compressor with one interface for zstd, gzip and none."""

    def __init__(self, kind: str, level: int) -> None:
        self.kind = kind
        self._obj: Any = None
        if kind == "zstd":
            import zstandard

            self._obj = zstandard.ZstdCompressor(level=level).compressobj()
        elif kind == "gzip":
            self._obj = zlib.compressobj(max(0, min(level, 9)), zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        """Compress a piece (may return nothing yet)."""
        return data if self._obj is None else bytes(self._obj.compress(data))

    def flush(self) -> bytes:
        """Whatever is left at the end."""
        return b"" if self._obj is None else bytes(self._obj.flush())


def _decompressor(kind: str) -> Any:
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()
    if kind == "gzip":
        return zlib.decompressobj(31)
    return None


# --- encryption ----------------------------------------------------------------------------------


def _chunk_key(secret: str, salt: bytes) -> AESGCM:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"afdb-backup-v1")
    return AESGCM(kdf.derive(secret.encode()))


def _aad(salt: bytes, index: int, final: bool) -> bytes:
    return MAGIC + salt + struct.pack(">QB", index, 1 if final else 0)


class _Encryptor:
    """Buffers plaintext into CHUNK-sized pieces and emits sealed chunks."""

    def __init__(self, secret: str) -> None:
        self.salt = secrets.token_bytes(_SALT)
        self._aes = _chunk_key(secret, self.salt)
        self._buf = bytearray()
        self._index = 0
        self.header = MAGIC + self.salt

    def _seal(self, data: bytes, final: bool) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._aes.encrypt(nonce, data, _aad(self.salt, self._index, final))
        self._index += 1
        return struct.pack(">I", len(sealed)) + nonce + sealed

    def update(self, data: bytes) -> bytes:
        """Seal every full chunk that is ready."""
        self._buf += data
        out = bytearray()
        while len(self._buf) > CHUNK:  # keep at least one byte back for the final chunk
            out += self._seal(bytes(self._buf[:CHUNK]), False)
            del self._buf[:CHUNK]
        return bytes(out)

    def finish(self) -> bytes:
        """Seal the rest as the final chunk (possibly empty)."""
        out = self._seal(bytes(self._buf), True)
        self._buf.clear()
        return out


def _decrypted_chunks(src: IO[bytes], secret: str) -> Iterator[bytes]:
    """Yield plaintext chunks; any tampering, truncation or wrong key raises Corrupt."""
    head = src.read(len(MAGIC) + _SALT)
    if len(head) != len(MAGIC) + _SALT or not head.startswith(MAGIC):
        raise Corrupt("the backup is not an encrypted afdb backup (bad header)")
    salt = head[len(MAGIC) :]
    aes = _chunk_key(secret, salt)
    index = 0
    while True:
        size_raw = src.read(4)
        if len(size_raw) != 4:
            raise Corrupt("the encrypted backup is truncated (no final chunk)")
        (size,) = struct.unpack(">I", size_raw)
        if size < _TAG or size > CHUNK + _TAG:
            raise Corrupt("the encrypted backup is damaged (bad chunk length)")
        nonce = src.read(_NONCE)
        sealed = src.read(size)
        if len(nonce) != _NONCE or len(sealed) != size:
            raise Corrupt("the encrypted backup is truncated")
        plain, final = _open_chunk(aes, nonce, sealed, salt, index)
        yield plain
        index += 1
        if final:
            if src.read(1):
                raise Corrupt("the encrypted backup has data after its final chunk")
            return


def _open_chunk(
    aes: AESGCM, nonce: bytes, sealed: bytes, salt: bytes, index: int
) -> tuple[bytes, bool]:
    for final in (False, True):
        with contextlib.suppress(InvalidTag):
            return aes.decrypt(nonce, sealed, _aad(salt, index, final)), final
    raise Corrupt(
        f"chunk {index} of the encrypted backup fails authentication",
        hint="wrong AFDB_BACKUP_ENCRYPTION_KEY, or the file was changed or reordered",
    )


# --- encode / decode -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """Sizes and digests of one encode pass."""

    raw_size: int
    raw_sha256: str
    size: int
    sha256: str


def encode(
    src: Path, dst: IO[bytes], *, compression: str, level: int, secret: str | None
) -> Encoded:
    """Stream ``src`` through compression (and encryption) into ``dst``; digests on the way."""
    raw_hash, out_hash = hashlib.sha256(), hashlib.sha256()
    raw_size = out_size = 0
    comp = _Compressor(compression, level)
    enc = _Encryptor(secret) if secret else None

    def emit(data: bytes) -> None:
        nonlocal out_size
        if data:
            dst.write(data)
            out_hash.update(data)
            out_size += len(data)

    if enc is not None:
        emit(enc.header)
    with open(src, "rb") as fh, ThreadPoolExecutor(1) as pool:
        while piece := fh.read(CHUNK):
            hashed = pool.submit(raw_hash.update, piece)  # hashlib and zstd release the GIL
            raw_size += len(piece)
            packed = comp.compress(piece)
            emit(enc.update(packed) if enc else packed)
            hashed.result()
    tail = comp.flush()
    emit((enc.update(tail) + enc.finish()) if enc else tail)
    return Encoded(raw_size, raw_hash.hexdigest(), out_size, out_hash.hexdigest())


def decode(src: IO[bytes], dst: IO[bytes], *, compression: str, secret: str | None) -> Encoded:
    """Reverse :func:`encode` from ``src`` into ``dst``; damage raises Corrupt."""
    raw_hash = hashlib.sha256()
    raw_size = 0
    dec = _decompressor(compression)
    pieces = _decrypted_chunks(src, secret) if secret else iter(lambda: src.read(CHUNK), b"")
    try:
        for piece in pieces:
            out = piece if dec is None else dec.decompress(piece)
            if out:
                dst.write(out)
                raw_hash.update(out)
                raw_size += len(out)
        _check_complete(dec, compression)
    except Corrupt:
        raise
    except Exception as exc:  # zlib.error, zstandard.ZstdError: damaged compressed data
        raise Corrupt(f"the backup data cannot be decompressed: {exc}"[:300]) from None
    return Encoded(raw_size, raw_hash.hexdigest(), 0, "")


def _check_complete(dec: Any, compression: str) -> None:
    """A compressed stream must end where its format says (a cut-off file is Corrupt)."""
    if compression == "gzip" and not dec.eof:
        raise Corrupt("the backup data is truncated (gzip stream incomplete)")
    if compression == "zstd" and not dec.eof:
        raise Corrupt("the backup data is truncated (zstd frame incomplete)")


def file_sha256(path: Path) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(CHUNK):
            digest.update(piece)
    return digest.hexdigest()
