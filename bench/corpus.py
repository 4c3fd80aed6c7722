"""Build the vector-search benchmark corpus from text that ships with Python and the venv.

Deterministic: the same interpreter and installed packages give the same files, byte for byte.

Sources
  * ``pydoc_data.topics.topics`` (the language reference pages behind ``help()``), by paragraph;
  * docstrings of every module, class and function in the stdlib and the venv's site-packages.
    Modules are found with ``pkgutil.iter_modules`` (which never imports anything) and their
    docstrings read from the source with ``ast`` (``ast.get_docstring`` plus the strings that
    numpy/torch attach to C functions with ``add_newdoc``/``add_docstr``): no third-party code
    runs, so nothing prints, spawns, hangs or depends on import order. Only the stdlib's own
    C modules (builtins, ``lib-dynload``) are imported to read their docstrings, through an
    explicit deny list (tests, GUI, anything with import side effects).

Passages are 1-5 sentences and 200-800 characters, whitespace-normalised, deduplicated by the
SHA-256 of their text and ordered by it. The first ``--total`` (default 51,000) in hash order are
kept (a uniform, stable sample of the pool); a seeded shuffle of those picks the 1,000 held-out
queries, the rest (sorted by hash again) is the corpus. Every passage carries synthetic metadata
derived from its hash, one independent hash per field, for the benchmark's filter selectivities:

  status   active 50% / draft 25% / archived 25%      -> 50%
  topic    topic-0 .. topic-9                          -> 10% each
  lang     lang-00 .. lang-99                          -> 1% each
  owner    owner-0000 .. owner-0999                    -> 0.1% each
  created  a timestamp spread uniformly over 2024

Output (``bench/.cache/``): ``corpus.jsonl``, ``queries.jsonl`` (one JSON object a line:
``id`` (16 hex digits of the hash), ``text``, ``source``, ``metadata``) and ``manifest.json``
(counts, sources, the SHA-256 of both files: the embedding cache is keyed on it).

    .venv/bin/python bench/corpus.py            # ~1-3 minutes
    .venv/bin/python bench/corpus.py --total 60000 --queries 1000
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import inspect
import json
import os
import pkgutil
import random
import re
import sys
import sysconfig
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
SEED = 20240501
MIN_TOTAL = 51_000
MIN_CHARS, MAX_CHARS, MAX_SENTENCES = 200, 800, 5
YEAR_START = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
YEAR_SECONDS = 366 * 86_400

# Top-level names never read: tests, GUI and demo code, import side effects, and the vector
# engines the benchmark itself installs (so installing them does not change the corpus).
DENY_TOP = {
    "__main__", "__phello__", "antigravity", "this", "idlelib", "tkinter", "turtle",
    "turtledemo", "test", "tests", "testing", "lib2to3", "ensurepip", "venv", "pydoc_data",
    "_pytest", "pytest", "hypothesis", "_hypothesis_pytestplugin", "autoforge_data",
    "hnswlib", "faiss", "usearch", "usearch_binary", "simsimd", "stringzilla", "numkong",
    "psutil",
    "__pycache__", "site-packages", "dist-packages", "_distutils_hack", "_virtualenv",
}
# Package path parts that mark test, example or benchmark code anywhere in the tree.
DENY_PART = {
    "test", "tests", "testing", "_testing", "__pycache__", "examples", "benchmarks",
    "_vendor_tests", "idle_test", "test_data", "conftest",
}
# stdlib C modules not imported: GUI, test helpers, terminal state, anything that spawns.
DENY_C = {"_tkinter", "readline", "_curses", "_curses_panel", "antigravity", "this",
          "_xxsubinterpreters", "_xxinterpchannels", "xxlimited", "xxlimited_35", "xxsubtype",
          "_xxtestfuzz", "_ctypes_test"}
DOC_CALLS = {"add_newdoc", "add_docstr", "_add_docstr", "add_docstr_all", "add_newdoc_ufunc",
             "_add_newdoc_ufunc", "add_newdoc_for_scalar_type"}


# --------------------------------------------------------------------------- text -> passages

_UNDERLINE = re.compile(r"^\s*([-=~^*+#`'\"])\1{2,}\s*$", re.M)
_SENT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[`*])")
_WS = re.compile(r"\s+")


def _strip_doctests(text: str) -> str:
    """Drop doctest blocks: a ``>>>`` line and every line after it up to the next blank one."""
    out: list[str] = []
    in_block = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_block = True
        elif not stripped:
            in_block = False
        if not in_block:
            out.append(line)
    return "\n".join(out)


def _sentences(paragraph: str) -> list[str]:
    text = _WS.sub(" ", paragraph).strip()
    return [s.strip() for s in _SENT.split(text) if s.strip()] if text else []


def _good(passage: str) -> bool:
    """Natural-language passages only: no doctest code, no tables, mostly letters."""
    if ">>>" in passage or "..." in passage[:4] or "|" * 2 in passage:
        return False
    letters = sum(c.isalpha() or c == " " for c in passage)
    return letters / len(passage) >= 0.8


def passages(text: str) -> Iterator[str]:
    """Split a document into passages of 1-5 sentences, 200-800 characters.

    Sentences are packed greedily in order; a paragraph break ends a passage once it has
    reached 200 characters. A passage still short at the end of a document is dropped, and a
    single sentence over 800 characters is skipped.
    """
    text = _UNDERLINE.sub("", _strip_doctests(inspect.cleandoc(text)))
    buf: list[str] = []
    size = 0

    def flush() -> Iterator[str]:
        nonlocal buf, size
        if buf and size >= MIN_CHARS:
            out = " ".join(buf)
            if _good(out):
                yield out
        buf, size = [], 0

    for para in re.split(r"\n\s*\n", text):
        for sent in _sentences(para):
            if len(sent) > MAX_CHARS:
                yield from flush()
                continue
            if buf and (size + 1 + len(sent) > MAX_CHARS or len(buf) == MAX_SENTENCES):
                yield from flush()
            buf.append(sent)
            size += len(sent) + (1 if size else 0)
        if size >= MIN_CHARS:
            yield from flush()
    yield from flush()


# --------------------------------------------------------------------------- sources


def _doc_strings(tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) for a module, its classes and functions, and add_docstr."""
    doc = ast.get_docstring(tree, clean=False)
    if doc:
        yield "", doc
    stack: list[tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child, clean=False)
                if doc:
                    yield name, doc
                stack.append((name + ".", child))
            elif isinstance(child, ast.Call):
                func = child.func
                fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if fname in DOC_CALLS:
                    for arg in child.args:
                        for sub in ast.walk(arg):
                            if isinstance(sub, ast.Constant) and isinstance(sub.value, str) \
                                    and len(sub.value) >= MIN_CHARS:
                                yield f"{prefix}{fname}", sub.value
                else:
                    stack.append((prefix, child))
            else:
                stack.append((prefix, child))


