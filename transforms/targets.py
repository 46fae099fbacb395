"""An export's target lists: the profile ids a user's targeting selected, read and sharded.

A targets file is a CSV file with a header, or a Parquet file, with a ``profile_id`` column (other
columns are ignored). Ids are read as strings, exactly as written: no trimming, and ``NA`` or
``NULL`` are ids like any other; ids stored as floats are the integers they hold, and ids written as
a number's formatted text (``1.23457E+11``, ``50,000``) fail at their line, as in profile extracts
(:func:`transforms.profile_columns.profile_id_text`). A compressed CSV (``.csv.gz``...) cut short fails.
Every row is a distinct target, a repeat of one (counted in the classification, where all rows of an id
meet), or a blank id (null or empty: counted here and dropped).
"""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.arrow_utils import split_by_bucket
from transforms.csv_reader import csv_tables
from transforms.errors import InputError, RowProblem
from transforms.extract_lines import csv_line_of_row
from transforms.outcomes import Metric, runner_counter, count
from transforms.profile_columns import profile_id_text
from transforms.stable_hash import buckets_from_hash, hash64
from transforms.storage import format_from_extension, open_input

TARGETS_COLUMN = "profile_id"
TARGET_SCHEMA = pa.schema([(TARGETS_COLUMN, pa.string())])


def targets_format(path: str) -> str:
    fmt = format_from_extension(path)
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"targets must be .csv or .parquet files, not '{fmt}'")
    return fmt


def read_targets(path: str) -> Iterator[pa.Array]:
    """Yield the ``profile_id`` column of a targets file (CSV with a header, or Parquet) as strings. An
    id written as a float's text fails at its line (CSV) or row (Parquet)."""
    fmt = targets_format(path)
    offset = 0  # rows before the current batch
    try:
        with open_input(path, fmt) as handle:
            if fmt == "parquet":
                pf = pq.ParquetFile(handle)
                if TARGETS_COLUMN not in pf.schema_arrow.names:
                    raise InputError(path, f"no '{TARGETS_COLUMN}' column")
                columns = (batch.column(0) for batch in pf.iter_batches(batch_size=1 << 20, columns=[TARGETS_COLUMN]))
            else:
                try:
                    tables = csv_tables(handle, path, [TARGETS_COLUMN], strings_can_be_null=False)
                except KeyError:  # (pa.ArrowKeyError too)
                    raise InputError(path, f"no '{TARGETS_COLUMN}' column") from None
                columns = (table.column(0) for table in tables)
            for column in columns:
                yield profile_id_text(column, path, TARGETS_COLUMN)
                offset += len(column)
    except InputError:
        raise
    except RowProblem as bad:
        row = offset + bad.row
        if fmt == "parquet":
            raise InputError(path, f"row {row + 1}: {bad.problem}") from None
        raise InputError(path, bad.problem, line=csv_line_of_row(path, row)) from None
    except (pa.ArrowInvalid, OSError, ValueError, KeyError) as exc:
        # Arrow's message may quote the data: only its kind is told.
        problem = ("not UTF-8 text: save the targets as UTF-8" if "UTF8" in str(exc)
                   else "an empty file" if "Empty CSV file" in str(exc)
                   else f"cannot read the targets ({type(exc).__name__})")
        raise InputError(path, problem) from None


class ReadTargetFile(beam.DoFn):
    """One targets file -> shards ``(bucket, ids)`` (main output, :data:`TARGET_SCHEMA` tables), the
    ids' hashes (``HASHES``, for the Bloom filter) and counts (``COUNTS``). Blank ids (null or empty)
    are counted ``blank_target_ids`` and dropped."""

    COUNTS, HASHES = "counts", "target_hashes"

    def __init__(self, buckets: int):
        self._buckets = buckets

    def setup(self):
        self._rows = runner_counter("target_rows")

    def process(self, path: str):
        for ids in read_targets(path):
            self._rows.inc(len(ids))
            blank = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True)
            kept = pc.filter(ids, pc.invert(blank))
            yield beam.pvalue.TaggedOutput(self.COUNTS, count(Metric.TARGET_ROWS, len(ids)))
            yield beam.pvalue.TaggedOutput(self.COUNTS, count(Metric.BLANK_TARGET_IDS, len(ids) - len(kept)))
            if len(kept):
                hashes = hash64(kept)
                yield beam.pvalue.TaggedOutput(self.HASHES, hashes)
                table = pa.table({TARGETS_COLUMN: kept}, schema=TARGET_SCHEMA)
                yield from split_by_bucket(table, buckets_from_hash(hashes, self._buckets))
