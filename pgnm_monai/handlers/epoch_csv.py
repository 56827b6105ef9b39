"""A CSV of one row per epoch that a resumed run continues: the storage of the per-epoch handlers."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pgnm_monai.atomic_files import atomic_write_csv

__all__ = ["EpochCSV"]

logger = logging.getLogger(__name__)


class EpochCSV:
    """Rows keyed by epoch, kept in ``path`` and replaced atomically on every :meth:`put`.

    :meth:`load` reads an existing file (rows without an integer ``epoch`` are skipped; an unreadable file is
    rewritten with a warning); :meth:`put` drops the rows of that epoch and later ones, so a resumed run
    continues the file without duplicates.

    Args:
        path: the CSV file.
        columns: its columns, ``epoch`` first.
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]) -> None:
        self.path = os.fspath(path)
        self.columns = tuple(columns)
        self.rows: dict[int, dict[str, Any]] = {}

    def load(self) -> None:
        """Read the rows of an existing file (none when there is no file)."""
        self.rows = {}
        if not os.path.isfile(self.path):
            return
        try:
            with open(self.path, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        epoch = int(row.get("epoch") or "")
                    except ValueError:
                        continue
                    self.rows[epoch] = {**row, "epoch": epoch}
        except (OSError, csv.Error) as e:
            logger.warning(f"could not read {self.path} ({e}); it will be rewritten from this run's epochs.")
            self.rows = {}

    def put(self, epoch: int, row: Mapping[str, Any]) -> None:
        """Set the row of ``epoch`` (dropping later ones) and write the file atomically."""
        epoch = int(epoch)
        self.rows = {e: r for e, r in self.rows.items() if e < epoch}
        self.rows[epoch] = {**row, "epoch": epoch}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        table = [[self.rows[e].get(c, "") for c in self.columns] for e in sorted(self.rows)]
        atomic_write_csv(self.path, self.columns, table)
