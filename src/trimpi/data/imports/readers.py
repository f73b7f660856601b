"""Example files → rows (plain dicts), each remembering its file and row number for error messages.

Formats, by file name: `.jsonl` / `.ndjson` (one object per line), `.json` (a list of objects),
`.csv` / `.tsv` (header row; `delimiter` overrides the guess), `.parquet`, and a directory
written by Hugging Face `datasets` (`save_to_disk`; a DatasetDict gives each row its split).
Image values stay as the file holds them (a path, a list of paths, `{"bytes", "path"}`);
`formats.py` interprets them.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trimpi.data.io import numbered_jsonl
from trimpi.errors import DataError

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


@dataclass
class Row:
    where: str  # "file:row N" (JSONL: the line number)
    values: dict[str, Any]
    base: Path  # directory that relative paths in this row are relative to
    split: str | None = None  # from a DatasetDict key

    def error(self, field: str, message: str) -> DataError:
        return DataError(f"{self.where}: field '{field}': {message}")


def _jsonl(path: Path) -> Iterator[Row]:
    for n, obj in numbered_jsonl(path):
        yield Row(f"{path}:{n}", obj, path.parent)


def _json(path: Path) -> Iterator[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects (or use .jsonl, one object per line)")
    for i, obj in enumerate(data, 1):
        if not isinstance(obj, dict):
            raise DataError(f"{path}: row {i}: expected a JSON object")
        yield Row(f"{path}: row {i}", obj, path.parent)


def _guess_delimiter(header: str) -> str | None:
    """The delimiter a header line seems to use, by count of candidates outside quotes."""
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def _csv(path: Path, delimiter: str | None, expected: set[str]) -> Iterator[Row]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    first = text.split("\n", 1)[0]
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    header = reader.fieldnames or []
    if not header:
        raise DataError(f"{path}: empty file (expected a header row)")
    if expected and not expected & set(header):
        seen = _guess_delimiter(first)
        hint = (f"; the header looks {DELIMITERS[seen]}-separated: pass --delimiter '{seen}'"
                if seen and seen != delimiter else "")
        raise DataError(f"{path}: header {first.strip()[:80]!r} has none of the columns "
                        f"{', '.join(sorted(expected))} (read with delimiter {delimiter!r}){hint}")
    try:
        for i, row in enumerate(reader, 1):
            if None in row:
                raise DataError(f"{path}: row {i}: {len(header) + len(row[None])} values for {len(header)} columns "
                                "(a value with the delimiter needs quotes)")
            yield Row(f"{path}: row {i}", {k: v for k, v in row.items()}, path.parent)
    except csv.Error as e:
        raise DataError(f"{path}: row {reader.line_num}: malformed CSV ({e})") from None


def _parquet(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    for i, obj in enumerate(table.to_pylist(), 1):
        yield Row(f"{path}: row {i}", obj, path.parent)


def _undecoded(ds):
    """The dataset with Image columns left as {"bytes", "path"} (decoding is done once, when verifying)."""
    from datasets import Image

    for name, feature in ds.features.items():
        if isinstance(feature, Image):
            ds = ds.cast_column(name, Image(decode=False))
    return ds


def _hf_dir(path: Path) -> Iterator[Row]:
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a Hugging Face datasets directory written by save_to_disk "
                        f"({str(e).splitlines()[0]})") from None
    parts = loaded.items() if isinstance(loaded, DatasetDict) else [(None, loaded)]
    for split, ds in parts:
        label = f"{path}[{split}]" if split else str(path)
        for i, obj in enumerate(_undecoded(ds), 1):
            yield Row(f"{label}: row {i}", obj, path, split)


def read_rows(path: str | Path, delimiter: str | None = None, expected: set[str] = frozenset()) -> Iterator[Row]:
    """Rows of one example file or `datasets` directory; `expected` columns help diagnose a CSV delimiter."""
    path = Path(path)
    if path.is_dir():
        return _hf_dir(path)
    if not path.is_file():
        raise DataError(f"{path}: examples file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(path)
    if suffix == ".json":
        return _json(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return _csv(path, delimiter, set(expected))
    if suffix == ".parquet":
        return _parquet(path)
    raise DataError(f"{path}: unknown examples format {suffix!r} "
                    "(expected .jsonl, .json, .csv, .tsv, .parquet or a datasets directory)")