def _module_files(root: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """Walk one directory with pkgutil (no imports): (dotted module name, source file)."""
    for info in sorted(pkgutil.iter_modules([str(root)]), key=lambda m: m.name):
        name = info.name
        if not prefix and name in DENY_TOP:
            continue
        if name in DENY_PART or name.startswith(("test_", "_test")) or name.endswith("_test"):
            continue
        dotted = f"{prefix}{name}"
        if info.ispkg:
            init = root / name / "__init__.py"
            if init.is_file():
                yield dotted, init
            yield from _module_files(root / name, dotted + ".")
        else:
            src = root / f"{name}.py"
            if src.is_file():
                yield dotted, src


def source_docs(root: Path, label: str) -> Iterator[tuple[str, str]]:
    """(source label, docstring) for every pure-Python module under one directory."""
    for dotted, path in _module_files(root):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError, RecursionError):
            continue
        for qual, doc in _doc_strings(tree):
            yield f"{label}:{dotted}{'.' + qual if qual else ''}", doc


def c_module_docs() -> Iterator[tuple[str, str]]:
    """Docstrings of the stdlib's builtin and lib-dynload C modules (imported: they are ours)."""
    names = set(sys.builtin_module_names)
    dynload = Path(sysconfig.get_paths()["platstdlib"]) / "lib-dynload"
    if dynload.is_dir():
        names |= {m.name for m in pkgutil.iter_modules([str(dynload)])}
    for name in sorted(names):
        if name in DENY_C or name.startswith(("_test", "_xx")) or name == "__main__":
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(name)
        except Exception:  # noqa: S112 - an unavailable optional C module is skipped
            continue
        yield from _object_docs(f"stdlib-c:{name}", mod, depth=0)


def _object_docs(label: str, obj: Any, depth: int) -> Iterator[tuple[str, str]]:
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    if doc:
        yield label, doc
    if depth >= 2:
        return
    try:
        members = sorted(vars(obj).items())
    except TypeError:
        return
    for key, value in members:
        if key.startswith("__") and key != "__init__":
            continue
        if inspect.isclass(value) or inspect.isroutine(value) or inspect.isgetsetdescriptor(value):
            yield from _object_docs(f"{label}.{key}", value, depth + 1)


