"""Versioned BEBERT checkpoints.

A checkpoint is a directory:
  bebert.json              format name + version, task, labels, max_len, member arch + quant config, the
                           member list (file, alpha, training error), vote rule, teacher entry, provenance
  member_<i>.safetensors   one file per ensemble member (the fake-quant training weights, float32)
  teacher.safetensors      the full-precision fine-tuned model (the export baseline), optional
  tokenizer files          tokenizer.json / vocab.txt ... copied from the base model
Loading checks the format name and version, every file's presence and that tensors match the declared arch,
and raises CheckpointError with a one-line message otherwise.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT_NAME = "bebert-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "bebert.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or of another format version."""


@dataclass
class MemberEntry:
    file: str
    alpha: float
    train_error: float | None = None
    dev: dict = field(default_factory=dict)


@dataclass
class Manifest:
    """The content of bebert.json (see module docstring)."""

    task: str
    labels: list[str] | None
    max_len: int
    arch: dict
    quant: dict
    members: list[MemberEntry]
    vote: str = "soft"
    member_type: str = "binarybert"      # QuantConfig.member_type of every member: 'binarybert' | 'bibert' | ...
    teacher: dict | None = None          # {"file": ..., "arch": {...}} of the full-precision model
    provenance: dict = field(default_factory=dict)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate ``path``/bebert.json (no tensors loaded)."""
    d = Path(path)
    f = d / MANIFEST
    if not d.exists():
        raise CheckpointError(f"checkpoint not found: {d}")
    if not f.is_file():
        raise CheckpointError(f"{d} is not a BEBERT checkpoint (no {MANIFEST})")
    try:
        raw = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: corrupt manifest ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{f}: not a {FORMAT_NAME} manifest")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{f}: checkpoint format version {raw.get('format_version')} is not supported "
                              f"(this bebert-deploy reads version {FORMAT_VERSION})")
    try:
        raw["members"] = [MemberEntry(**m) for m in raw["members"]]
        man = Manifest(**raw)
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"{f}: malformed manifest ({e})") from None
    if not man.members:
        raise CheckpointError(f"{f}: no members")
    for m in man.members:
        if not (d / m.file).is_file():
            raise CheckpointError(f"{d}: member file {m.file} is missing")
    if man.teacher and not (d / man.teacher["file"]).is_file():
        raise CheckpointError(f"{d}: teacher file {man.teacher['file']} is missing")
    return man


def load_tensors(path: Path) -> dict:
    """safetensors -> {name: torch.Tensor}; CheckpointError on a corrupt file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise CheckpointError(f"{path}: corrupt safetensors file ({str(e).splitlines()[0]})") from None


def shared_names(model) -> list[list[str]]:
    """Groups of state-dict names that reach one tensor (Q, K and V sharing one input quantizer), in order."""
    groups: dict = {}
    for k, v in model.state_dict().items():
        if v.numel():
            groups.setdefault((v.data_ptr(), v.dtype, tuple(v.shape)), []).append(k)
    return [g for g in groups.values() if len(g) > 1]


def _state_tensors(model) -> dict:
    """A module's state dict as safetensors stores it: {name: contiguous tensor}. A tensor reached under several
    names is written under each name, as copies, because safetensors refuses shared storage; loading ties the
    copies back into the one module (and refuses copies that differ)."""
    out = {k: v.contiguous() for k, v in model.state_dict().items()}
    for group in shared_names(model):
        for k in group[1:]:
            out[k] = out[k].clone()
    return out


def save_checkpoint(out_dir: str | Path, members, alphas, task, max_len: int, tokenizer_dir: str | Path,
                    vote: str = "soft", teacher=None, provenance: dict | None = None,
                    member_info: list[dict] | None = None) -> Path:
    """Write a checkpoint atomically (temporary folder, then rename). members: BertClassifier list."""
    from safetensors.torch import save_file

    from bebert_deploy.io import atomic_path, current_umask

    out_dir = Path(out_dir)
    entries = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        for i, (m, a) in enumerate(zip(members, alphas)):
            name = f"member_{i}.safetensors"
            save_file(_state_tensors(m), str(tmp / name))
            info = (member_info or [{}] * len(members))[i]
            entries.append(MemberEntry(name, float(a), info.get("train_error"), info.get("dev", {})))
        t_entry = None
        if teacher is not None:
            save_file(_state_tensors(teacher), str(tmp / "teacher.safetensors"))
            t_entry = {"file": "teacher.safetensors", "arch": asdict(teacher.arch)}
        from bebert_deploy.tokenizer import TOKENIZER_FILES

        for fn in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / fn
            if src.is_file():
                shutil.copy(src, tmp / fn)
        prov = dict(provenance or {})
        prov.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        man = Manifest(task=task.name, labels=None if task.labels is None else list(task.labels), max_len=max_len,
                       arch=asdict(members[0].arch), quant=asdict(members[0].quant), members=entries, vote=vote,
                       member_type=members[0].quant.member_type, teacher=t_entry, provenance=prov)
        (tmp / MANIFEST).write_text(man.to_json())
        # safetensors writes through its own owner-only temporary file: give every file what the umask allows
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~current_umask())
    return out_dir


@dataclass
class LoadedCheckpoint:
    path: Path
    manifest: Manifest
    members: list            # BertClassifier, eval mode
    teacher: object | None


def load_checkpoint(path: str | Path, members: list[int] | None = None, with_teacher: bool = True) -> LoadedCheckpoint:
    """Load a checkpoint's members (all, or the given 0-based indices) and teacher as eval-mode modules."""
    import torch

    from bebert_deploy.models.bert import BertArch, BertClassifier, QuantConfig

    d = Path(path)
    man = read_manifest(d)
    idx = list(range(len(man.members))) if members is None else members
    for i in idx:
        if not 0 <= i < len(man.members):
            raise CheckpointError(f"member {i} out of range: {d} has {len(man.members)} members (0..{len(man.members) - 1})")
    try:
        arch, quant = BertArch(**man.arch), QuantConfig(**man.quant)
    except TypeError as e:
        raise CheckpointError(f"{d / MANIFEST}: bad arch/quant ({e})") from None

    def build(a, q, file):
        m = BertClassifier(a, q)
        tensors = load_tensors(d / file)
        try:
            m.load_state_dict(tensors)
        except RuntimeError as e:
            raise CheckpointError(f"{d / file}: tensors do not match the declared model ({str(e).splitlines()[0]})") from None
        for group in shared_names(m):  # one module under several names (Q/K/V's input quantizer): equal copies only
            bad = next((k for k in group[1:] if not torch.equal(tensors[k], tensors[group[0]])), None)
            if bad:
                raise CheckpointError(f"{d / file}: tensor {bad} differs from {group[0]}, which the model shares it with")
        return m.eval()

    loaded = [build(arch, quant, man.members[i].file) for i in idx]
    teacher = None
    if with_teacher and man.teacher:
        from bebert_deploy.models.bert import FP_QUANT

        teacher = build(BertArch(**man.teacher["arch"]), FP_QUANT, man.teacher["file"])
    return LoadedCheckpoint(d, man, loaded, teacher)
