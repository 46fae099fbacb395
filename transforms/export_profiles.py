"""How an export reads the profile extract: each row's status (suppressed, opted out, consent unknown or
eligible: :func:`row_status`) and the user IDs the data source shares an eligible row by
(:func:`user_ids`, hashed or encrypted as configured). :class:`ReadTargetedProfiles` lets the
targeted and held profiles through a Bloom filter as candidate rows, sharded by ``profile_id`` for
:class:`transforms.export_classify.ClassifyShard`, and emits the user IDs of every non-eligible row
(``BLOCKED``); :class:`ReadBlockedProfiles` is the first, narrow pass that adds the profiles with a
non-eligible row to that filter, so that all their rows meet in their shard.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import concat
from transforms.config import DataSourceConfig, JobConfig
from transforms.encrypt import build_encryptor
from transforms.errors import RowProblem
from transforms.export_classify import (
    BLOCKED_SCHEMA,
    CANDIDATE_SCHEMA,
    CONSENT_UNKNOWN,
    EXPORTED_SCHEMA,
    OK,
    OPTED_OUT,
    SUPPRESSED,
    _shards,
)
from transforms.export_zeros import stripped_zero_led
from transforms.extract_copies import FileSketcher
from transforms.keys import profile_keys
from transforms.onboarding import usable_user_ids
from transforms.outcomes import Metric, count, runner_counter
from transforms.parallel import HeapDoFn
from transforms.profiles import KEY_PREFIX, at_row, counted_profiles, read_profiles
from transforms.stable_hash import KeyFilter, hash64
from transforms.suppression import Suppressor, suppressed_columns

if TYPE_CHECKING:
    from transforms.export_spec import ExportSpec


def user_ids(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, encryptor=None) -> pa.Table:
    """``(profile_id, user_id)``: the IDs the data source shares each profile by, usable ones only."""
    keyed, _ = profile_keys(profiles, ds, cfg)
    ids = keyed["key"].combine_chunks()
    if encryptor is not None:
        ids = encryptor.encrypt(ids)
    ok = usable_user_ids(ids)
    return pa.table({"profile_id": pc.filter(keyed["profile_id"], ok), "user_id": pc.filter(ids, ok)},
                    schema=EXPORTED_SCHEMA)


def row_status(profiles: pa.Table, cfg: JobConfig, ds: DataSourceConfig,
               suppressor: Suppressor | None) -> np.ndarray:
    """Each standardized row's status: SUPPRESSED, OPTED_OUT, CONSENT_UNKNOWN or OK. Raises
    :class:`~transforms.errors.RowProblem` at a phone that cannot be compared with the phone lists
    (:meth:`Suppressor.first_unread_phone`)."""
    opt = profiles["opt_out"]
    opted = np.asarray(pc.fill_null(opt, False).to_numpy(zero_copy_only=False), dtype=bool)
    unknown = np.asarray(pc.is_null(opt).to_numpy(zero_copy_only=False), dtype=bool)
    status = np.where(opted, OPTED_OUT, np.where(unknown, CONSENT_UNKNOWN, OK)).astype(np.int8)
    if suppressor:
        for kind, name in suppressed_columns(cfg, ds):
            column = KEY_PREFIX + name
            if column in profiles.column_names:
                if kind == "phone" and (row := suppressor.first_unread_phone(profiles[column])) is not None:
                    raise RowProblem(row, f"column '{name}': a phone written without its country code "
                                     "is read in no region, so it cannot be compared with the phone suppression "
                                     "list: set profiles.default_region (where the extract's phones are dialled)")
                hit = suppressor.suppressed(suppressor.normalized(profiles[column], kind), kind, raw=profiles[column])
                status[np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)] = SUPPRESSED
    return status


def located_status(profiles: pa.Table, cfg: JobConfig, ds: DataSourceConfig, suppressor: Suppressor | None,
                   path: str, offset: int) -> np.ndarray:
    """:func:`row_status` of a batch of ``path`` after its first ``offset`` rows (a problem names its line)."""
    try:
        return row_status(profiles, cfg, ds, suppressor)
    except RowProblem as bad:
        raise at_row(path, cfg.profiles.resolved_format, bad.problem, bad.row, offset) from None


def candidate_rows(profiles: pa.Table, status: np.ndarray, ds: DataSourceConfig, cfg: JobConfig,
                   encryptor=None) -> pa.Table:
    """Standardized profile rows and their statuses -> :data:`CANDIDATE_SCHEMA`. User IDs are
    computed (hashed, encrypted) for eligible rows only."""
    base = pa.table({"profile_id": profiles["profile_id"], "status": pa.array(status, pa.int8()),
                     "user_id": pa.nulls(profiles.num_rows, pa.string())}, schema=CANDIDATE_SCHEMA)
    pairs = user_ids(profiles.filter(pa.array(status == OK)), ds, cfg, encryptor)
    pairs = pa.table({"profile_id": pairs["profile_id"], "status": pa.array(np.zeros(pairs.num_rows, np.int8)),
                      "user_id": pairs["user_id"]}, schema=CANDIDATE_SCHEMA)
    return concat([base, pairs], CANDIDATE_SCHEMA)


def blocked_user_ids(profiles: pa.Table, status: np.ndarray, ds: DataSourceConfig, cfg: JobConfig,
                     encryptor=None) -> pa.Table:
    """:data:`BLOCKED_SCHEMA`: the user IDs of the rows that are not eligible, with their status."""
    parts = []
    for code in (CONSENT_UNKNOWN, OPTED_OUT, SUPPRESSED):
        if (status == code).any():
            ids = user_ids(profiles.filter(pa.array(status == code)), ds, cfg, encryptor)["user_id"]
            parts.append(pa.table({"user_id": ids, "status": pa.array(np.full(len(ids), code, np.int8))}))
    return concat(parts, BLOCKED_SCHEMA)


class ReadTargetedProfiles(HeapDoFn):
    """One profile extract -> shards ``(profile bucket, candidate rows)`` of the profiles the Bloom
    filter (a side input: targets and earlier pairs) lets through, with their statuses and user IDs
    for the data source; the user IDs of every non-eligible row, sharded by user ID (``BLOCKED``);
    counts (``COUNTS``); hashes of zero-led ids without their zeros (``ZERO_LED``,
    :mod:`transforms.export_zeros`). The suppression lists come as a side input. Keys are loaded in setup()."""

    COUNTS, BLOCKED, ZERO_LED = "counts", "blocked", "zero_led"
    SKETCHES = "extract_sketches"  # per file, the sketch of its ids and rows (transforms.extract_copies)

    def __init__(self, cfg: JobConfig, spec: ExportSpec, buckets: int):
        self._cfg, self._spec, self._buckets = cfg, spec, buckets

    def setup(self):
        super().setup()
        self._encryptor = build_encryptor(self._spec.data_source, self._spec.clock)
        self._read = runner_counter("profiles_read")
        self._suppressor = None

    def process(self, path: str, profile_filter: KeyFilter, suppression: list):
        ds = self._spec.data_source
        if self._suppressor is None:
            self._suppressor = Suppressor(suppression, ds, self._cfg.profile_region_for(ds))
        sketcher = FileSketcher()
        offset = 0  # the file's rows before the batch: a problem names its line
        for profiles, entries in counted_profiles(path, self._cfg, export=True):
            self._read.inc(profiles.num_rows)
            sketcher.add(profiles)
            for n in [count(Metric.PROFILES_READ, profiles.num_rows),
                      count(Metric.CONSENT_UNKNOWN_ROWS, profiles["opt_out"].null_count), *entries]:
                yield beam.pvalue.TaggedOutput(self.COUNTS, n)
            status = located_status(profiles, self._cfg, ds, self._suppressor, path, offset)
            offset += profiles.num_rows
            if (status != OK).any():
                blocked = blocked_user_ids(profiles, status, ds, self._cfg, self._encryptor)
                yield beam.pvalue.TaggedOutput(self.COUNTS, count(Metric.BLOCKED_USER_IDS, blocked.num_rows))
                for piece in _shards(blocked, self._buckets, "user_id"):
                    yield beam.pvalue.TaggedOutput(self.BLOCKED, piece)
            if len(zero_led := stripped_zero_led(profiles["profile_id"], profile_filter)):
                yield beam.pvalue.TaggedOutput(self.ZERO_LED, zero_led)
            keep = profile_filter.might_contain(hash64(profiles["profile_id"]))
            if keep.any():
                rows = candidate_rows(profiles.filter(pa.array(keep)), status[keep], ds, self._cfg, self._encryptor)
                yield from _shards(rows, self._buckets)
        yield beam.pvalue.TaggedOutput(self.SKETCHES, sketcher.sketch(path))


class ReadBlockedProfiles(HeapDoFn):
    """One profile extract -> the hashes of the profile ids of its rows that are not eligible (a
    numpy array per batch, for the Bloom filter): the first pass, reading the id, opt-out and
    suppression columns only. The suppression lists come as a side input."""

    def __init__(self, cfg: JobConfig, spec: ExportSpec):
        self._cfg, self._spec = cfg, spec

    def setup(self):
        super().setup()
        self._suppressor = None

    def process(self, path: str, suppression: list):
        ds = self._spec.data_source
        if self._suppressor is None:
            self._suppressor = Suppressor(suppression, ds, self._cfg.profile_region_for(ds))
        # No key column but those the suppression lists are compared with (transforms.suppression.suppressed_columns)
        own = [ds] if ds.match_on and self._cfg.suppression else []
        narrow = self._cfg.model_copy(update={"data_sources": own})
        offset = 0
        for profiles in read_profiles(path, narrow, export=True):
            status = located_status(profiles, self._cfg, ds, self._suppressor, path, offset)
            offset += profiles.num_rows
            if (status != OK).any():
                yield hash64(profiles["profile_id"].filter(pa.array(status != OK)))
