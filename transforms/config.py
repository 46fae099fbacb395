"""Job configuration: one pydantic model for every pipeline (import, export, nightly).

The model holds *references* (paths, globs, key references such as ``env:NAME``), never data or
key material, so it pickles cheaply into DoFns and can be logged. Files are opened only by
:func:`check_inputs`, which the launchers call before building a pipeline, and by the
transforms at run time. A config file is read and validated by :mod:`transforms.config_load`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from transforms.config_match import (decrypted_normalization_problem, extract_region_problem, match_as_problem,
                                     role_column_problem)
from transforms.config_yaml import StrictModel
from transforms.errors import ConfigError
from transforms.phones import check_region
from transforms.secrets import reference_problem
from transforms.storage import format_from_extension


class ProfilesConfig(StrictModel):
    """Where the profile extract is and which of its columns play which role."""

    path: str
    format: Literal["csv", "parquet", "jsonl"] | None = None  # default: from the extension
    id: str = "profile_id"
    email: str | None = "email"
    phone: str | None = "mobile"
    visitor_ids: str | None = "visitor_ids"
    visitor_ids_separator: str = Field(default=";", min_length=1)  # CSV only: the list is one ';'-separated string
    opt_out: str | None = None  # the opt-out column (transforms/consent.py: spellings; empty = unknown)
    opt_in: str | None = None  # or a consent column (true: consented), read the other way round; not both
    # What an unknown opt-out (empty, null, missing; or no ``opt_out`` column at all) means for the
    # export: ``unknown`` (never exported) or, declared explicitly, ``consented``.
    opt_out_missing: Literal["unknown", "consented"] = "unknown"
    default_region: str | None = None  # phones written without a country code are read in this region
    # Else a run fails that reads no profile, none keying a data source or (an export) none with an opt-out value.
    allow_empty_profiles: bool = False
    # JSONL in parts: columns whose field whole parts may lack (parts of nulls naming fields of their own,
    # a union of two sources): the start-up check then takes no such part for a renamed field.
    parts_may_lack: list[str] = []
    # Files whose rows may repeat another file's (an extract of a row per purchase, split by month): the
    # check refusing two files of the same profiles (a copy, an older extract beside it) is off.
    files_may_repeat_rows: bool = False
    max_shrink: float = Field(default=0.1, ge=0.0, le=1.0)  # nightly: fewer profiles than the previous night's

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return None if value is None else check_region(value)

    @model_validator(mode="after")
    def _format_known(self):
        """A path whose format its name does not tell ('profiles.parquet/*', a Spark output's folder)
        and no ``format``: refused here, naming the field (the run failed on a bare ValueError)."""
        _ = self.resolved_format
        if self.opt_out and self.opt_in:
            raise ValueError("profiles.opt_in and profiles.opt_out: set one (opt_in: a consent column, true consented)")
        return self

    @property
    def consent_column(self) -> str | None:
        """The column consent is read from (``opt_out``, or ``opt_in`` read the other way round)."""
        return self.opt_in or self.opt_out

    @property
    def consent_field(self) -> str:
        return "profiles.opt_in" if self.opt_in else "profiles.opt_out"

    @property
    def resolved_format(self) -> str:
        return self.format or format_from_extension(self.path)

    def key_column(self, ds: "DataSourceConfig") -> str | None:
        """The extract column a data source's profile keys come from (for messages)."""
        return self.visitor_ids if ds.id_type == "visitor" else self.column_for(ds.match_on)

    def column_for(self, field: str) -> str:
        """The extract column behind a role name (``email``, ``phone``) or a raw column name."""
        if field == "email" and self.email:
            return self.email
        if field == "phone" and self.phone:
            return self.phone
        return field


class EncryptionConfig(StrictModel):
    algorithm: Literal["aes-cbc", "aes-gcm"] = "aes-cbc"
    key: str | None = None  # env:NAME or file:PATH (aes-cbc)
    key_encoding: Literal["hex", "base64"] | None = None  # None: detect when unambiguous
    iv: str | None = None  # env:NAME or file:PATH (aes-cbc)
    iv_encoding: Literal["hex", "base64"] | None = None
    keyring: str | None = None  # env:NAME or file:PATH holding the JSON key ring (aes-gcm)
    # aes-cbc: the IV confirmed with the partner; the IV check then only warns (iv_suspect), never fails
    iv_confirmed: bool = False

    @field_validator("key", "iv", "keyring")
    @classmethod
    def _reference_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        # a relative file: reference is looked for beside the config (parse_config's context), as it is read
        config_dir = (info.context or {}).get("config_dir")
        problem = reference_problem(value, config_dir) if value is not None else None
        if problem:  # its words never repeat the value: it may be a key pasted inline
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _complete(self) -> "EncryptionConfig":
        if self.algorithm == "aes-cbc" and (self.key is None or self.iv is None):
            raise ValueError("aes-cbc needs both 'key' and 'iv'")
        if self.algorithm == "aes-gcm" and self.keyring is None:
            raise ValueError("aes-gcm needs 'keyring'")
        if self.algorithm == "aes-gcm" and self.iv_confirmed:
            raise ValueError("aes-gcm has no IV to confirm: remove 'iv_confirmed'")
        # A setting of the other algorithm was ignored: a 'keyring' added without 'algorithm: aes-gcm'
        # left the tokens decrypted as AES-CBC, and the run blamed a key and IV that were right.
        if self.algorithm == "aes-cbc":
            other, wanted = ("keyring",), "aes-gcm"
        else:
            other, wanted = ("key", "key_encoding", "iv", "iv_encoding"), "aes-cbc"
        given = [f"'{f}'" for f in other if getattr(self, f) is not None]
        if given:
            default = ", the default" if "algorithm" not in self.model_fields_set else ""
            raise ValueError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only to algorithm: "
                             f"{wanted} (algorithm is '{self.algorithm}'{default})")
        return self


