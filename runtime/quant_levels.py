"""LSQ integer levels: the one definition PyTorch training, the numpy reference and both exporters share.

Pure Python (no numpy, no torch) so the runtime side can import it without the training extras.
"""
from __future__ import annotations


def lsq_levels(bits: int, symmetric: bool) -> tuple[int, int]:
    """(qn, qp): the clamp range of a ``bits``-bit LSQ code, both Python ints.

    symmetric: [-2^(b-1), 2^(b-1) - 1] (two's complement range; zero is a level);
    asymmetric: [0, 2^b - 1] (codes counted up from the per-example minimum).
    """
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1
