"""Shared fixtures: a tiny random BERT folder in Hugging Face layout and tiny GLUE-style data (no network)."""
import json
from pathlib import Path

import numpy as np
import pytest

WORDS = ("good great fine fun love best nice wonderful bad awful boring worst dull hate poor terrible "
         "movie film plot actor story the a is was and it this of").split()
POS = ["good", "great", "fine", "fun", "love", "best", "nice", "wonderful"]
NEG = ["bad", "awful", "boring", "worst", "dull", "hate", "poor", "terrible"]


def write_tiny_bert(folder: Path, hidden=32, layers=2, heads=4, inter=64, seed=0) -> Path:
    """A random BertModel saved by transformers itself, so our name mapping is tested against the real thing."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=inter, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(str(folder))
    return folder


def write_tiny_data(folder: Path, n_train=96, n_dev=32, n_test=32, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            lab = int(rng.integers(2))
            words = list(rng.choice(POS if lab else NEG, 2)) + list(rng.choice(WORDS[16:], 3))
            rng.shuffle(words)
            lines.append(" ".join(words) + "\t" + ("fresh" if lab else "rotten"))
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tiny_base, tiny_data) -> Path:
    """A 2-member TWS BEBERT checkpoint trained on the tiny data (two-stage KD exercises every loss)."""
    from bebert_deploy.config import BoostConfig, TrainConfig
    from bebert_deploy.training.pipeline import train_bebert

    out = tmp_path_factory.mktemp("ckpt") / "ck"
    cfg = TrainConfig(task="rotten-tomatoes", data_dir=str(tiny_data), base=str(tiny_base), max_len=16,
                      train_limit=None, dev_limit=None, batch_size=16, teacher_epochs=2, ternary_epochs=1,
                      member_epochs=1, kd="two_stage", lr=1e-3, teacher_lr=1e-3, boost=BoostConfig(members=2))
    train_bebert(cfg, out)
    return out
