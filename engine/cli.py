"""The ``engine`` command line. Heavy imports (torch, mlflow) live inside commands so ``engine --help`` is instant.

User errors (:class:`engine.errors.EngineError`) print one line and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from . import __version__
from .errors import EngineError


def user_errors(fn):
    """Turn EngineError into a one-line message and exit code 2; Ctrl-C into exit 130 with a resume hint."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EngineError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted. The last completed epoch is checkpointed: rerun with --resume.", err=True)
            sys.exit(130)

    return wrapper


def _terminate_like_interrupt() -> None:
    """SIGTERM (a scheduler stopping the job) ends a run like Ctrl-C: tracked as KILLED, resumable."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="engine")
def cli():
    """Train contrastive recommenders and record linkers from a pipeline.yaml, track them in MLflow,
    export them to ONNX."""


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a pipeline value, e.g. --set train.epochs=5 (repeatable; values parsed as YAML).")
@click.option("--metrics-out", type=click.Path(dir_okay=False), default=None,
              help="Write the final test metrics and the MLflow run_id to this JSON file.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of this pipeline.")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@click.option("--nproc", type=int, default=1, show_default=True, metavar="N",
              help="Data-parallel training over N processes on this machine (gloo on CPU, nccl on CUDA: one GPU "
                   "each); the global batch is train.batch_size. Under torchrun, leave it out.")
@user_errors
def run(pipeline, overrides, metrics_out, resume, no_track, nproc):
    """Train and evaluate the pipeline in PIPELINE (a YAML file)."""
    from .config import load_pipeline
    from .run import run_pipeline

    _terminate_like_interrupt()
    cfg = load_pipeline(pipeline, overrides)
    outcome = run_pipeline(cfg, metrics_out=metrics_out, resume=resume, track=not no_track, nproc=nproc)
    if outcome is None:  # a rank other than 0 of a torchrun run: rank 0 reports
        return
    metrics = outcome.test_metrics
    headline = {k: v for k, v in metrics.items() if k.endswith(("@10", "@20"))} or metrics  # ranking, else all
    shown = ", ".join(f"{k}={v:.4f}" for k, v in headline.items() if isinstance(v, (int, float)))
    click.echo(f"test: {shown}")
    click.echo(f"best epoch {outcome.best_epoch} of {outcome.epochs_run}; train {outcome.train_seconds:.1f}s; "
               f"run_id {outcome.run_id}")
    from .publish import what_next

    for line in what_next(cfg.name, outcome.run_id, outcome.export, cfg.tracking.uri):
        click.echo(line)


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a pipeline value.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Weights to evaluate (default: the pipeline's best.pt).")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True,
              help="The split to evaluate on.")
@click.option("--metrics-out", type=click.Path(dir_okay=False), default=None, help="Write the metrics to this JSON file.")
@user_errors
def evaluate(pipeline, overrides, checkpoint, split, metrics_out):
    """Evaluate trained weights of PIPELINE on a split."""
    from .commands import evaluate_checkpoint

    metrics = evaluate_checkpoint(pipeline, overrides, checkpoint, split, metrics_out)
    click.echo(json.dumps(metrics, indent=2, sort_keys=True))


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a pipeline value.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Weights to export (default: the pipeline's best.pt).")
@click.option("--output", "-o", type=click.Path(file_okay=False), required=True, help="Directory for the ONNX model.")
@user_errors
def export(pipeline, overrides, checkpoint, output):
    """Export the trained model of PIPELINE to ONNX, with a parity check against PyTorch."""
    from .commands import export_checkpoint

    report = export_checkpoint(pipeline, overrides, checkpoint, output)
    click.echo(json.dumps(report, indent=2, sort_keys=True))


def _new_items_options(f):
    """``--new-items`` / ``--new-items-id`` of ``engine score`` and ``engine serve``."""
    f = click.option("--new-items-id", "new_items_id", default=None, metavar="COLUMN",
                     help="The id column of --new-items (default: item; item_id for a RecBole .item file).")(f)
    return click.option("--new-items", "new_items", type=click.Path(exists=True, dir_okay=False), default=None,
                        help="A feature table of items the model has never seen (parquet, CSV, RecBole .item, "
                             "item2attributes.json; the model's content fields): embedded by the export's content "
                             "encoder and ranked with the rest. Needs a model trained with model.content.")(f)


@cli.command()
@click.option("--model", "model", required=True, metavar="MODEL",
              help="A directory written by `engine export`, an MLflow run id, or a runs:/<run_id>/<path> URI.")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="A .parquet or .csv file with a `user` column (one row = one user to score); for a linkage "
                   "model, records: an id column and the model's fields.")
@click.option("--output", "output", required=True, type=click.Path(file_okay=False),
              help="Directory for the parquet parts (user, item, score, rank; linkage: left_id, right_id, score) "
                   "and the job manifest.")
@click.option("--top-k", "top_k", type=click.IntRange(min=1), default=None,
              help="Items per user (seen items excluded), or candidates per record (default: 20; linkage: the "
                   "export's blocking_k).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Input rows per part file (the unit of work and of resumption; bounds memory).")
@click.option("--include-seen", is_flag=True, help="Do not exclude the items each user has already seen.")
@click.option("--index", type=click.Choice(["exact", "faiss"]), default="exact", show_default=True,
              help="Top-k by exact scores of every item (chunked matmul + top-k), or a faiss inner-product index "
                   "(flat, exact; IVF, approximate, from 500,000 items).")
@click.option("--nprobe", type=click.IntRange(min=1), default=None,
              help="IVF cells searched per query with --index faiss on a large catalogue.")
@click.option("--id-column", default="id", show_default=True,
              help="Linkage: the column of INPUT that identifies a record (left_id in the output).")
@click.option("--matches-only", is_flag=True,
              help="Linkage: keep only candidates scoring at least the threshold chosen on valid.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads (default: all cores).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI for run ids (default: ./mlruns/mlflow.db).")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Score the chunks in this process, or as Ray tasks (needs the `ray` extra): same parts, same "
                   "manifest, same resumption.")
@click.option("--ray-address", default=None, metavar="HOST:PORT",
              help="With --backend ray: a running cluster's head (or 'auto'); default: start a local cluster on "
                   "127.0.0.1 and stop it after the job.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --backend ray: chunks scored at once (default: every core of a local cluster; the "
                   "cluster's CPUs / --threads).")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0,
              help="With --backend ray: GPUs each worker asks Ray for (onnxruntime-gpu on the cluster: one CUDA "
                   "session per worker; fractions share a GPU).")
@click.option("--shared-output", is_flag=True,
              help="With --backend ray --ray-address: OUTPUT is the same directory on every node (a shared file "
                   "system), so workers write their parts themselves instead of sending them to this process "
                   "(always so on a local cluster).")
@_new_items_options
@user_errors
def score(model, input_path, output, top_k, chunk_size, include_seen, index, nprobe, id_column, matches_only, threads,
          tracking_uri, backend, ray_address, workers, gpus_per_worker, shared_output, new_items, new_items_id):
    """Score every user of INPUT with an exported model: top-k items into parquet parts. With a linkage model,
    match every record of INPUT against the export's right table: top-k candidates and their scores.

    Resumable: run the same command again after a crash or a kill and it finishes the parts that are missing, so
    every input row is scored exactly once."""
    from .commands import score_file

    _terminate_like_interrupt()
    try:
        report = score_file(model, input_path, output, top_k, chunk_size, exclude_seen=not include_seen,
                            tracking_uri=tracking_uri, threads=threads, index=index, nprobe=nprobe,
                            id_column=id_column, matches_only=matches_only, new_items=new_items,
                            new_items_id=new_items_id, echo=lambda m: click.echo(m, err=True), backend=backend,
                            ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                            shared_output=shared_output)
    except KeyboardInterrupt:
        click.echo("Interrupted. Finished parts are kept: rerun the same command to finish the job.", err=True)
        sys.exit(130)
    click.echo(json.dumps(report, indent=2, sort_keys=True))


@cli.command()
@click.option("--model", "model", required=True, metavar="MODEL",
              help="A directory written by `engine export`, an MLflow run id, or a runs:/<run_id>/<path> URI.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads (default: all cores).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI for run ids (default: ./mlruns/mlflow.db).")
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Score concurrent /recommend requests together, in one onnxruntime run.")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="With --batching: at most this many requests per run.")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --batching: wait this long for more requests before a run (0: take what is waiting).")
@_new_items_options
@user_errors
def serve(model, host, port, threads, tracking_uri, batching, max_batch, batch_wait_ms, new_items, new_items_id):
    """Serve recommendations over HTTP (FastAPI on uvicorn; needs the `serve` extra): GET /health, POST /recommend
    {"user": id, "k": 10} (or {"sequence": [...]} for sequential models); linkage models: POST /match {"record":
    {field: value, ...}, "k": 10}. The schema is at GET /openapi.json, the docs at GET /docs."""
    from .commands import serve_model

    serve_model(model, host, port, tracking_uri=tracking_uri, threads=threads, new_items=new_items,
                new_items_id=new_items_id, batching=batching, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                echo=lambda m: click.echo(m, err=True))


@cli.group()
def plugins():
    """List, install and uninstall plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {kind, name, plugin, ...}.")
