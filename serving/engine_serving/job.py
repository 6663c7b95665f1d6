"""Resumable batch scoring: top-k items for every row of a parquet / CSV file with a ``user`` column, or (linkage
exports) the top-k candidate matches of every record of a file with the model's fields and an id column.

The input is cut into chunks of ``chunk_size`` rows (``LazyFrame.slice``; row order is the file's). Chunk ``i`` is
the unit of work: :func:`score_chunk` turns its rows into a part (columns ``user``, ``item``, ``score``, ``rank``;
linkage: ``left_id``, ``right_id``, ``score``, see :func:`engine_serving.linkage.match_chunk`), and
:func:`write_part` writes it to ``part-{i:05d}.parquet`` atomically (a temporary name in the same directory, then
``os.replace``). A part file therefore exists complete or not at all, and a job started again with the same command
skips the parts that exist: however it was stopped, every input row ends up scored exactly once.

``_job.json`` in the output directory records what the job is (input, its size and mtime, the model's fingerprint,
k, chunk size, row count, the top-k index, the linkage options); a different job in the same directory is refused
rather than mixed in. A lock file (``.lock``, ``flock``) keeps two processes from working on one directory at once.
Memory is bounded by the chunk: its rows, its output, and one ``batch x num_items`` float32 score block at a time
(with faiss, ``batch x (k + most seen items)`` neighbours).

Who scores the chunks is a runner's business: :class:`LocalRunner` (this process, one chunk after another) or
:class:`engine_serving.ray_runner.RayRunner` (Ray tasks, ``engine score --backend ray``). Either way this module
alone validates the input, writes the parts and the manifest, and decides what is left to do on a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl

from engine.errors import DataError
from engine.files import atomic_open
from engine.run import write_json_atomic

from .errors import JobError
from .model import ExportedModel

__all__ = ["score_chunk", "write_part", "part_path", "run_job", "scan_input", "JobSummary", "MANIFEST", "ChunkOptions",
           "LocalRunner"]

log = logging.getLogger("engine.serving")

MANIFEST = "_job.json"
SCHEMA = {"user": None, "item": None, "score": pl.Float32, "rank": pl.Int32}


@dataclass
class JobSummary:
    rows: int
    parts: int
    parts_written: int
    parts_skipped: int
    output_rows: int
    seconds: float
    provider: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


# -- the unit of work ---------------------------------------------------------------------------------------------------
def score_chunk(model: ExportedModel, chunk_index: int, rows: pl.DataFrame, top_k: int, exclude_seen: bool = True,
                batch: int | None = None, id_column: str = "id", matches_only: bool = False) -> pl.DataFrame:
    """The part of chunk ``chunk_index``: for each row of ``rows`` (a frame with a ``user`` column), in order, its
    top-``top_k`` items best first as rows ``(user, item, score, rank)``; ``rank`` starts at 1. A user with fewer than
    ``top_k`` unseen items gets fewer rows. Pure (no I/O): a distributed runner can call it per chunk.

    A linkage model matches records instead (``id_column``, ``matches_only``: see
    :func:`engine_serving.linkage.match_chunk`)."""
    if model.family == "linkage":
        from .linkage import match_chunk

        return match_chunk(model, chunk_index, rows, top_k, id_column, matches_only)
    if "user" not in rows.columns:
        raise DataError(f"chunk {chunk_index}: no 'user' column (columns: {', '.join(rows.columns) or 'none'})")
    index = model.user_index(rows["user"])
    cols, vals = model.recommend(index, top_k, exclude_seen=exclude_seen, batch=batch)
    valid = cols >= 0
    which = np.repeat(np.arange(index.size), valid.sum(axis=1))
    ranks = np.broadcast_to(np.arange(1, top_k + 1, dtype=np.int32), cols.shape)[valid]
    return pl.DataFrame({
        "user": model.user_ids.gather(pl.Series(index[which], dtype=pl.Int64)),
        "item": model.original_items(cols[valid]),
        "score": pl.Series(vals[valid], dtype=pl.Float32),
        "rank": pl.Series(ranks, dtype=pl.Int32),
    })


def part_path(output: str | Path, chunk_index: int) -> Path:
    return Path(output) / f"part-{chunk_index:05d}.parquet"


def write_part(output: str | Path, chunk_index: int, part: pl.DataFrame) -> Path:
    """Write ``part`` as ``part-{chunk_index:05d}.parquet`` atomically (temp file in the same directory, fsync,
    ``os.replace``)."""
    final = part_path(output, chunk_index)
    with atomic_open(final, "wb") as fh:
        part.write_parquet(fh)
    return final


# -- input ------------------------------------------------------------------------------------------------------------
def scan_input(path: str | Path, user_dtype: pl.DataType | None = None,
               columns: list[str] | None = None) -> tuple[pl.LazyFrame, int]:
    """``(lazy frame of column user, row count)`` of a .parquet or .csv file. Raises DataError on bad input.

    With ``columns`` (records of a linkage model), the frame has those columns instead, every one read as a
    string."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    suffix = path.name.lower()
    try:
        separator = "\t" if suffix.endswith(".tsv") else ","
        if suffix.endswith((".parquet", ".pq")):
            lf = pl.scan_parquet(path)
        elif suffix.endswith((".csv", ".tsv")) and columns is not None:
            lf = pl.scan_csv(path, separator=separator, infer_schema=False)
        elif suffix.endswith((".csv", ".tsv")):
            overrides = {"user": user_dtype} if user_dtype is not None else None
            lf = pl.scan_csv(path, separator=separator, schema_overrides=overrides)
        else:
            raise DataError(f"{path}: expected a .parquet or .csv file")
        have = lf.collect_schema().names()
        if columns is not None:
            missing = [c for c in columns if c not in have]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(map(repr, missing))} (columns: "
                                f"{', '.join(have) or 'none'})")
            lf = lf.select(pl.col(c).cast(pl.String) for c in columns)
        elif "user" not in have:
            raise DataError(f"{path}: no 'user' column (columns: {', '.join(have) or 'none'})")
        else:
            lf = lf.select("user")
        num_rows = lf.select(pl.len()).collect().item()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - polars' compute / IO errors on a malformed file
        raise DataError(f"{path}: cannot read it ({str(exc).splitlines()[0]})") from None
    if num_rows == 0:
        raise DataError(f"{path}: no rows to score")
    return lf, num_rows


