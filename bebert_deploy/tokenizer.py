"""WordPiece tokenization with the `tokenizers` library (no transformers, so the runtime side stays light)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def load_tokenizer(folder: str | Path):
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` or, failing that, an uncased ``vocab.txt``."""
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer

    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    if (folder / "vocab.txt").is_file():
        return BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True)
    raise FileNotFoundError(f"no tokenizer.json or vocab.txt in {folder}")


def encode(tokenizer, text_a: list[str], text_b: list[str] | None, max_len: int) -> dict[str, np.ndarray]:
    """Tokenize to fixed length: {'input_ids','attention_mask','token_type_ids'} int64 [n, max_len],
    plus 'truncated' bool [n] marking texts cut to fit."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    inputs = list(text_a) if text_b is None else list(zip(text_a, text_b))
    enc = tokenizer.encode_batch(inputs)
    n = len(enc)
    out = {k: np.zeros((n, max_len), np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    truncated = np.zeros(n, bool)
    for i, e in enumerate(enc):
        ids, types = e.ids, e.type_ids
        if len(ids) > max_len:
            truncated[i] = True
            ids = ids[:max_len - 1] + [ids[-1]]  # keep the final [SEP]
            types = types[:max_len - 1] + [types[-1]]
        out["input_ids"][i, :len(ids)] = ids
        out["token_type_ids"][i, :len(ids)] = types
        out["attention_mask"][i, :len(ids)] = 1
    out["truncated"] = truncated
    return out
