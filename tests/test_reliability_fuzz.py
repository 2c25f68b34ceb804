"""Issue 17: the custom ops' argument checks and kernels fuzzed under AddressSanitizer and
UndefinedBehaviorSanitizer (runtime/kernels/fuzz/run_fuzz.sh: libFuzzer for a bounded time, then the C++ kernel
test once under the same sanitizers). Needs clang++ (CI installs it); BEBERT_FUZZ_SECONDS sets the fuzzing time."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "runtime" / "kernels" / "fuzz" / "run_fuzz.sh"


@pytest.mark.skipif(shutil.which("clang++") is None,
                    reason="clang++ not installed: the sanitizer fuzz run needs it (apt-get install clang)")
def test_op_fuzzing_under_sanitizers_finds_nothing():
    seconds = os.environ.get("BEBERT_FUZZ_SECONDS", "60")
    r = subprocess.run(["bash", str(SCRIPT), seconds], capture_output=True, text=True, timeout=int(seconds) + 600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert f"fuzz: no findings in {seconds}s" in r.stdout
    assert "kernel test under ASan+UBSan: ok" in r.stdout
