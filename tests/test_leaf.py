"""Issue 14 (runtime items): the device side is a torch-free leaf.

`runtime/` may import, from the rest of bebert_deploy, only the leaf modules below (tokenizer, task specs,
metrics, atomic io, environment facts), and those import nothing but the standard library, numpy, tokenizers and
each other; no import cycle inside `runtime/`. The CLI's `predict`, `bench` and `bench-kernels` run with torch, onnx, tensorflow
and transformers blocked in every process (the bench workers included).
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from test_reliability import exports  # noqa: F401  (the small exported files, a module-scoped fixture)

ROOT = Path(__file__).resolve().parents[1]
# The torch-free core modules the runtime may use (import name -> file).
LEAF = {
    "bebert_deploy.env": ROOT / "bebert_deploy" / "env.py",
    "bebert_deploy.io": ROOT / "bebert_deploy" / "io.py",
    "bebert_deploy.tokenizer": ROOT / "bebert_deploy" / "tokenizer.py",
    "bebert_deploy.data.metrics": ROOT / "bebert_deploy" / "data" / "metrics.py",
    "bebert_deploy.data.tasks": ROOT / "bebert_deploy" / "data" / "tasks.py",
}
LEAF_THIRD_PARTY = {"numpy", "tokenizers"}
BLOCKED = ("torch", "onnx", "tensorflow", "transformers")


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count); relative imports are
    resolved against the runtime package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            out.add(f"bebert_deploy.runtime.{node.module}" if node.level else node.module)
    return out


def test_runtime_imports_only_the_leaf():
    for path in sorted((ROOT / "runtime").glob("*.py")):
        core = {m for m in imports(path) if m.startswith("bebert_deploy.") and not m.startswith("bebert_deploy.runtime")}
        assert core <= set(LEAF), f"{path.name} imports {sorted(core - set(LEAF))}, outside the torch-free leaf"


def test_leaf_modules_need_only_numpy_and_tokenizers():
    for name, path in LEAF.items():
        for m in imports(path):
            top = m.split(".")[0]
            ok = top in sys.stdlib_module_names or top in LEAF_THIRD_PARTY or m in LEAF
            assert ok, f"leaf module {name} imports {m}"


def test_no_import_cycle_inside_runtime():
    graph = {p.stem: {m.rsplit(".", 1)[-1] for m in imports(p) if m.startswith("bebert_deploy.runtime.")}
             for p in (ROOT / "runtime").glob("*.py")}

    def visit(node, path):
        assert node not in path, f"import cycle: {' -> '.join(path + [node])}"
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node])

    for node in graph:
        visit(node, [])


def test_predict_and_bench_run_with_torch_onnx_tensorflow_transformers_blocked(exports, tmp_path):  # noqa: F811
    # sitecustomize runs at the start of every Python process with this PYTHONPATH: the CLI and its bench workers.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError(f"{{name}} is blocked: the runtime must not need it")
        sys.meta_path.insert(0, _Block())
    """))
    env = {**os.environ, "PYTHONPATH": str(site)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bebert_deploy.cli", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert probe.returncode == 1 and "torch is blocked" in probe.stderr  # the blocker is active
    for name in ("custom.onnx", "builtin.onnx", "custom.tflite", "builtin.tflite"):
        r = cli("predict", str(exports / name), "good great movie", "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        assert {a["label"] for a in json.loads(r.stdout)} <= {"rotten", "fresh"}
    out = tmp_path / "bench.json"
    r = cli("bench", str(exports / "custom.onnx"), str(exports / "custom.tflite"), "--baseline",
            str(exports / "builtin.onnx"), "--runs", "2", "--warmup", "1", "--seq-len", "8", "--threads", "1",
            "--json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["model"] for row in rows] == ["builtin.onnx", "custom.onnx", "custom.tflite"]
    assert rows[0]["metrics"]["agreement_with_baseline"] == 1.0  # the baseline agrees with itself
    assert all(0.0 <= row["metrics"]["agreement_with_baseline"] <= 1.0 and row["p50_ms"] > 0 for row in rows)
    # bench-kernels builds its ONNX Runtime baseline graphs without the onnx package
    kjson = tmp_path / "kernels.json"
    r = cli("bench-kernels", "--quick", "--runs", "2", "--json", str(kjson))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(kjson.read_text())