def _check_users(path: Path, lf: pl.LazyFrame, model: ExportedModel) -> None:
    """Every user of the input is known to the model, checked before any part is written (one pass over the
    distinct ids)."""
    try:
        users = lf.select(pl.col("user").unique()).collect()["user"]
    except Exception as exc:  # noqa: BLE001 - a value that does not parse as the model's id type
        raise DataError(f"{path}: column 'user' does not fit the model's ids ({model.user_ids.dtype}): "
                        f"{str(exc).splitlines()[0]}") from None
    if users.null_count():
        raise DataError(f"{path}: column 'user' has empty values")
    try:
        unknown = model.unknown_users(users)
    except Exception:  # noqa: BLE001 - a cast that fails
        raise DataError(f"{path}: column 'user' has type {users.dtype}, but the model's user ids are "
                        f"{model.user_ids.dtype}") from None
    if unknown.len():
        shown = ", ".join(map(str, unknown.sort().head(5).to_list()))
        raise DataError(f"{path}: {unknown.len()} user id(s) unknown to the model (e.g. {shown})")


def _check_ids(path: Path, lf: pl.LazyFrame, id_column: str) -> None:
    """Every record of a linkage input has an id (one pass over the column)."""
    nulls = lf.select(pl.col(id_column).str.strip_chars().replace("", None).null_count()).collect().item()
    if nulls:
        raise DataError(f"{path}: column {id_column!r} has {nulls} empty value(s); every record needs an id")


# -- the job ----------------------------------------------------------------------------------------------------------
@contextmanager
def _locked(output: Path) -> Iterator[None]:
    import fcntl

    with open(output / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"{output}: another scoring job is writing this directory") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_parts(output: Path) -> None:
    """Delete the temporary files of part writes that never finished (under the job's lock: no writer is active)."""
    for stale in output.glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)


#: what makes two jobs the same (the manifest's keys compared on a restart)
JOB_KEYS = ("input", "input_bytes", "input_mtime_ns", "model_sha256", "top_k", "chunk_size", "exclude_seen",
            "num_rows", "index", "id_column", "matches_only")


