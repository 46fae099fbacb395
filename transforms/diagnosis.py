"""Mismatch diagnosis: why a data source's lines did not match, as config changes with the number of
sampled lines each would match -- or decrypt, for an encrypted source's failures (report.json, each
data source's ``diagnosis`` list, whose ``would_match`` counts either).

The graph, after the join:

1. **Sample** (:mod:`transforms.diagnosis_sample`): the dump reader and the join send each chunk's and
   shard's candidates; ``SampleLines`` keeps the ``diagnosis_sample`` lines of smallest hash per data
   source (deterministic on every runner, bounded memory).
2. **Screen**: the profile reader already emits a fixed 1/16 of the profiles with every scalar column
   (:func:`~transforms.diagnosis_forms.screen_rows`); ``ScreenForms`` tries every alternative of the
   plan (:mod:`transforms.diagnosis_plan`) on as many of them as the samples' sizes need
   (:func:`screen_step`) and keeps the probes whose form matched anything. This is what runs when the
   data sources match as configured.
3. **Confirm**: ``ConfirmForms`` reads the extract again -- only when the screen kept something -- and
   computes the forms worth it (:func:`worth_confirming`) over every profile: exact counts of the
   sampled lines each would match.
4. ``AssembleFindings`` (:mod:`transforms.diagnosis_findings`): one ``(data source, findings)`` per
   data source with a sample, for the report; the decrypt failures of encrypted data sources are
   looked at there (:mod:`transforms.diagnosis_crypto`).
"""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.config import JobConfig
from transforms.crypto import build_decryptor
from transforms.diagnosis_crypto import cbc_findings, failed_tokens, load_cbc_material
from transforms.diagnosis_gcm import gcm_findings
from transforms.diagnosis_findings import assemble, preference, threshold
from transforms.diagnosis_forms import (SCREEN_SHARE, Form, ProfileKeys, column_kinds, extract_column, in_order,
                                       keys_kept, none_first, spread)
from transforms.diagnosis_plan import Probe, probes, sample_views
from transforms.diagnosis_sample import SampleLines, rejected_rows
from transforms.memory import release_free_memory
from transforms.parallel import in_global_window
from transforms.profiles import KEY_PREFIX, read_profiles

# The screen looks at enough profiles for a form explaining a finding's minimum of lines to show on
# about SCREEN_HITS of them (missed with a probability of about e**-6 = 0.25%), and at 1 in 16 at
# most: a form explaining fewer than ~100 lines may be missed (the report never claims it absent).
SCREEN_HITS = 6
MAX_SCREEN_STEP = 16


class DiagnosisInputs(NamedTuple):
    candidates: beam.PCollection  # (data source, (sample size, candidate table)): dump reader and join
    screen: beam.PCollection  # the profile reader's screen rows (standardized profile tables)
    profile_files: beam.PCollection  # the extract's file paths


class _Probing(beam.DoFn):
    """Shared by the screen and the confirmation: each data source's views of its sample, computed
    once per DoFn instance (the sample is the same side input for the whole run)."""

    def __init__(self, cfg: JobConfig):
        self._cfg = cfg

    def setup(self):
        self._views: dict[str, dict] = {}

    def finish_bundle(self):
        release_free_memory()

    def views(self, name: str, sample) -> dict:
        if name not in self._views:
            self._views[name] = sample_views(self._cfg.data_source(name), sample)
        return self._views[name]


