"""Model benchmark: size on disk, load time, latency percentiles, throughput, peak RSS and accuracy of exported
models against a baseline, all measured in one run.

Each model lives in its own worker process (so its peak RSS is its own and models cannot disturb each other's
memory), and the parent interleaves single runs across workers round-robin, so machine noise hits every model
alike (``order='interleaved'``, the default); ``order='blocked'`` times each model's runs back to back instead, as
a model serving a steady stream runs (interleaving leaves every model's weights and threads cold for its next run,
which costs models unevenly: on the development machine a 2-member ensemble was 1.44x the int8 file's time
interleaved and 1.25x back to back). Needs numpy, tokenizers and onnxruntime (and LiteRT for .tflite): no torch.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelError, one_line
from .session import INPUT_NAMES


@dataclass
class BenchConfig:
    """What `bebert-deploy bench` measures."""

    seq_len: int = 128
    batch: int = 1
    threads: int = 2
    warmup: int = 10
    runs: int = 100
    data: str | None = None          # GLUE-style TSV of the model's task: accuracy is measured on it
    data_limit: int | None = 500
    device_label: str = ""
    real_sentences: int = 100           # with data: latency over this many of its sentences, one at a time
    order: str = "interleaved"          # 'interleaved': one run per model in turn; 'blocked': each model's runs back to back


def _rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _peak_rss_mb() -> float:
    """Peak RSS of this process in MB: VmHWM (reset by exec, unlike ru_maxrss, which a spawned worker would
    inherit from its parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1e3
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _worker(path: str, threads: int, conn) -> None:
    """Serve one model: ('run', feed) -> seconds; ('predict', (texts, pairs)) -> probs; ('stats', None) -> dict."""
    try:
        from .session import Session

        rss0 = _rss_mb()
        t0 = time.perf_counter()
        sess = Session(path, threads=threads)
        load_s = time.perf_counter() - t0
        conn.send(("ok", {"load_s": load_s, "isa": getattr(sess, "isa", None), "max_len": sess.max_len,
                          "parallel_members": sess.parallel_members,
                          "task": sess.metadata.get("task"), "labels": sess.labels}))
        while True:
            cmd, arg = conn.recv()
            if cmd == "runs":  # (feed, n): n runs back to back, seconds each
                ts = []
                for _ in range(arg[1]):
                    t = time.perf_counter()
                    sess.run(arg[0])
                    ts.append(time.perf_counter() - t)
                conn.send(("ok", ts))
            elif cmd == "run_text":  # one sentence at its own length (ONNX) or the file's (TFLite): seconds
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    feed = sess.encode([arg[0]], None if arg[1] is None else [arg[1]])
                t = time.perf_counter()
                sess.run(feed)
                conn.send(("ok", (time.perf_counter() - t, int(feed["input_ids"].shape[1]))))
            elif cmd == "probs":
                conn.send(("ok", sess.run(arg)["probs"]))
            elif cmd == "predict":
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    conn.send(("ok", sess.predict(arg[0], arg[1], batch_size=32)[1]))
            elif cmd == "stats":
                conn.send(("ok", {"peak_rss_mb": _peak_rss_mb(), "rss_before_load_mb": rss0}))
            else:
                conn.send(("ok", None))
                return
    except ModelError as e:  # already one line naming the file
        conn.send(("error", str(e)))
    except Exception as e:  # report to the parent instead of dying silently
        conn.send(("error", f"{path}: {one_line(e)}"))


class Worker:
    """One model in its own spawned process; ``call`` raises ModelError with the worker's one-line message, also
    when the worker dies (e.g. killed by a signal inside a native library)."""

    def __init__(self, path: str, threads: int):
        self.path = path
        ctx = mp.get_context("spawn")
        if os.environ.get("BEBERT_WORKER_PYTHON"):  # e.g. a qemu-aarch64 wrapper (scripts/pi-emulated.sh)
            ctx.set_executable(os.environ["BEBERT_WORKER_PYTHON"])
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(path, threads, child), daemon=True)
        self.proc.start()
        self.info = self._recv()

    def _died(self) -> ModelError:
        self.proc.join(timeout=10)
        return ModelError(f"{self.path}: the benchmark worker died (exit code {self.proc.exitcode})")

    def _recv(self):
        try:
            status, val = self.conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if status != "ok":
            raise ModelError(val)
        return val

    def call(self, cmd, arg=None):
        try:
            self.conn.send((cmd, arg))
        except OSError:  # BrokenPipeError: the worker is gone
            raise self._died() from None
        return self._recv()

    def close(self):
        try:
            self.conn.send(("quit", None))
            self.conn.recv()
        except (OSError, EOFError):
            pass
        self.proc.join(timeout=10)


