"""Read a source dataset into plain rows: local JSONL / JSON / CSV / Parquet files (``.gz`` too), a folder of
them, a ``datasets.save_to_disk`` folder, or a Hugging Face hub id (online, or already in the local cache).

A line of a JSONL file that is not a JSON object is a *bad row* (counted, with its line number, in the datacard),
not an error: one broken line does not stop a 300,000-row dataset. Everything that makes the whole source
unreadable (no such file, not UTF-8, a corrupt Parquet file, an offline hub id) is a one-line
:class:`~safemerge.errors.InputError` naming the source and the fix.
"""

from __future__ import annotations

import csv
import glob
import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safemerge.errors import InputError

if TYPE_CHECKING:
    from safemerge.data.prepare.spec import SourceSpec

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz", ".json.gz", ".csv.gz")
_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_OFFLINE_VALUES = ("1", "true", "yes", "on")


@dataclass
class RawRows:
    """The rows of one source, each with where it came from (``file:line`` or ``file row N``), and the bad lines."""

    rows: list[tuple[str, dict[str, Any]]]
    location: str
    files: list[str] = field(default_factory=list)
    bad: Counter = field(default_factory=Counter)
    bad_at: dict[str, list[str]] = field(default_factory=dict)

    def add_bad(self, reason: str, where: str) -> None:
        self.bad[reason] += 1
        self.bad_at.setdefault(reason, [])
        if len(self.bad_at[reason]) < 5:
            self.bad_at[reason].append(where)


def offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in _OFFLINE_VALUES for v in ("HF_HUB_OFFLINE",
                                                                                 "HF_DATASETS_OFFLINE"))


def resolve_path(path: str, root: Path) -> Path:
    """A source path relative to the spec's folder (``~`` expanded)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def read_source(name: str, src: SourceSpec, root: Path) -> RawRows:
    """All rows of source ``name`` (see the module doc for the formats)."""
    key = f"sources.{name}"
    if src.hub is not None:
        return _read_hub(key, src)
    assert src.path is not None
    path = resolve_path(src.path, root)
    if os.path.isfile(path):  # os.path: pathlib's raises for a name too long
        if src.files is not None:
            raise InputError(f"{key}: 'files' selects files inside a folder but path {path} is a file; drop 'files'")
        out = RawRows([], str(path), [str(path)])
        _read_file(key, path, out)
        return out
    if not os.path.isdir(path):
        raise InputError(f"{key}: {path} not found; download the dataset there (see docs/data.md) or fix 'path'")
    if any((path / m).is_file() for m in _DISK_MARKERS) and src.files is None:
        return _read_disk(key, path, src.split)
    pattern = src.files or "**/*"
    files = sorted(Path(p) for p in glob.glob(str(path / pattern), recursive=True)
                   if os.path.isfile(p) and p.lower().endswith(SUFFIXES))
    if not files:
        raise InputError(f"{key}: no {', '.join(SUFFIXES[:4])} files in {path}" +
                         (f" matching {pattern!r}" if src.files else "") + "; fix 'path' or 'files'")
    out = RawRows([], str(path), [str(f) for f in files])
    for f in files:
        _read_file(key, f, out)
    return out


def _text(key: str, path: Path) -> str:
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"{key}: {path} is not a valid gzip file ({exc}); download it again") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{key}: {path} is not UTF-8 text (invalid byte at offset {exc.start}); save it as "
                         "UTF-8") from None


def _read_file(key: str, path: Path, out: RawRows) -> None:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        out.rows += [(f"{path} row {i + 1}", r) for i, r in enumerate(_parquet_rows(key, path))]
    elif name.endswith(".csv"):
        _read_csv(key, path, out)
    elif name.endswith(".json") and (whole := _json_array(_text(key, path))) is not None:
        for i, r in enumerate(whole, 1):
            if isinstance(r, dict):
                out.rows.append((f"{path} item {i}", r))
            else:
                out.add_bad("not_an_object", f"{path} item {i}")
    else:
        _read_jsonl(path, _text(key, path), out)


def _json_array(text: str) -> list[Any] | None:
    """A ``.json`` file holding one JSON array (else None: it is read as JSON lines)."""
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def _read_jsonl(path: Path, text: str, out: RawRows) -> None:
    for ln, line in enumerate(text.split("\n"), 1):  # "\n" only: JSON strings may hold U+2028 raw
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            out.add_bad("invalid_json", f"{path}:{ln}")
            continue
        if isinstance(row, dict):
            out.rows.append((f"{path}:{ln}", row))
        else:
            out.add_bad("not_an_object", f"{path}:{ln}")


def _read_csv(key: str, path: Path, out: RawRows) -> None:
    import io

    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # long prompts/answers; restored below (process-wide setting)
    try:
        reader = csv.DictReader(io.StringIO(_text(key, path), newline=""))
        try:
            for row in reader:
                row.pop(None, None)  # cells beyond the header
                out.rows.append((f"{path}:{reader.line_num}", dict(row)))
        except csv.Error as exc:
            raise InputError(f"{key}: {path}:{reader.line_num}: not valid CSV ({exc}); fix the file") from None
    finally:
        csv.field_size_limit(old)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parquet_rows(key: str, path: Path) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    except Exception as exc:  # noqa: BLE001 - pyarrow / datasets raise many types; all mean "cannot read"
        raise InputError(f"{key}: {path}: cannot read this Parquet file ({type(exc).__name__}: "
                         f"{_first_line(exc)}); download it again") from None
    return ds.to_list()  # type: ignore[union-attr]


def _read_disk(key: str, path: Path, split: str | None) -> RawRows:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path), keep_in_memory=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{key}: {path}: cannot read this save_to_disk folder ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = sorted(ds)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in ds:
            raise InputError(f"{key}: {path} has splits {', '.join(splits)}; set 'split' to one of them")
        ds = ds[split]
    elif split is not None:
        raise InputError(f"{key}: {path} is a single dataset without splits; drop 'split'")
    where = f"{path}" + (f" [{split}]" if split else "")
    return RawRows([(f"{where} row {i + 1}", r) for i, r in enumerate(ds.to_list())], where, [str(path)])


def _read_hub(key: str, src: SourceSpec) -> RawRows:
    import datasets

    split = src.split or "train"
    try:
        ds = datasets.load_dataset(src.hub, src.config, split=split)
    except Exception as exc:  # noqa: BLE001 - offline, no access, no such dataset/split: all user-fixable
        if offline():
            raise InputError(f"{key}: hub dataset {src.hub!r} is not in the local cache and the hub is offline "
                             f"(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); download it on a machine with internet "
                             f"(huggingface-cli download {src.hub} --repo-type dataset --local-dir DIR) and give "
                             "path: DIR instead of hub") from None
        raise InputError(f"{key}: cannot load hub dataset {src.hub!r} (config {src.config}, split {split}): "
                         f"{type(exc).__name__}: {_first_line(exc)}; check the id, config and split") from None
    where = f"hub:{src.hub}" + (f":{src.config}" if src.config else "") + f":{split}"
    return RawRows([(f"{where} row {i + 1}", dict(r)) for i, r in enumerate(ds)], where, [where])
