"""The Raspberry Pi path under qemu-user: an aarch64 Python with the aarch64 onnxruntime and ai-edge-litert wheels
and our NEON op libraries runs `predict` and `bench` on ONNX and TFLite models exported here, matching the x86
outputs (scripts/pi-emulated.sh).
Required in CI (BEBERT_REQUIRE_ARM=1, root); elsewhere it is skipped with the reason shown by pytest -ra."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bebert_deploy.exporters.export import export

ROOT = Path(__file__).resolve().parents[1]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (apt-get download, unshare, mount)"
    for tool in ("qemu-aarch64", "aarch64-linux-gnu-g++-12", "apt-get", "unshare"):
        if not shutil.which(tool):
            return f"{tool} not found"
    return None


@pytest.mark.arm
@pytest.mark.slow
def test_pi_path_under_qemu(tiny_ckpt, tmp_path):
    why = _missing()
    if why:
        if os.environ.get("BEBERT_REQUIRE_ARM") == "1":
            pytest.fail(f"emulated aarch64 run required but unavailable: {why}")
        pytest.skip(why)
    models = [export(tiny_ckpt, tmp_path / "ens-custom.onnx", "onnx", "binary", "custom"),
              export(tiny_ckpt, tmp_path / "ens-builtin.onnx", "onnx", "binary", "builtin"),
              export(tiny_ckpt, tmp_path / "ens-custom.tflite", "tflite", "binary", "custom"),
              export(tiny_ckpt, tmp_path / "ens-builtin.tflite", "tflite", "binary", "builtin")]
    res = subprocess.run([str(ROOT / "scripts/pi-emulated.sh"), *map(str, models)], capture_output=True, text=True,
                         timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("labels identical: True") == 4
    # our NEON kernels in ONNX Runtime (both ONNX files hold bebert ops or none) and in LiteRT; XNNPACK for stock TFLite
    assert res.stdout.count("bench ran under aarch64 isa neon") == 3
    assert res.stdout.count("bench ran under aarch64 isa xnnpack") == 1