def system_info() -> dict:
    from bebert_deploy.env import package_versions

    from .bench_kernels import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            **package_versions(("onnxruntime", "ai-edge-litert", "bebert-deploy", "numpy", "tokenizers"))}


BENCH_TEXT = ("a gorgeous, witty, seductive movie that never loses its way, even when the plot wanders into "
              "familiar territory; the performances are sharp, the dialogue is smart and the ending, though "
              "predictable, earns every tear it asks for. ")


def _feed(model_path: str, seq_len: int, batch: int) -> dict[str, np.ndarray]:
    """Real tokens of a review paragraph, filling all seq_len positions (no padding: the worst case); row i
    starts at word i so that the rows differ."""
    from bebert_deploy.tokenizer import encode, load_tokenizer

    from .session import find_tokenizer

    tok = load_tokenizer(find_tokenizer(Path(model_path)))
    words = (BENCH_TEXT * (1 + seq_len // 16)).split()
    enc = encode(tok, [" ".join(words[i % len(words):] + words[:i % len(words)]) for i in range(batch)], None, seq_len)
    enc.pop("truncated")
    return enc


def _metrics(task_name, probs, gold):
    from bebert_deploy.data.metrics import compute_metrics
    from bebert_deploy.data.tasks import get_task

    task = get_task(task_name)
    pred = probs[:, 0] if task.is_regression else probs.argmax(-1)
    return compute_metrics(task.metrics, pred, np.asarray(gold))


def run_bench(models: list[str], baseline: str | None, cfg: BenchConfig, progress: bool = True) -> dict:
    """Benchmark ``models`` (+ ``baseline``, listed first); returns the JSON-ready result dict."""
    from tqdm.auto import tqdm

    paths = ([baseline] if baseline else []) + [m for m in models if m != baseline]
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"model file not found: {p}")
    workers = []
    try:
        for p in tqdm(paths, desc="loading", disable=not progress, leave=False):
            workers.append(Worker(p, cfg.threads))
        max_len = min(w.info["max_len"] for w in workers)
        if cfg.seq_len > max_len:
            raise ValueError(f"--seq-len {cfg.seq_len} exceeds the smallest model max_len {max_len}")
        feed = _feed(paths[0], cfg.seq_len, cfg.batch)
        for w in workers:
            w.call("runs", (feed, cfg.warmup))
        if cfg.order not in ("interleaved", "blocked"):
            raise ValueError(f"order must be 'interleaved' or 'blocked', got {cfg.order!r}")
        times = [[] for _ in workers]
        if cfg.order == "blocked":
            for i, w in enumerate(tqdm(workers, desc="timing", disable=not progress, leave=False)):
                times[i] = w.call("runs", (feed, cfg.runs))
        else:
            for _ in tqdm(range(cfg.runs), desc="timing", disable=not progress, leave=False):
                for i, w in enumerate(workers):  # interleaved round-robin
                    times[i] += w.call("runs", (feed, 1))
        acc = [None] * len(workers)
        real = [[] for _ in workers]
        real_len = [[] for _ in workers]
        if cfg.data:
            from bebert_deploy.data.tasks import get_task, read_tsv

            task_name = workers[0].info["task"]
            ex = read_tsv(cfg.data, get_task(task_name), cfg.data_limit)
            for i, w in enumerate(tqdm(workers, desc="accuracy", disable=not progress, leave=False)):
                acc[i] = _metrics(w.info["task"], w.call("predict", (ex.text_a, ex.text_b)), ex.labels)
            # Latency on the task's real sentences, one at a time (batch 1), interleaved: each at its own token
            # length (ONNX and resizable TFLite files; fixed-length TFLite files at theirs).
            n_real = min(len(ex.text_a), cfg.real_sentences)
            for j in tqdm(range(n_real), desc="real sentences", disable=not progress, leave=False):
                for i, w in enumerate(workers):
                    sec, length = w.call("run_text", (ex.text_a[j], None if ex.text_b is None else ex.text_b[j]))
                    real[i].append(sec)
                    real_len[i].append(length)
        elif baseline:  # no labelled data: agreement with the baseline's argmax on the benchmark paragraph
            agree_feed = _feed(paths[0], cfg.seq_len, 8)  # small: every worker holds its model in memory at once
            preds = [np.asarray(w.call("probs", agree_feed)).argmax(-1) for w in workers]
            acc = [{"agreement_with_baseline": float(np.mean(p == preds[0]))} for p in preds]
        stats = [w.call("stats") for w in workers]
    finally:
        for w in workers:
            w.close()
    rows = []
    for i, p in enumerate(paths):
        t = np.asarray(times[i]) * 1e3
        rows.append({"model": Path(p).name, "path": str(p), "size_mb": Path(p).stat().st_size / 1e6,
                     "load_s": workers[i].info["load_s"], "p50_ms": float(np.percentile(t, 50)),
                     "p90_ms": float(np.percentile(t, 90)), "p99_ms": float(np.percentile(t, 99)),
                     "throughput_seq_s": cfg.batch * 1e3 / float(np.mean(t)), "isa": workers[i].info["isa"],
                     "parallel_members": workers[i].info["parallel_members"],
                     "metrics": acc[i], **stats[i],
                     **({"real_p50_ms": float(np.percentile(real[i], 50)) * 1e3,
                         "real_p90_ms": float(np.percentile(real[i], 90)) * 1e3,
                         "real_mean_tokens": float(np.mean(real_len[i]))} if real[i] else {}),
                     "model_rss_mb": stats[i]["peak_rss_mb"] - stats[i]["rss_before_load_mb"]})
    if baseline:
        b = rows[0]
        for r in rows:
            r["size_ratio"] = b["size_mb"] / r["size_mb"]
            r["latency_ratio"] = r["p50_ms"] / b["p50_ms"]
            r["rss_ratio"] = r["model_rss_mb"] / b["model_rss_mb"] if b["model_rss_mb"] > 0 else None
    return {"config": asdict(cfg), "system": system_info(), "device_label": cfg.device_label, "baseline": baseline,
            "rows": rows, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = res["config"]
    title = (f"{res.get('device_label') or res['system']['cpu']} — seq {c['seq_len']}, batch {c['batch']}, "
             f"{c['threads']} threads, {c['runs']} runs {c.get('order', 'interleaved')}")
    t = Table(title=title)
    real = any("real_p50_ms" in r for r in res["rows"])
    cols = ["model", "MB", "x smaller", "p50 ms", "p90 ms", "p99 ms", "x latency", "seq/s", "RSS MB", "metric"]
    if real:  # bench --data: latency over the task's sentences at their own length (fixed TFLite files: theirs)
        cols[7:7] = ["real p50 ms", "real tokens"]
    for col in cols:
        t.add_column(col, justify="right")
    for r in res["rows"]:
        m = r.get("metrics") or {}
        metric = " ".join(f"{k}={v:.4f}" for k, v in list(m.items())[:1]) or "-"
        cells = [r["model"], f"{r['size_mb']:.1f}", f"{r.get('size_ratio', 1):.1f}x", f"{r['p50_ms']:.2f}",
                 f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r.get('latency_ratio', 1):.2f}x",
                 f"{r['throughput_seq_s']:.1f}", f"{r['model_rss_mb']:.0f}", metric]
        if real:
            cells[7:7] = [f"{r['real_p50_ms']:.2f}" if "real_p50_ms" in r else "-",
                          f"{r['real_mean_tokens']:.0f}" if "real_mean_tokens" in r else "-"]
        t.add_row(*cells)
    Console(width=max(132, Console().width)).print(t)  # never truncate model names or figures


def plot(results: list[dict], out: str) -> None:
    """Size vs p50 latency scatter (one colour per device label), metric as point labels; PNG written atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib (pip install matplotlib)") from None
    from bebert_deploy.io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for res in results:
        rows = res["rows"]
        label = res.get("device_label") or res["system"]["cpu"]
        ax.scatter([r["size_mb"] for r in rows], [r["p50_ms"] for r in rows], label=label)
        for r in rows:
            m = r.get("metrics") or {}
            txt = r["model"] + (f" ({next(iter(m.values())):.3f})" if m else "")
            ax.annotate(txt, (r["size_mb"], r["p50_ms"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (MB, log)")
    ax.set_ylabel("p50 latency (ms)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_json(res, out: str) -> None:
    from bebert_deploy.io import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(res, indent=2))


def report(jsons: list[str]) -> str:
    """Merge several bench JSON files (e.g. from different boards) into one markdown table."""
    lines = ["| device | model | MB | x smaller | p50 ms | p90 ms | x latency | RSS MB | metric |",
             "|---|---|---|---|---|---|---|---|---|"]
    for j in jsons:
        res = json.loads(Path(j).read_text())
        dev = res.get("device_label") or res["system"]["cpu"]
        for r in res["rows"]:
            m = r.get("metrics") or {}
            metric = " ".join(f"{k}={v:.4f}" for k, v in m.items()) or "-"
            lines.append(f"| {dev} | {r['model']} | {r['size_mb']:.1f} | {r.get('size_ratio', 1):.1f}x | {r['p50_ms']:.2f} | "
                         f"{r['p90_ms']:.2f} | {r.get('latency_ratio', 1):.2f}x | {r['model_rss_mb']:.0f} | {metric} |")
    return "\n".join(lines) + "\n"
