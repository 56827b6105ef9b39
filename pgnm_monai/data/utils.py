"""Shared helpers for the data sources: CSV reading, file checks, hashing, seeded splits, the shared data path.

CSV files (clinical labels, split files, RadImageNet split CSVs) are read by :func:`read_csv`: UTF-8 with or
without a byte-order mark, UTF-16 with a byte-order mark, and anything else as Latin-1 (ISO-8859-1, where
every byte is a character, so a Latin-1 export is read as written). A file holding NUL characters, a
malformed row or a repeated column name is refused with an error naming the file and the line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pgnm_monai.settings import MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_ENV

__all__ = [
    "require_folder",
    "require_regular_file",
    "check_pixel_count",
    "file_type_problem",
    "max_image_pixels",
    "read_csv",
    "pixel_hash",
    "split_by_group",
    "shared_data_dir",
    "DEFAULT_FRACTIONS",
]

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def file_type_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a regular file (e.g. ``"is a FIFO (named pipe), not a regular file"``), else ``None``.

    Uses ``os.stat`` only (symbolic links followed): the file is never opened, so a FIFO cannot block.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a broken symbolic link" if os.path.islink(path) else "does not exist"
    except OSError as e:
        return f"cannot be inspected ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    what = next((name for test, name in kinds if test(mode)), "a special file")
    link = " (through a symbolic link)" if os.path.islink(path) else ""
    return f"is {what}{link}, not a regular file"


def require_regular_file(path: str, what: str) -> None:
    """``FileNotFoundError`` / ``ValueError`` naming ``path`` unless it is a regular file (never opens it)."""
    problem = file_type_problem(path)
    if problem == "does not exist":
        raise FileNotFoundError(f"{what} {path} does not exist")
    if problem:
        raise ValueError(f"{what} {path} {problem}; refused")


def require_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a ``Path`` when it is a folder; else ``FileNotFoundError`` (nothing there) or
    ``NotADirectoryError`` (a file: "is a file, expected a folder"), naming ``what`` and ``path``."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{what} {path} is a file, expected a folder")
    raise FileNotFoundError(f"{what} {path} does not exist")


def max_image_pixels() -> int:
    """The most pixels one image may have: ``$PGNM_MAX_IMAGE_PIXELS`` when set, else
    :data:`pgnm_monai.settings.MAX_IMAGE_PIXELS`.

    Raises:
        ValueError: the environment variable is not a whole number > 0, naming it.
    """
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"environment variable {MAX_IMAGE_PIXELS_ENV} is {text!r}; give a whole number of pixels > 0 (the default"
            f" is {MAX_IMAGE_PIXELS}), or unset it."
        )
    return value


def check_pixel_count(source: str, shape: Sequence[int], limit: int | None = None) -> None:
    """Refuse an image whose header states more than ``limit`` pixels (:func:`max_image_pixels` when ``None``),
    before it is decoded: ``ValueError`` naming ``source``, its size, the limit and how to raise it."""
    limit = max_image_pixels() if limit is None else int(limit)
    count = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if count > limit:
        raise ValueError(
            f"{source} is {' x '.join(str(int(s)) for s in shape)} = {count:,} pixels, over the limit of {limit:,} "
            "pixels per image (a decompression bomb, or an image too large to train on); resize the file, or raise "
            f"the limit with the environment variable {MAX_IMAGE_PIXELS_ENV}={count}."
        )


def _decode_csv(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_csv(path: str | os.PathLike, what: str = "CSV file") -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV file with a header row (encodings: see the module docstring).

    Args:
        path: the CSV file.
        what: how errors name the file (e.g. ``"clinical labels CSV"``).

    Returns:
        the stripped column names, and ``(line number, {column: stripped value})`` for every non-blank row;
        a short row gets ``""`` for its missing fields.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a regular file, NUL characters, a repeated column name, a row with more fields than
            the header, or a malformed row; the message names the file (and the line).
    """
    path = os.fspath(path)
    problem = file_type_problem(path)
    if problem == "does not exist":
        raise FileNotFoundError(f"{what} {path} does not exist")
    if problem:
        raise ValueError(f"{what} {path} {problem}")
    text = _decode_csv(Path(path).read_bytes())
    if "\x00" in text:
        raise ValueError(
            f"{what} {path} holds NUL characters: it is not a text CSV (a spreadsheet file, or UTF-16 without"
            " a byte-order mark?); save it as CSV in UTF-8"
        )
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [c.strip() for c in next(reader, [])]
        repeated = sorted({c for c in header if c and header.count(c) > 1})
        if repeated:
            raise ValueError(f"{what} {path}: column(s) {repeated} appear more than once in the header {header}")
        rows = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            extra = [f for f in fields[len(header) :] if f.strip()]
            if extra:
                raise ValueError(
                    f"{what} {path}, line {reader.line_num}: {len(fields)} fields but the header has"
                    f" {len(header)} ({header}); quote values that contain commas"
                )
            values = ([f.strip() for f in fields] + [""] * len(header))[: len(header)]
            rows.append((reader.line_num, {k: v for k, v in zip(header, values, strict=True) if k}))
    except csv.Error as e:
        raise ValueError(f"{what} {path}, line {reader.line_num}: malformed CSV ({e})") from e
    return header, rows


