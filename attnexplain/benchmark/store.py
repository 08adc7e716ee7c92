"""Durable benchmark rows: one JSON object per line, appended and fsynced batch by batch.

A run killed at any moment leaves complete lines plus, at worst, one truncated last line. On the
next start :func:`read_rows` drops that tail (and :func:`RowWriter` cuts it off the file before
appending), the keys of the complete rows are skipped, and nothing is lost or written twice.

Rows are keyed by ``(image_id, method)``. Under ``torchrun`` every rank appends to its own file
(``results.rank<r>.jsonl``); :func:`merge_rows` folds those into ``results.jsonl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"
RANK_FILE_PATTERN = "results.rank*.jsonl"

Row = dict[str, Any]
Key = tuple[str, str]


def rank_file(out_dir: Path, rank: int) -> Path:
    """The file rank ``rank`` appends to under a multi-process run."""
    return out_dir / f"results.rank{rank}.jsonl"


def row_key(row: Row) -> Key:
    """``(image_id, method)``, the identity of a row."""
    return str(row["image_id"]), str(row["method"])


#: Fields every row has, and their JSON types (a row is keyed and sorted by them).
_ROW_FIELDS: dict[str, type | tuple[type, ...]] = {
    "image_id": str,
    "method": str,
    "index": int,
    "metrics": dict,
}
_FIX = (
    "the file is not one this benchmark wrote, or it was damaged: remove the line (the other "
    "rows are kept and resumed) or choose another --out folder"
)


def _row_problem(row: Any) -> str | None:
    """Why ``row`` is not a benchmark row (``None`` when it is one)."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    missing = [key for key in _ROW_FIELDS if key not in row]
    if missing:
        return f"no {', '.join(map(repr, missing))} field"
    for key, kind in _ROW_FIELDS.items():
        if isinstance(row[key], bool) or not isinstance(row[key], kind):
            return f"field {key!r} is {row[key]!r}"
    return None


def _torn_tail(tail: bytes) -> bool:
    """Whether ``tail`` can be the start of a row cut short by a kill.

    Rows are written by ``json.dumps`` (printable ASCII, starting with ``{``); anything else
    after the last newline is damage, not an interrupted write, and is never cut off.
    """
    return tail.startswith(b"{") and all(32 <= byte < 127 for byte in tail)


def _complete_prefix(path: Path) -> tuple[list[Row], int]:
    """Parse the complete lines of ``path``: its rows and the byte length they span.

    Raises:
        ValueError: if a complete line is not a JSON benchmark row, or the piece after the last
            newline cannot be a row cut short (the file is corrupt, not merely cut short by a
            kill); the message names the file and the line.
    """
    data = path.read_bytes()
    rows: list[Row] = []
    end = 0
    lines = data.split(b"\n")
    # The piece after the last newline is a line still being written when the run stopped (or
    # empty); it is never trusted, even if it happens to parse.
    for number, line in enumerate(lines[:-1], start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                reason = "binary data" if isinstance(error, UnicodeDecodeError) else error.msg
                raise ValueError(
                    f"{path}, line {number}: not a JSON row ({reason}); {_FIX}"
                ) from None
            problem = _row_problem(row)
            if problem is not None:
                raise ValueError(f"{path}, line {number}: not a benchmark row ({problem}); {_FIX}")
            rows.append(row)
        end += len(line) + 1
    if lines[-1] and not _torn_tail(lines[-1]):
        raise ValueError(
            f"{path}, line {len(lines)}: not a JSON row and not a row cut short by a kill "
            f"(binary or foreign data); {_FIX}"
        )
    return rows, end


def read_rows(paths: Iterable[Path]) -> list[Row]:
    """All complete rows of the existing ``paths``, in file order, duplicates dropped.

    A truncated last line (no trailing newline) is ignored. A key seen twice keeps its first row.

    Args:
        paths: JSONL files; missing ones are skipped.

    Returns:
        The rows.

    Raises:
        ValueError: if a complete line is not a benchmark row, or the last piece is foreign
            data (see :func:`_complete_prefix`).
    """
    rows: list[Row] = []
    seen: set[Key] = set()
    for path in paths:
        if not path.is_file():
            continue
        for row in _complete_prefix(path)[0]:
            key = row_key(row)
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def result_files(out_dir: Path) -> list[Path]:
    """``results.jsonl`` and every rank file in ``out_dir`` (sorted, so reading is stable)."""
    return [out_dir / RESULTS_FILE, *sorted(out_dir.glob(RANK_FILE_PATTERN))]


class RowWriter:
    """Append rows to one JSONL file, flushing and fsyncing after every batch.

    Opening cuts a truncated last line off the file, so the first appended row starts on a line
    of its own.

    Args:
        path: the file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file():
            _, end = _complete_prefix(path)
            if end != path.stat().st_size:
                with path.open("r+b") as file:
                    file.truncate(end)
        self._file = path.open("a", encoding="utf-8")

    def write_batch(self, rows: Iterable[Row]) -> None:
        """Append ``rows`` and make them durable before returning."""
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        if text:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sort_rows(rows: Iterable[Row], methods: list[str] | None = None) -> list[Row]:
    """Rows ordered by dataset index, then by ``methods``' order (else by name).

    The order is the same whatever the sharding, so every mean is summed in the same order and a
    multi-process run reproduces a single-process one bit for bit.
    """
    order = {name: i for i, name in enumerate(methods or [])}
    return sorted(
        rows, key=lambda r: (int(r["index"]), order.get(r["method"], len(order)), r["method"])
    )


def write_rows_atomically(path: Path, rows: Iterable[Row]) -> None:
    """Replace ``path`` by ``rows`` in one step (a temporary file renamed over it)."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, sort_keys=True) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def merge_rows(out_dir: Path, methods: list[str] | None = None) -> list[Row]:
    """Fold every rank file into ``results.jsonl`` (sorted, deduplicated) and delete them.

    Safe to repeat after a kill at any point: the merged file replaces the old one atomically and
    rank files are removed only afterwards; rows found in both are kept once.

    Args:
        out_dir: the run folder.
        methods: method order for sorting.

    Returns:
        The merged rows.
    """
    rank_files = sorted(out_dir.glob(RANK_FILE_PATTERN))
    rows = sort_rows(read_rows(result_files(out_dir)), methods)
    write_rows_atomically(out_dir / RESULTS_FILE, rows)
    for path in rank_files:
        path.unlink()
    return rows
