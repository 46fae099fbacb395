"""What one export is: :class:`ExportSpec` (audience, data source, run date, mode, file names), resolved
from the flags and the config's ``export:`` by :func:`export_spec`; :func:`export_config` narrows the
job config to the exported data source. Picklable, no key material; the graph that runs it is
:class:`transforms.export.ExportAudience`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

from transforms.config import GLOBAL_DEVICE_DPIDS, ConfigError, DataSourceConfig, JobConfig
from transforms.export_decide import Traits
from transforms.onboarding import DEFAULT_MAX_LINES_PER_FILE, FileNames, trait, untrait, valid_audience_name

MODES = ("sync", "overwrite")


@dataclass(frozen=True)
class ExportSpec:
    """Everything about one export that is not the job config: picklable, no key material."""

    audience: str
    data_source: DataSourceConfig
    run_date: date
    segment_id: int | None = None
    max_lines_per_file: int = DEFAULT_MAX_LINES_PER_FILE
    mode: str = "sync"  # sync: .sync files (adds and removals); overwrite: .overwrite files (full trait lists)
    max_shrink: float | None = None  # the largest share of the held user IDs a run may remove (None: --allow-shrink)

    @property
    def clock(self) -> datetime:
        """The run's clock: UTC midnight of the run date (never the wall clock)."""
        return datetime(self.run_date.year, self.run_date.month, self.run_date.day, tzinfo=timezone.utc)

    @property
    def timestamp(self) -> int:
        return int(self.clock.timestamp())

    @property
    def trait(self) -> str:
        """What each line adds: ``d_sid=N`` with a segment id, else ``"segment"="<audience>"``."""
        return trait(self.audience, self.segment_id)

    @property
    def traits(self) -> Traits:
        return Traits(self.trait, untrait(self.segment_id), self.mode == "overwrite")

    @property
    def file_names(self) -> FileNames:
        """The onboarding files' names: ``ftp_dpm_<DPID>[_<TARGET_DPID>]_<UNIX_SECONDS>.<mode>...``."""
        return FileNames(self.data_source.dpid, self.timestamp, self.data_source.target_dpid, self.mode)


def check_audience_name(name: str) -> str:
    if not valid_audience_name(name):
        raise ConfigError(
            "--audience: must be non-empty, without leading/trailing spaces, quotes, commas, "
            "backslashes or control characters"
        )
    return name


def export_spec(cfg: JobConfig, audience: str, data_source: str | None, run_date: date,
                segment_id: int | None = None, max_lines_per_file: int | None = None, mode: str = "sync",
                allow_shrink: bool = False) -> ExportSpec:
    """Resolve the export's data source and settings (flags first, then the config's ``export:``);
    the collapse guard's limit is the data source's ``max_shrink``, else the job's."""
    section = cfg.export
    name = data_source or (section.data_source if section else None)
    if name is None:
        if len(cfg.data_sources) != 1:
            raise ConfigError(
                "--data-source: name the data source to share through (or set export.data_source); "
                f"configured: {', '.join(ds.name for ds in cfg.data_sources)}"
            )
        name = cfg.data_sources[0].name
    try:
        ds = cfg.data_source(name)
    except KeyError:
        raise ConfigError(
            f"--data-source: '{name}' is not a configured data source "
            f"(configured: {', '.join(d.name for d in cfg.data_sources)})"
        ) from None
    if segment_id is not None and segment_id <= 0:
        raise ConfigError("--segment-id: must be a positive integer")
    if mode not in MODES:
        raise ConfigError(f"--mode: one of {', '.join(MODES)}")
    if ds.dpid in GLOBAL_DEVICE_DPIDS and ds.target_dpid is None:
        index = [d.name for d in cfg.data_sources].index(ds.name)
        raise ConfigError(
            f"data_sources[{index}].target_dpid: data source '{ds.name}' has dpid {ds.dpid}, the platform's global "
            f"data source of {GLOBAL_DEVICE_DPIDS[ds.dpid]}: an export through it must name the data source that "
            "receives the IDs (target_dpid, in the file name ftp_dpm_<DPID>_<TARGET_DPID>_<ts>)"
        )
    max_lines = max_lines_per_file or (section.max_lines_per_file if section else DEFAULT_MAX_LINES_PER_FILE)
    if max_lines < 1:
        raise ConfigError("--max-lines-per-file: must be at least 1")
    spec = ExportSpec(check_audience_name(audience), ds, run_date, segment_id, max_lines, mode,
                      None if allow_shrink else cfg.shrink_limit(ds.name))
    if len(str(spec.timestamp)) != 10:  # formats.md section 3: the files' TIMESTAMP
        raise ConfigError(f"--run-date {run_date}: the files' timestamp, its UTC midnight ({spec.timestamp}), is "
                          "not 10-digit UNIX seconds, as the platform's file names need (2001-09-10 to 2286-11-20)")
    return spec


def export_config(cfg: JobConfig, spec: ExportSpec) -> JobConfig:
    """The job config narrowed to the exported data source: the extract is read for its columns only."""
    return cfg.model_copy(update={"data_sources": [spec.data_source]})