class DataSourceConfig(StrictModel):
    """One shared data source (DPID) and the segment dumps it delivers."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dpid: int = Field(gt=0)
    # The data source an export's IDs are onboarded to, in the file name (ftp_dpm_<DPID>_<TARGET>_...):
    # required to export through the platform's global device-ID data sources (GLOBAL_DEVICE_DPIDS).
    target_dpid: int | None = Field(default=None, gt=0)
    segments: str  # glob, local or gs://
    id_type: Literal["visitor", "declared"]
    declared: Literal["plain", "hashed", "encrypted"] | None = None
    match_on: str | None = None
    # hashed: how a match_on column other than the roles is read (email | phone | other); None: the
    # role's kind for match_on email / phone, else other (trimmed, case kept). See transforms.config_match.
    match_as: Literal["email", "phone", "other"] | None = None
    # none: the value exactly as the extract / decryption gives it (no trim, no lower-casing)
    normalization: Literal["adobe", "uid2", "google", "meta", "none"] = "adobe"
    digest: Literal["hex", "base64"] | None = None  # default: the normalization profile's
    hash_algorithm: Literal["sha256", "sha1", "md5", "sha512"] = "sha256"  # hashed: the platforms use sha256
    restore_leading_zeros: bool = False  # visitor: all-digit IDs under 38 digits are zero-padded
    ignore_case: bool = False  # declared plain: IDs compared trimmed and lower-cased, both sides
    diagnosis_sample: int | None = Field(default=None, ge=0, le=10_000_000)  # None: the job's diagnosis_sample
    # Encrypted declared IDs (issue: encrypted IDs + file audience)
    channel: Literal["email", "sms", "other"] = "other"
    force_reconciliation: bool = False
    encryption: EncryptionConfig | None = None
    max_decrypt_failure_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    default_region: str | None = None  # phones: overrides profiles.default_region for this data source
    # Above this share of format errors the run fails: a wrong separator, column layout, encoding or
    # file makes (nearly) every line one; real dumps have a few percent at most.
    max_format_error_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    # Above this share of invalid IDs (of the lines with segments) the run fails: a wrong digest
    # encoding or algorithm, or another ID column, makes (nearly) every ID one.
    max_invalid_id_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    allow_no_match: bool = False  # declared: else none of MIN_IDS_TO_MATCH IDs or more matching fails the run
    # Nightly: what a dump of this source is (full: replaces the audience; iter: updates it). By
    # default the file name says; in nightly a name that does not is an error unless this is set.
    sync_mode: Literal["full", "iter", "from_name"] = "from_name"
    max_shrink: float | None = Field(default=None, ge=0.0, le=1.0)  # nightly, export; None: the job's max_shrink
    # Nightly: nights in a row this source may deliver no dump (its audience carried as it is); 0: none
    max_nights_without_delivery: int = Field(default=0, ge=0, le=31)
    # Dump layout (the platform's templates can change it)
    field_separator: str = " "
    segment_separator: str = ","
    columns: tuple[str, ...] = ("id", "segments", "removed")

    @field_validator("field_separator", "segment_separator")
    @classmethod
    def _one_char(cls, value: str) -> str:
        value = value.encode().decode("unicode_escape") if value.startswith("\\") else value
        if len(value) != 1 or value in "\r\n":
            raise ValueError("must be a single character other than a line break")
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return None if value is None else check_region(value)

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        roles = [c for c in value if c != "ignore"]
        if "id" not in roles or "segments" not in roles or len(set(roles)) != len(roles):
            raise ValueError("needs 'id' and 'segments' once each (optional 'removed'; 'ignore' for others)")
        unknown = set(roles) - {"id", "segments", "removed"}
        if unknown:
            raise ValueError(f"unknown column role(s) {sorted(unknown)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "DataSourceConfig":
        if self.id_type == "declared":
            if self.declared is None:
                raise ValueError("id_type 'declared' needs 'declared: plain | hashed | encrypted'")
            if not self.match_on:
                raise ValueError("id_type 'declared' needs 'match_on' (email, phone or a column)")
            if self.declared == "encrypted" and self.channel != "other" and self.encryption is None:
                raise ValueError(f"channel '{self.channel}' needs an 'encryption' section")
            if self.encryption is not None and not self.decrypts:
                # Ignored, it sent the undecrypted tokens to the join as plain keys: nothing matched.
                if self.declared != "encrypted":
                    raise ValueError(f"'encryption' applies only to 'declared: encrypted' (this data source is "
                                     f"'declared: {self.declared}': its IDs are never decrypted)")
                default = ", the default" if "channel" not in self.model_fields_set else ""
                raise ValueError(f"'encryption' applies only to channel email or sms (channel is '{self.channel}'"
                                 f"{default}: the IDs would be used as plain keys, never decrypted); set channel: "
                                 "email or sms")
        else:
            if self.declared is not None or self.encryption is not None:
                raise ValueError("'declared' and 'encryption' apply to id_type 'declared' only")
        if self.restore_leading_zeros and self.id_type != "visitor":
            raise ValueError("'restore_leading_zeros' applies to id_type 'visitor' only")
        if self.hash_algorithm != "sha256" and self.declared != "hashed":
            raise ValueError("'hash_algorithm' applies to 'declared: hashed' only")
        if self.ignore_case and self.declared != "plain":
            raise ValueError("'ignore_case' applies to 'declared: plain' only")
        if self.field_separator == self.segment_separator:
            raise ValueError("field_separator and segment_separator must differ")
        # The profiles' column of the other channel's role was read as this channel's addresses: no
        # profile gave a key, and the hint to allow empty profiles published an unmatched file audience.
        role = {"email": "email", "sms": "phone"}.get(self.channel) if self.decrypts else None
        if role and self.match_on in ("email", "phone") and self.match_on != role:
            raise ValueError(f"channel: {self.channel} decrypts {'email addresses' if role == 'email' else 'phone numbers'}, "
                             f"but match_on: {self.match_on} compares them with the profiles' {self.match_on} column; "
                             f"set match_on: {role} (or channel: {'sms' if role == 'email' else 'email'})")
        if self.force_reconciliation and not self.decrypts:
            raise ValueError("force_reconciliation applies only to 'declared: encrypted' with channel email or sms")
        problem = match_as_problem(self) or decrypted_normalization_problem(self)
        if problem:
            raise ValueError(problem)
        if self.default_region is not None and self.key_kind != "phone":
            raise ValueError("default_region applies only to phone data sources (match_on: phone, match_as: phone, "
                             "or channel: sms)")
        return self

    @property
    def key_kind(self) -> str:
        """How the reconciliation key is normalized: email, phone or other."""
        if self.declared == "encrypted":
            return {"email": "email", "sms": "phone"}.get(self.channel, "other")
        if self.match_as is not None:
            return self.match_as
        return {"email": "email", "phone": "phone"}.get(self.match_on or "", "other")

    @property
    def digest_encoding(self) -> str:
        from transforms.normalize import DEFAULT_DIGEST

        return self.digest or DEFAULT_DIGEST[self.normalization]

    @property
    def decrypts(self) -> bool:
        return self.declared == "encrypted" and self.channel in ("email", "sms")

    @property
    def keeps_file_audience(self) -> bool:
        return self.decrypts and not self.force_reconciliation


# The platform's global device-ID data sources: Android (GAID) and iOS (IDFA) advertising IDs.
GLOBAL_DEVICE_DPIDS = {20914: "Android advertising IDs", 20915: "iOS advertising IDs"}


class SuppressionList(StrictModel):
    """Addresses that must never be shared (``suppression:``): applied to exports and to the
    import's file audience (transforms/suppression.py)."""

    path: str  # glob, local or gs://; one address or digest per line (blank lines skipped); .gz read as gzip
    kind: Literal["email", "phone"]
    # false: plain addresses (normalized as each data source's profile says); true: SHA-256 digests of
    # the addresses normalized and encoded under the data source's profile (normalization, digest).
    hashed: bool = False


