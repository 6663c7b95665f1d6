"""Text files, plain or gzip (by magic bytes), decoded as UTF-8 with a clear error."""

from __future__ import annotations

import gzip
from pathlib import Path

from engine.errors import DataError


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'is a directory, expected a file' if path.is_dir() else 'not found'}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: expected UTF-8 text ({exc.reason})") from None
