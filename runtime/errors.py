"""The one exception type the runtime raises for a model it cannot load or run."""
from __future__ import annotations


class ModelError(ValueError):
    """A model file cannot be loaded or run, or gave no usable answer: unreadable or corrupt file, a failure
    inside ONNX Runtime or LiteRT (including our custom ops' argument checks), NaN or inf in ``probs`` /
    ``logits_<i>``. The message is one line that starts with the model's path, e.g.
    ``ens.onnx: ONNX Runtime failed to run the model: ... BinaryLinear: alpha holds NaN or inf``; the CLI prints
    it as ``error: <message>``. A ValueError, so callers that caught ValueError before keep working."""


def one_line(e: BaseException | str) -> str:
    """First non-empty line of an exception's text (native runtimes raise multi-line messages), or its type name."""
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__