class ExportConfig(StrictModel):
    """Optional ``export:`` section: defaults for ``audience-sync export`` (flags override them)."""

    data_source: str | None = None  # the data source the audience is shared through
    max_lines_per_file: int = Field(default=5_000_000, ge=1)  # onboarding file split size


class JobConfig(StrictModel):
    profiles: ProfilesConfig
    data_sources: list[DataSourceConfig] = Field(min_length=1)
    buckets: int = Field(default=16, ge=1, le=4096)  # join/write shards; spread over workers
    threads: int = Field(default=2, ge=1, le=64)  # threads a reading DoFn uses on one element (1: none)
    # dumps stored in at least this many bytes are read by one worker and their decompressed chunks
    # spread over the others; default: 256 MiB on distributed runners, never on the local runner
    split_dump_bytes: int | None = Field(default=None, ge=1)
    # Mismatch diagnosis: unmatched lines sampled per data source (0: off); a data source may override it
    diagnosis_sample: int = Field(default=100_000, ge=0, le=10_000_000)
    # Nightly: the largest share a data source's audience may lose in one night (0.5: it may halve)
    # before the night fails (unless --allow-shrink); export: the largest share of the user IDs the
    # platform holds for the audience one run may remove.
    max_shrink: float = Field(default=0.5, ge=0.0, le=1.0)
    export: ExportConfig | None = None
    suppression: list[SuppressionList] = Field(default_factory=list)

    @field_validator("suppression", mode="before")
    @classmethod
    def _no_suppression(cls, value):
        """``suppression:`` with every list commented out (null): none, as the line left out."""
        return [] if value is None else value

    @model_validator(mode="after")
    def _suppression_columns(self) -> "JobConfig":
        for i, entry in enumerate(self.suppression):
            if getattr(self.profiles, entry.kind) is None:
                raise ValueError(f"suppression.{i}: a {entry.kind} list needs the profiles.{entry.kind} column")
        return self

    @model_validator(mode="after")
    def _visitor_column(self) -> "JobConfig":
        if self.profiles.visitor_ids is None:
            for i, ds in enumerate(self.data_sources):
                if ds.id_type == "visitor":
                    raise ValueError(f"data_sources.{i} ('{ds.name}'): a visitor data source needs profiles.visitor_ids")
        return self

    @model_validator(mode="after")
    def _role_by_its_column(self) -> "JobConfig":
        for i, ds in enumerate(self.data_sources):
            problem = role_column_problem(ds, self.profiles)
            if problem:
                raise ValueError(f"data_sources.{i} ('{ds.name}'): {problem}")
        return self

    @model_validator(mode="after")
    def _one_region_for_the_extract(self) -> "JobConfig":
        if problem := extract_region_problem(self):
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _export_source_known(self) -> "JobConfig":
        if self.export is not None and self.export.data_source is not None:
            if self.export.data_source not in [ds.name for ds in self.data_sources]:
                raise ValueError(f"export.data_source '{self.export.data_source}' is not a configured data source")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> "JobConfig":
        # also in case: an export's state folder is named by its data source, one folder on a disk ignoring case
        names = [ds.name.casefold() for ds in self.data_sources]
        dupes = sorted({ds.name for ds in self.data_sources if names.count(ds.name.casefold()) > 1})
        if dupes:
            raise ValueError(f"data source names must be unique, also in case: {dupes}")
        return self

    def for_date(self, day) -> "JobConfig":
        """The config with ``{date}`` placeholders in input paths filled for one night:
        ``{date}`` is YYYY-MM-DD, ``{date:%Y%m%d}`` any strftime format."""

        def fill(path: str) -> str:
            try:
                return path.format(date=day)
            except (KeyError, IndexError, ValueError, TypeError, AttributeError):
                raise ConfigError(f"'{path}': only {{date}} or {{date:FORMAT}} placeholders are allowed") from None

        profiles = self.profiles.model_copy(update={"path": fill(self.profiles.path)})
        sources = [ds.model_copy(update={"segments": fill(ds.segments)}) for ds in self.data_sources]
        return self.model_copy(update={"profiles": profiles, "data_sources": sources})

    def sample_size(self, ds: DataSourceConfig) -> int:
        """How many unmatched lines of ``ds`` the mismatch diagnosis samples (0: none)."""
        return self.diagnosis_sample if ds.diagnosis_sample is None else ds.diagnosis_sample

    def region_for(self, ds: DataSourceConfig) -> str | None:
        """The region a data source's phones without a country code are read in: its own
        ``default_region``, else the extract's (an SMS source's partner's; the extract's own: below)."""
        return ds.default_region or self.profiles.default_region

    def profile_region_for(self, ds: DataSourceConfig) -> str | None:
        """Where the extract's phones without a country code are read for a data source's keys: an SMS
        source's own region is its partner's (README "Phone numbers"; config_match.extract_region_problem)."""
        return (self.profiles.default_region or ds.default_region) if ds.decrypts else self.region_for(ds)

    def shrink_limit(self, name: str) -> float:
        """The ``max_shrink`` of a data source (its own, else the job's; the job's for one no longer
        configured)."""
        own = next((ds.max_shrink for ds in self.data_sources if ds.name == name), None)
        return self.max_shrink if own is None else own

    def data_source(self, name: str) -> DataSourceConfig:
        for ds in self.data_sources:
            if ds.name == name:
                return ds
        raise KeyError(name)