class ScreenForms(_Probing):
    """Screen rows -> ``(data source, probe, sample rows it matched)`` for every probe whose profile
    form matched a sampled line on them (probe as a plain tuple; rows may be empty for a probe of a
    form another probe matched).

    An element's rows are screened with those of the bundle's other elements whose columns read
    alike (:func:`column_kinds`), once they hold HOLD_ROWS or at the bundle's end: the probes and
    the profiles' keys under every form cost the same for 300 rows as for 30,000, and an extract of
    200 parts (Spark's) sent 200 elements. A probe's rows are a set of sampled lines, which
    :func:`worth_confirming` unites over elements anyway, so what is screened together gives what
    was screened apart."""

    HOLD_ROWS = 1 << 16

    def start_bundle(self):
        self._held: dict[tuple, list[pa.Table]] = {}
        self._rows, self._samples = 0, None

    def finish_bundle(self):
        yield from (in_global_window(out) for out in self._screen())
        super().finish_bundle()

    def process(self, profiles, samples):
        if not samples:
            return
        profiles = profiles.take(spread(profiles.num_rows, screen_step(samples), salt=1))
        kinds = column_kinds(profiles, self._cfg)
        self._held.setdefault(tuple(kinds.items()), []).append(profiles)
        self._rows, self._samples = self._rows + profiles.num_rows, samples
        if self._rows >= self.HOLD_ROWS:
            yield from self._screen()

    def _screen(self):
        held, self._held, self._rows, samples = self._held, {}, 0, self._samples
        for kinds, tables in held.items():
            yield from self._screened(pa.concat_tables(tables, promote_options="permissive"), dict(kinds), samples)

    def _screened(self, profiles: pa.Table, kinds: dict, samples: dict):
        plans = {}
        for name, sample in sorted(samples.items()):
            views = self.views(name, sample)
            plans[name] = probes(self._cfg.data_source(name), self._cfg, views, kinds)
        keys = ProfileKeys(profiles, in_order({p.form for plan in plans.values() for p in plan}), self._cfg)
        for name, plan in plans.items():
            views = self.views(name, samples[name])
            hits = {p: keys.hit_rows(views[p.view], p.form) for p in plan}
            matched = {p.form for p, rows in hits.items() if len(rows)}
            for probe in plan:
                if probe.form in matched:
                    yield name, (tuple(probe.form), probe.view, probe.kind, probe.suggestion), hits[probe]


def worth_confirming(screened: list) -> list[tuple[str, Probe]]:
    """The screened probes whose form is worth computing over every profile: per data source, a
    form is kept when one of its probes matched, on the screen, a line that no probe matching more
    lines there matched (uid2 rules match a subset of what adobe rules match, when a partner used
    adobe's), and, of probes matching exactly the same lines, the preferred one. A probe dropped so
    would add a finding's worth of lines over all profiles only with the screen's own small miss
    probability."""
    rows: dict[tuple, np.ndarray] = {}
    for name, probe, hit in screened:  # each batch of the screen sends its own: unite them
        key = (name, Probe(Form(*probe[0]), *probe[1:]))
        rows[key] = np.union1d(rows.get(key, np.zeros(0, np.int64)), hit)
    kept_forms: set[tuple[str, Form]] = set()
    for name in sorted({name for name, _ in rows}):
        mine = sorted(((probe, hit) for (n, probe), hit in rows.items() if n == name and len(hit)),
                      key=lambda ph: (-len(ph[1]), preference(ph[0].kind, ph[0].suggestion)))
        seen: set[bytes] = set()  # of probes matching exactly the same lines, the preferred one (adobe, not meta)
        for probe, hit in mine:
            better = [h for _, h in mine if len(h) > len(hit)]  # equal counts, other lines: both kept
            if hit.tobytes() not in seen and (not better or len(np.setdiff1d(hit, np.concatenate(better)))):
                kept_forms.add((name, probe.form))
            seen.add(hit.tobytes())
    return sorted(((name, probe) for name, probe in rows if (name, probe.form) in kept_forms), key=none_first)


