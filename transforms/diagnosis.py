"""Mismatch diagnosis: why a data source's lines did not match, as config changes with the number of
sampled lines each would match (report.json, each data source's ``diagnosis`` list).

The graph, after the join:

1. **Sample** (:mod:`transforms.diagnosis_sample`): the dump reader and the join send each chunk's and
   shard's candidates; ``SampleLines`` keeps the ``diagnosis_sample`` lines of smallest hash per data
   source (deterministic on every runner, bounded memory).
2. **Screen**: the profile reader already emits a fixed 1/16 of the profiles with every scalar column
   (:func:`~transforms.diagnosis_forms.screen_rows`); ``ScreenForms`` tries every alternative of the
   plan (:mod:`transforms.diagnosis_plan`) on them and keeps the probes whose form matched anything.
   This is what runs when the data sources match as configured, and it costs ~1/16 of the profile
   stage's hashing at most.
3. **Confirm**: ``ConfirmForms`` reads the extract again -- only when the screen kept something -- and
   computes only those forms over every profile: exact counts of the sampled lines each would match.
4. **Decryption** (:mod:`transforms.diagnosis_crypto`): decrypt failures of encrypted data sources.
5. ``AssembleFindings`` (:mod:`transforms.diagnosis_findings`): one ``(data source, findings)`` per
   data source with a sample, for the report.
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np

from transforms.config import JobConfig
from transforms.diagnosis_crypto import cbc_findings, failed_tokens, gcm_findings, load_cbc_material
from transforms.diagnosis_findings import assemble
from transforms.diagnosis_forms import Form, column_kinds, extract_column, form_keys, hit_rows
from transforms.diagnosis_plan import Probe, probes, sample_views
from transforms.diagnosis_sample import SampleLines
from transforms.memory import release_free_memory
from transforms.profiles import KEY_PREFIX, read_profiles


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
    """Screen rows -> ``(data source, probe)`` for every probe whose profile form matched a sampled
    line on them (as plain tuples: a deterministic key for ``Distinct``)."""

    def process(self, profiles, samples):
        kinds = column_kinds(profiles, self._cfg)
        plans = {}
        for name, sample in sorted(samples.items()):
            views = self.views(name, sample)
            plans[name] = probes(self._cfg.data_source(name), self._cfg, views, kinds)
        keys = form_keys(profiles, sorted({p.form for plan in plans.values() for p in plan}), self._cfg)
        for name, plan in plans.items():
            views = self.views(name, samples[name])
            matched = {p.form for p in plan if len(hit_rows(views[p.view], keys[p.form]))}
            for probe in plan:
                if probe.form in matched:
                    yield name, (tuple(probe.form), probe.view, probe.kind, probe.suggestion)


class ConfirmForms(_Probing):
    """One extract file -> ``((data source, kind, suggestion), sample rows)`` for the probes the screen
    kept, over every profile. Reads nothing when the screen kept none."""

    def process(self, path: str, samples, screened):
        if not screened:
            return
        kept = [(name, Probe(Form(*form), view, kind, suggestion)) for name, (form, view, kind, suggestion) in sorted(screened)]
        forms = sorted({probe.form for _, probe in kept})
        extra = sorted({extract_column(self._cfg, f.column) for f in forms if f.column.startswith(KEY_PREFIX)})
        for profiles in read_profiles(path, self._cfg, extra=extra):
            keys = form_keys(profiles, forms, self._cfg)
            for name, probe in kept:
                rows = hit_rows(self.views(name, samples[name])[probe.view], keys[probe.form])
                if len(rows):
                    yield (name, probe.kind, probe.suggestion), rows


class UnionRows(beam.CombineFn):
    """Sample rows (int64 arrays) -> their sorted union."""

    def create_accumulator(self):
        return np.zeros(0, np.int64)

    def add_input(self, acc, rows):
        return np.union1d(acc, rows)

    def merge_accumulators(self, accs):
        return np.unique(np.concatenate(list(accs))) if accs else np.zeros(0, np.int64)

    def extract_output(self, acc):
        return acc


class DiagnoseDecryption(beam.DoFn):
    """``(data source, sample)`` -> ``(data source, [CryptoFinding])`` for encrypted data sources with
    decrypt failures in their sample. The CBC key and IV references are read in setup()."""

    def __init__(self, cfg: JobConfig):
        self._cfg = cfg

    def setup(self):
        self._material = {ds.name: load_cbc_material(ds) for ds in self._cfg.data_sources
                          if ds.decrypts and self._cfg.sample_size(ds) and ds.encryption.algorithm == "aes-cbc"}

    def process(self, element):
        name, sample = element
        ds = self._cfg.data_source(name)
        if not ds.decrypts or not sample.num_rows:
            return
        found = gcm_findings(sample) if ds.encryption.algorithm == "aes-gcm" else cbc_findings(
            ds, failed_tokens(sample), self._material[name])
        if found:
            yield name, found


class AssembleFindings(beam.DoFn):
    def __init__(self, cfg: JobConfig):
        self._cfg = cfg

    def process(self, _, sizes, probed, decryption):
        by_source: dict[str, dict] = {}
        for (name, kind, suggestion), rows in probed:
            by_source.setdefault(name, {})[(kind, suggestion)] = rows
        crypto = dict(decryption)
        for name, sampled in sorted(sizes.items()):
            ds = self._cfg.data_source(name)
            yield name, assemble(ds, self._cfg, sampled, by_source.get(name, {}), crypto.get(name, []))


class DiagnoseMismatches(beam.PTransform):
    """:class:`DiagnosisInputs` -> ``(data source, [finding])`` for each data source with sampled lines."""

    def __init__(self, cfg: JobConfig):
        super().__init__()
        self._cfg = cfg

    def expand(self, inputs: DiagnosisInputs):
        cfg = self._cfg
        samples = inputs.candidates | "SampleLines" >> beam.CombinePerKey(SampleLines())
        as_dict = beam.pvalue.AsDict(samples)
        screened = (
            inputs.screen
            | "ScreenForms" >> beam.ParDo(ScreenForms(cfg), samples=as_dict)
            | "DistinctProbes" >> beam.Distinct()
        )
        probed = (
            inputs.profile_files
            | "ConfirmForms" >> beam.ParDo(ConfirmForms(cfg), samples=as_dict, screened=beam.pvalue.AsList(screened))
            | "UnionHits" >> beam.CombinePerKey(UnionRows())
        )
        decryption = samples | "DiagnoseDecryption" >> beam.ParDo(DiagnoseDecryption(cfg))
        sizes = samples | "SampleSizes" >> beam.MapTuple(lambda name, sample: (name, sample.num_rows))
        return (
            inputs.profile_files.pipeline
            | "OnceFindings" >> beam.Create([None])
            | "AssembleFindings" >> beam.ParDo(AssembleFindings(cfg), beam.pvalue.AsDict(sizes),
                                               beam.pvalue.AsList(probed), beam.pvalue.AsList(decryption))
        )