def _manifest(path: Path, model: ExportedModel, top_k: int, chunk_size: int, num_rows: int,
              exclude_seen: bool, id_column: str | None = None, matches_only: bool = False) -> dict[str, Any]:
    stat = path.stat()
    digest = hashlib.sha256(json.dumps(model.fingerprint, sort_keys=True).encode()).hexdigest()
    return {"version": 1, "input": str(path.resolve()), "input_bytes": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
            "model": str(model.directory.resolve()), "family": model.family, "model_sha256": digest, "top_k": top_k,
            "chunk_size": chunk_size, "exclude_seen": exclude_seen, "num_rows": num_rows,
            "num_parts": -(-num_rows // chunk_size), "index": model.index_kind, "id_column": id_column,
            "matches_only": matches_only}


def _check_same_job(output: Path, want: dict[str, Any]) -> None:
    path = output / MANIFEST
    try:
        have = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobError(f"{path}: unreadable job manifest ({exc}); use another --output") from None
    for key in JOB_KEYS:
        if have.get(key) != want[key]:
            raise JobError(f"{output}: holds another scoring job ({key}: {have.get(key)!r} there, {want[key]!r} now); "
                           "use another --output, or delete the directory to start over")


@dataclass(frozen=True)
class ChunkOptions:
    """What :func:`score_chunk` is asked for each chunk (the same for every chunk of a job)."""

    top_k: int = 20
    exclude_seen: bool = True
    batch: int | None = None
    id_column: str = "id"
    matches_only: bool = False

    def score(self, model: ExportedModel, chunk_index: int, rows: pl.DataFrame) -> pl.DataFrame:
        return score_chunk(model, chunk_index, rows, self.top_k, self.exclude_seen, self.batch, self.id_column,
                           self.matches_only)


class LocalRunner:
    """Scores the pending chunks one after another in this process: the default backend of :func:`run_job`.

    A runner has :meth:`start` (called after the input is validated and before anything is written: a runner that
    cannot start raises an EngineError and the job leaves nothing behind), :meth:`parts` (yields ``(chunk index,
    input rows, part)`` for each pending chunk, in any order; ``part`` None when the runner wrote it into
    ``output`` itself, with :func:`write_part`) and :meth:`close`. See
    :class:`engine_serving.ray_runner.RayRunner` for the distributed one."""

    name = "local"

    def __init__(self, model: ExportedModel) -> None:
        self.model = model
        self.provider = model.provider

    def start(self) -> None:
        pass

    def parts(self, lf: pl.LazyFrame, pending: list[int], chunk_size: int, options: ChunkOptions,
              output: Path) -> Iterator[tuple[int, int, pl.DataFrame | None]]:
        for i in pending:
            rows = lf.slice(i * chunk_size, chunk_size).collect()
            yield i, rows.height, options.score(self.model, i, rows)

    def close(self) -> None:
        pass


def run_job(model: ExportedModel, input_path: str | Path, output: str | Path, top_k: int = 20,
            chunk_size: int = 100_000, exclude_seen: bool = True, batch: int | None = None,
            progress: bool = True, id_column: str = "id", matches_only: bool = False,
            runner=None) -> JobSummary:
    """Score every row of ``input_path`` into parts under ``output`` (see the module docstring); resumable.

    For a linkage model, ``id_column`` names the records' id column (``left_id`` of the output) and
    ``matches_only`` keeps the candidates scoring at least the export's threshold; ``exclude_seen`` is unused.
    ``runner`` scores the chunks (default: :class:`LocalRunner`, in this process); whatever it is, the parts, the
    manifest and the resumption are the same, so the output does not depend on it."""
    from tqdm import tqdm

    if top_k < 1:
        raise DataError(f"--top-k: must be >= 1 (got {top_k})")
    if chunk_size < 1:
        raise DataError(f"--chunk-size: must be >= 1 (got {chunk_size})")
    input_path, output = Path(input_path), Path(output)
    if output.exists() and not output.is_dir():
        raise JobError(f"{output}: exists and is not a directory")
    linkage = model.family == "linkage"
    if linkage:
        lf, num_rows = scan_input(input_path, columns=list(dict.fromkeys([id_column, *model.input_fields])))
        want = _manifest(input_path, model, top_k, chunk_size, num_rows, False, id_column, matches_only)
    else:
        lf, num_rows = scan_input(input_path, model.user_ids.dtype)
        want = _manifest(input_path, model, top_k, chunk_size, num_rows, exclude_seen)
    if (output / MANIFEST).is_file():
        _check_same_job(output, want)
    else:
        if output.is_dir() and any(p.name.startswith("part-") for p in output.iterdir()):
            raise JobError(f"{output}: holds part files but no {MANIFEST}; use another --output")
        if linkage:
            _check_ids(input_path, lf, id_column)
        else:
            _check_users(input_path, lf, model)
    runner = runner or LocalRunner(model)
    options = ChunkOptions(top_k, exclude_seen, batch, id_column, matches_only)
    runner.start()  # may raise (e.g. a cluster that cannot be reached): nothing is written yet
    try:
        output.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        with _locked(output):
            _remove_stale_parts(output)  # writes cut short by a kill
            if not (output / MANIFEST).is_file():
                write_json_atomic(output / MANIFEST, {**want, "status": "running"})
            num_parts = want["num_parts"]
            on_disk = [part_path(output, i).is_file() for i in range(num_parts)]
            done = [i for i in range(num_parts) if on_disk[i]]
            pending = [i for i in range(num_parts) if not on_disk[i]]
            skipped_rows = sum(min(chunk_size, num_rows - i * chunk_size) for i in done)
            with tqdm(total=num_rows, initial=skipped_rows, unit="rows", unit_scale=True,
                      disable=None if progress else True, desc="scoring", dynamic_ncols=True) as bar:
                for i, height, part in runner.parts(lf, pending, chunk_size, options, output):
                    if part is not None:
                        write_part(output, i, part)
                    bar.update(height)
            _remove_stale_parts(output)  # a write of a worker killed mid-part (its chunk was redone)
            missing = [i for i in range(num_parts) if not part_path(output, i).is_file()]
            if missing:
                raise JobError(f"{output}: {len(missing)} part(s) missing after the job (e.g. part {missing[0]}); "
                               "run the same command again to score them")
            output_rows = sum(pl.scan_parquet(part_path(output, i)).select(pl.len()).collect().item()
                              for i in range(num_parts))
            seconds = time.perf_counter() - tic
            write_json_atomic(output / MANIFEST, {**want, "status": "complete", "output_rows": output_rows,
                                                  "provider": runner.provider, "backend": runner.name})
    finally:
        runner.close()
    return JobSummary(num_rows, num_parts, len(pending), len(done), output_rows, seconds, runner.provider)