def pixel_hash(array: np.ndarray) -> str:
    """MD5 of an array's shape, dtype and bytes: equal hashes mean pixel-identical images."""
    a = np.ascontiguousarray(array)
    h = hashlib.md5(f"{a.shape}{a.dtype}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _cut(n: int, train: bool, val: bool, test: bool, ftrain: float, fval: float) -> tuple[int, int]:
    """``(n_train, n_val)`` of a stratum of ``n`` groups (the rest is test); a split that is off gets none."""
    if n < train + val + test:  # too few groups for every split: train, then test, then val
        n_train = min(n, int(train))
        n_test = min(n - n_train, int(test))
        return n_train, n - n_train - n_test if val else 0
    n_train = min(max(1, int(round(ftrain * n))), n - val - test) if train else 0
    if not test:
        return n_train, n - n_train
    n_val = min(max(1, int(round(fval * n))), n - n_train - 1) if val else 0
    return n_train, n_val


def split_by_group(
    groups: Sequence[str],
    labels: Sequence[int],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> list[str]:
    """Seeded train/val/test assignment of items by group (patient/series), stratified by the group's label.

    Every item of a group gets the same split, so no patient is in two splits. Within each label stratum
    (a group's label is its most frequent item label) the groups are shuffled with ``seed`` and cut by
    ``fractions``. A split whose fraction is 0 gets no group; every other split gets at least one group of a stratum
    that has enough groups; a stratum of fewer groups fills train, then test, then val (a stratum of 1 group goes
    to train, of 2 groups to train and test).

    Returns:
        the split name (``"train"``, ``"val"`` or ``"test"``) of each item, in input order.
    """
    if len(groups) != len(labels):
        raise ValueError(f"groups ({len(groups)}) and labels ({len(labels)}) must have the same length")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be 3 non-negative numbers (train, val, test), got {fractions}")
    total = float(sum(fractions))
    ftrain, fval = fractions[0] / total, fractions[1] / total
    group_labels: dict[str, Counter] = defaultdict(Counter)
    for g, y in zip(groups, labels, strict=True):
        group_labels[str(g)][int(y)] += 1
    strata: dict[int, list[str]] = defaultdict(list)
    for g in sorted(group_labels):
        strata[min(group_labels[g].most_common(), key=lambda t: (-t[1], t[0]))[0]].append(g)
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    for y in sorted(strata):
        gs = strata[y]
        order = [gs[i] for i in rng.permutation(len(gs))]
        n = len(order)
        n_train, n_val = _cut(n, ftrain > 0, fval > 0, fractions[2] > 0, ftrain, fval)
        for i, g in enumerate(order):
            assign[g] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return [assign[str(g)] for g in groups]


def shared_data_dir() -> Path:
    """The real-data folder: ``$PGNM_SHARED_DATA`` or ``<project root>/../shared/data`` (may not exist)."""
    env = os.environ.get("PGNM_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