def pydoc_topics() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"pydoc:{name}", topics[name]


# --------------------------------------------------------------------------- metadata


def _field(digest: bytes, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(digest, digest_size=8, person=name.encode()).digest())


def metadata(digest: bytes) -> dict[str, Any]:
    """Filterable metadata derived from the passage hash: one independent hash per field."""
    s = _field(digest, "status") % 4
    created = YEAR_START + _field(digest, "created") % YEAR_SECONDS
    return {
        "status": "active" if s < 2 else ("draft" if s == 2 else "archived"),
        "owner": f"owner-{_field(digest, 'owner') % 1000:04d}",
        "topic": f"topic-{_field(digest, 'topic') % 10}",
        "lang": f"lang-{_field(digest, 'lang') % 100:02d}",
        "created": created,
        "created_iso": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# --------------------------------------------------------------------------- build


def collect() -> tuple[dict[str, tuple[str, str]], Counter[str], dict[str, Any]]:
    """Every distinct passage: sha256 hex -> (text, source label). First source in walk order."""
    pool: dict[str, tuple[str, str]] = {}
    per_source: Counter[str] = Counter()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = Path(sysconfig.get_paths()["purelib"])
    plat = Path(sysconfig.get_paths()["platlib"])
    roots = [("stdlib", stdlib), ("site", site)] + ([("site", plat)] if plat != site else [])
    streams: list[tuple[str, Iterator[tuple[str, str]]]] = [
        ("pydoc_topics", pydoc_topics()),
        ("stdlib_c", c_module_docs()),
    ] + [(label, source_docs(path, label)) for label, path in roots]
    docs = 0
    for kind, stream in streams:
        for src, doc in stream:
            docs += 1
            for text in passages(doc):
                key = hashlib.sha256(text.encode()).hexdigest()
                if key not in pool:
                    pool[key] = (text, src)
                    per_source[kind] = per_source[kind] + 1
    from importlib import metadata as md

    found = md.distributions(path=[str(site)])
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in found}, key=str.lower)
    info = {"documents": docs, "stdlib": str(stdlib), "site_packages": str(site),
            "distributions": dists}
    return pool, per_source, info


def _row(key: str, text: str, src: str) -> dict[str, Any]:
    return {"id": key[:16], "text": text, "source": src,
            "metadata": metadata(bytes.fromhex(key))}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)
    return hashlib.sha256(data.encode()).hexdigest()


def build(total: int, n_queries: int, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    pool, per_source, info = collect()
    if len(pool) < total:
        raise SystemExit(f"only {len(pool)} distinct passages found, need {total}")
    keys = sorted(pool)[:total]  # hash order: a uniform, stable sample of the pool
    shuffled = keys[:]
    random.Random(SEED).shuffle(shuffled)
    query_keys = set(shuffled[:n_queries])
    queries = [_row(k, *pool[k]) for k in shuffled[:n_queries]]
    corpus = [_row(k, *pool[k]) for k in keys if k not in query_keys]
    out.mkdir(parents=True, exist_ok=True)
    corpus_sha = _write_jsonl(out / "corpus.jsonl", corpus)
    queries_sha = _write_jsonl(out / "queries.jsonl", queries)
    lengths = [len(r["text"]) for r in corpus]
    kinds = Counter(r["source"].split(":", 1)[0] for r in corpus + queries)
    manifest = {
        "corpus": len(corpus), "queries": len(queries), "pool": len(pool), "seed": SEED,
        "corpus_sha256": corpus_sha, "queries_sha256": queries_sha,
        "mean_chars": round(sum(lengths) / len(lengths), 1),
        "median_chars": sorted(lengths)[len(lengths) // 2],
        "pool_by_source": dict(per_source), "kept_by_source": dict(kinds),
        "python": sys.version.split()[0], "build_s": round(time.perf_counter() - t0, 1),
        **info,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--total", type=int, default=MIN_TOTAL, help="passages kept (corpus+queries)")
    ap.add_argument("--queries", type=int, default=1000, help="held-out query passages")
    ap.add_argument("--out", type=Path, default=CACHE, help="output folder")
    args = ap.parse_args()
    if args.total < MIN_TOTAL:
        ap.error(f"--total must be at least {MIN_TOTAL}")
    print(json.dumps(build(args.total, args.queries, args.out), indent=2))


if __name__ == "__main__":
    main()