@click.option("--all", "show_all", is_flag=True, help="Include built-in components.")
@click.option("--kind", type=click.Choice(["encoder", "objective", "augmenter", "data_source", "task"]), default=None,
              help="Only list components of this kind.")
@user_errors
def plugins_list(as_json, show_all, kind):
    """List the components that loaded plugins provide."""
    from .plugins import get_registry, plugin_info

    rows = []
    for entry in get_registry().entries(kind):
        info = plugin_info(entry.plugin)
        if info.builtin and not show_all:
            continue
        rows.append({"kind": entry.kind, "name": entry.name, "plugin": entry.plugin, "builtin": info.builtin,
                     "distribution": info.distribution, "version": info.version, "summary": entry.summary})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No plugins installed. Built-ins: `engine plugins list --all`.")
    for row in rows:
        click.echo(f"{row['kind']:<12} {row['name']:<18} {row['plugin']:<22} {row['summary']}")


def _pip(args: list[str]) -> None:
    from runpy import run_module

    sys.argv = ["pip", *args]
    run_module("pip", run_name="__main__")


@plugins.command("install")
@click.argument("packages", nargs=-1)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade packages to the latest version.")
@click.option("-e", "--editable", multiple=True, type=click.Path(exists=True), help="Install a local path in editable mode.")
def plugins_install(packages, upgrade, editable):
    """Install plugins into the environment engine runs in (with pip)."""
    if not packages and not editable:
        raise click.UsageError("name a package or give -e PATH")
    args = ["install"] + (["--upgrade"] if upgrade else [])
    for path in editable:
        args += ["-e", path]
    _pip(args + list(packages))


@plugins.command("uninstall")
@click.argument("packages", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def plugins_uninstall(packages, yes):
    """Uninstall plugins from the environment engine runs in (with pip)."""
    _pip(["uninstall", *packages] + (["-y"] if yes else []))


def main() -> None:
    from .plugins import load_plugins, pm

    if any(a not in ("-h", "--help", "--version") for a in sys.argv[1:2]):
        try:
            load_plugins()
            pm.hook.register_commands(cli=cli)
        except EngineError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
