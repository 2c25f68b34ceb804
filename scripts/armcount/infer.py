"""Guest side of scripts/arm_count.py: runs inside the emulated aarch64 Python under qemu-aarch64 with the
instruction-count plugin. Loads one export with Session(threads=1) and runs it `runs` times on one fixed input.

    python3.11 infer.py MODEL RUNS SEQ

The input is fixed (seeded token ids, no padding) so two processes execute the same instructions; the counts of
RUNS=1 and RUNS=N differ by exactly N-1 inferences, which is how the caller separates load from inference.
"""
import sys

import numpy as np

from bebert_deploy.runtime.session import Session


def main():
    model, runs, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = Session(model, threads=1)
    ids = np.random.RandomState(0).randint(1000, 20000, size=(1, seq)).astype(np.int64)
    ids[0, 0], ids[0, -1] = 101, 102  # [CLS] ... [SEP]
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    out = {}
    for _ in range(runs):
        out = s.run(feed)
    print("isa", s.isa, "probs", " ".join(f"{p:.6f}" for p in np.ravel(out.get("probs", []))), file=sys.stderr)


if __name__ == "__main__":
    main()
