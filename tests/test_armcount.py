"""The aarch64 instruction counter of scripts/arm_count.py: our qemu TCG plugin (scripts/armcount/insn_count.c)
is built and counts a tiny aarch64 program whose instruction count is known exactly. Counts, not timings.
Needs gcc, qemu-aarch64 and the aarch64 cross compiler; without them it is skipped with the reason shown by
pytest -ra, and BEBERT_REQUIRE_ARM=1 (CI) turns the skip into a failure."""
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# _start: x0 = N; loop: subs/b.ne (2 instructions per iteration); then exit_group(0) (3 instructions).
# Executed: 1 + 2 N + 3 = 2 N + 4 instructions, nothing else (no libc, static).
LOOP_S = """
    .global _start
_start:
    ldr x0, =ITERS
1:  subs x0, x0, #1
    b.ne 1b
    mov x8, #94
    mov x0, #0
    svc #0
"""


def _cross_cc() -> str | None:
    return shutil.which("aarch64-linux-gnu-gcc-12") or shutil.which("aarch64-linux-gnu-g++-12")


def _missing() -> str | None:
    for tool in ("qemu-aarch64", "gcc"):
        if not shutil.which(tool):
            return f"{tool} not found (apt-get install qemu-user gcc)"
    if not _cross_cc():
        return "aarch64 cross compiler not found (apt-get install g++-12-aarch64-linux-gnu)"
    return None


def _arm_count():
    spec = importlib.util.spec_from_file_location("arm_count", ROOT / "scripts/arm_count.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.arm
def test_plugin_counts_a_tiny_program_exactly(tmp_path):
    why = _missing()
    if why:
        if os.environ.get("BEBERT_REQUIRE_ARM") == "1":
            pytest.fail(f"aarch64 instruction counting required but unavailable: {why}")
        pytest.skip(why)
    ac = _arm_count()
    plugin = ac.build_plugin(tmp_path / "plugin")
    got = {}
    for iters in (1000, 100000):
        src = tmp_path / f"loop{iters}.S"
        src.write_text(LOOP_S.replace("ITERS", str(iters)))
        exe = tmp_path / f"loop{iters}"
        subprocess.run([_cross_cc(), "-nostdlib", "-static", "-o", str(exe), str(src)], check=True)
        for cpu in ("cortex-a72", "cortex-a76"):
            runs = [ac.count_insns([str(exe)], plugin, cpu) for _ in range(2)]
            assert runs[0] == runs[1] == 2 * iters + 4, (cpu, iters, runs)
            got[(iters, cpu)] = runs[0]
    # the load / per-inference separation of arm_count.py relies on counts being additive like this
    assert got[(100000, "cortex-a72")] - got[(1000, "cortex-a72")] == 2 * 99000


@pytest.mark.arm
def test_neon_kernels_match_scalar_at_model_shapes(tmp_path):
    """scripts/armcount/kernel_count.cc check: the NEON kernels equal the scalar ones bit for bit at M = 128 tokens
    (the kernel unit test stops at a few tokens, and the NEON lookup loop handles tokens in groups)."""
    why = _missing()
    if why:
        if os.environ.get("BEBERT_REQUIRE_ARM") == "1":
            pytest.fail(f"aarch64 kernel check required but unavailable: {why}")
        pytest.skip(why)
    exe = _arm_count().build_kernel_count(ROOT / "runtime/kernels", tmp_path)
    res = subprocess.run(["qemu-aarch64", "-cpu", "cortex-a72", str(exe), "check"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert " 0 mismatches" in res.stdout