def screen_step(samples: dict) -> int:
    """Screen 1 in n screen rows: as few as still show a form at the findings' threshold about
    SCREEN_HITS times (the smallest threshold of the data sources decides). A big sample has a high
    threshold, so the screen can look at fewer profiles: at most 1 in SCREEN_SHARE * MAX_SCREEN_STEP."""
    least = min(threshold(t.num_rows) for t in samples.values())
    return max(1, min(MAX_SCREEN_STEP, least // (SCREEN_HITS * SCREEN_SHARE)))


class ConfirmForms(_Probing):
    """One extract file -> ``((data source, kind, suggestion), sample rows)`` for the probes the screen
    kept, over every profile. Reads nothing when the screen kept none."""

    def process(self, path: str, samples, screened):
        kept = worth_confirming(screened)
        if not kept:
            return
        forms = in_order({probe.form for _, probe in kept})
        extra = sorted({extract_column(self._cfg, f.column) for f in forms if f.column.startswith(KEY_PREFIX)})
        for profiles in read_profiles(path, self._cfg, extra=extra):
            keys = ProfileKeys(profiles, forms, self._cfg)
            for name, probe in kept:
                rows = keys.hit_rows(self.views(name, samples[name])[probe.view], probe.form)
                # A change of normalization: how many profile keys it keeps (none: it loses every match).
                same = (keys_kept(profiles, probe.form, self._cfg.data_source(name).normalization)
                        if probe.kind == "normalization" else None)
                if len(rows) or same:
                    yield (name, probe.kind, probe.suggestion), rows, same


class AssembleFindings(beam.DoFn):
    """Once, after the confirmation: ``(data source, [finding])`` for each data source with a sample.
    The findings of decrypt failures are made here (:mod:`transforms.diagnosis_crypto`); the CBC key
    and IV references, and the GCM key rings (on the clock ``run_date``), are read in setup()."""

    def __init__(self, cfg: JobConfig, run_date: datetime | None = None):
        self._cfg = cfg
        self._run_date = run_date

    def setup(self):
        self._material = {ds.name: load_cbc_material(ds) for ds in self._cfg.data_sources
                          if ds.decrypts and self._cfg.sample_size(ds) and ds.encryption.algorithm == "aes-cbc"}
        self._rings = {ds.name: build_decryptor(ds, self._run_date) for ds in self._cfg.data_sources
                       if ds.decrypts and self._cfg.sample_size(ds) and ds.encryption.algorithm == "aes-gcm"}

    def process(self, _, samples, probed):
        by_source: dict[str, dict] = {}
        kept: dict[str, dict] = {}
        for (name, kind, suggestion), rows, same in probed:  # one per probe, extract batch and file: unite them
            found = by_source.setdefault(name, {})
            found[(kind, suggestion)] = np.union1d(found.get((kind, suggestion), np.zeros(0, np.int64)), rows)
            if same is not None:
                counted = kept.setdefault(name, {})
                counted[(kind, suggestion)] = np.add(counted.get((kind, suggestion), (0, 0)), same)
        for name, sample in sorted(samples.items()):
            ds = self._cfg.data_source(name)
            yield name, assemble(ds, self._cfg, sample.num_rows, by_source.get(name, {}), self._decryption(ds, sample),
                                 rejected_rows(sample), sample["value"].combine_chunks(), kept.get(name, {}))

    def _decryption(self, ds, sample) -> list:
        if not ds.decrypts or not sample.num_rows:
            return []
        if ds.encryption.algorithm == "aes-gcm":
            return gcm_findings(ds, sample, self._rings[ds.name], self._cfg.region_for(ds))
        return cbc_findings(ds, failed_tokens(sample), self._material[ds.name], self._cfg.region_for(ds))


class DiagnoseMismatches(beam.PTransform):
    """:class:`DiagnosisInputs` -> ``(data source, [finding])`` for each data source with sampled lines.
    ``run_date``: the clock of the AES-GCM key rings, as the import's."""

    def __init__(self, cfg: JobConfig, run_date: datetime | None = None):
        super().__init__()
        self._cfg = cfg
        self._run_date = run_date

    def expand(self, inputs: DiagnosisInputs):
        cfg = self._cfg
        samples = inputs.candidates | "SampleLines" >> beam.CombinePerKey(SampleLines())
        as_dict = beam.pvalue.AsDict(samples)
        screened = inputs.screen | "ScreenForms" >> beam.ParDo(ScreenForms(cfg), samples=as_dict)
        probed = inputs.profile_files | "ConfirmForms" >> beam.ParDo(
            ConfirmForms(cfg), samples=as_dict, screened=beam.pvalue.AsList(screened))
        return (
            inputs.profile_files.pipeline
            | "OnceFindings" >> beam.Create([None])
            | "AssembleFindings" >> beam.ParDo(AssembleFindings(cfg, self._run_date), as_dict, beam.pvalue.AsList(probed))
        )
