"""The run report: counts per data source, in the platform's receipt shape, that must add up."""
from __future__ import annotations

import posixpath

from transforms.config import JobConfig
from transforms.diagnosis_findings import in_context, noun
from transforms.diagnosis_sample import sampled_from
from transforms.dump_names import sync_mode_of
from transforms.errors import RunFailed
from transforms.match_forms import address_form, match_form
from transforms.outcomes import DECRYPT_FAILURES, OUTCOMES, Category, Counts, Metric, Reason
from transforms.reasons import not_stray
from transforms.report_view import DECRYPTION_KINDS, suggestion_text


def build_report(cfg: JobConfig, counts: Counts, files: dict[str, list[dict]] | None = None, run_date: str | None = None,
                 diagnosis: dict[str, list[dict]] | None = None) -> dict:
    """Assemble the import report from the run's summed counts (and the mismatch diagnosis' findings)."""
    sources = {}
    for ds in cfg.data_sources:
        name = ds.name
        entry = {
            "dpid": ds.dpid,
            "id_type": ds.id_type if ds.id_type == "visitor" else f"declared/{ds.declared}",
            "decrypts": ds.decrypts,
            "match_form": match_form(ds, cfg),
            "received": counts.get(Metric.RECEIVED, name),
            **{category: 0 for category in OUTCOMES},
            "rejected_by_reason": {},
            "segments": {},
            "profile_keys": counts.get(Metric.PROFILE_KEYS, name),
            "profile_keys_shuffled": counts.get(Metric.PROFILE_KEYS_SHUFFLED, name),
            "profile_values_without_key": counts.get(Metric.PROFILE_VALUES_WITHOUT_KEY, name),
        }
        previous = {f"{output}_{metric}": n
                    for metric in (Metric.CARRIED, Metric.REMOVED, Metric.PROFILE_LEFT, Metric.REPLACED)
                    for output, n in counts.details(metric, name).items()}
        if previous:  # nightly: rows kept from / removed from the previous night's state / of profiles gone / replaced
            entry["previous_state"] = dict(sorted(previous.items()))
        entry["reconciled"] = counts.get(Metric.RECONCILED, name)
        suspect = counts.details(Metric.IV_SUSPECT, name)
        if suspect:  # the IV check's suspicion (transforms/iv_check.py), judged with the match rate below
            position, gain = max(suspect.items(), key=lambda kv: (kv[1], kv[0]))
            entry["iv_suspect"] = {"position": int(position), "overlap_gain": gain / 1000}
        entry["file_audience"] = counts.get(Metric.FILE_AUDIENCE, name)
        if ds.keeps_file_audience:  # file-audience entries withheld (suppressed addresses), not a line category
            entry["suppressed"] = counts.get(Metric.SUPPRESSED, name)
            entry["address_form"] = address_form(ds, cfg)
        for reason, n in counts.details(Metric.REJECTED, name).items():
            entry["rejected_by_reason"][reason] = n
            entry[Reason(reason).category] += n
        for metric, field in ((Metric.MEMBERS, "members"), (Metric.FILE_AUDIENCE_MEMBERS, "file_audience"),
                              (Metric.SEGMENT_LINES, "lines")):
            for segment, n in counts.details(metric, name).items():
                entry["segments"].setdefault(segment, {"members": 0})[field] = n
        entry["segments"] = dict(sorted(entry["segments"].items(), key=lambda kv: (len(kv[0]), kv[0])))
        if files is not None:
            entry["files"] = files.get(name, [])
            if ds.decrypts:  # per dump: its IDs that decrypted, and that did not (_check_file_decryption)
                decrypted, failed = counts.details(Metric.FILE_DECRYPTED, name), counts.details(Metric.FILE_DECRYPT_FAILED, name)
                entry["files"] = [{**f, "decrypted": decrypted.get(f["path"], 0), "decrypt_failed": failed.get(f["path"], 0)}
                                  for f in entry["files"]]
        if cfg.sample_size(ds):  # diagnosed (transforms/diagnosis.py): findings, most lines first; else no key
            entry["diagnosis"] = in_context(ds, cfg, (diagnosis or {}).get(name, []), entry)
        sources[name] = entry
    totals = {k: sum(s[k] for s in sources.values()) for k in ("received", *OUTCOMES)}
    report = {"job": "import", "profiles_read": counts.get(Metric.PROFILES_READ), "data_sources": sources, "totals": totals}
    removed = {name: {"action": "dropped", **{f"{output}_dropped": n for output, n in counts.details(Metric.DROPPED, name).items()}}
               for name in counts.sources(Metric.DROPPED)}
    if removed:  # nightly: data sources of the previous night no longer in the config
        report["removed_data_sources"] = removed
    if run_date:
        report["run_date"] = run_date
    return report


def check_report(report: dict, cfg: JobConfig) -> None:
    """Raise :class:`RunFailed` (one line, nothing published) when the counts do not add up, a data
    source's dump is mostly unparseable or fails to decrypt, no profile gave a data source a key,
    or no profile was read at all."""
    for name, entry in report["data_sources"].items():
        accounted = sum(entry[k] for k in OUTCOMES)
        if accounted != entry["received"]:
            raise RunFailed(
                f"data source '{name}': counts do not add up (received {entry['received']}, accounted for {accounted})"
            )
        ds = cfg.data_source(name)
        _check_format_errors(name, entry, ds.max_format_error_ratio)
        _check_encoding(name, entry)
        _check_full_removals(name, entry, ds)
        _check_invalid_ids(name, entry, ds.max_invalid_id_ratio)
        if ds.decrypts:
            _check_token_encoding(name, entry)
            _check_decryption(name, entry, ds.max_decrypt_failure_ratio, noun(ds.key_kind), ds.encryption.algorithm)
            if ds.max_decrypt_failure_ratio < 1:  # 1.0: any failure tolerated but all (_check_decryption)
                _check_file_decryption(name, entry, ds.encryption.algorithm)
            _check_iv_suspect(name, entry, ds.encryption.iv_confirmed)
    if not report["profiles_read"] and not cfg.profiles.allow_empty_profiles:
        raise RunFailed(
            f"profiles: no profile was read from '{cfg.profiles.path}' (a header-only or empty extract?); "
            "set profiles.allow_empty_profiles: true if that is expected. Nothing was published"
        )
    # Last: any dump-side cause above (a wrong file, a wrong key) or an empty extract says more.
    for name, entry in report["data_sources"].items():
        _check_profile_keys(name, entry, report["profiles_read"], cfg)
        _check_matches(name, entry, cfg)


def check_deliveries(report: dict, cfg: JobConfig, files: list, file_stats: list) -> None:
    """A one-off import's ``PublishRun`` check: raise :class:`RunFailed` when a data source's dumps
    hold no line (an empty delivery would publish an empty audience; nightly's guard refuses an
    empty full dump the same way). An ``iter`` dump says what changed, and may say nothing."""
    empty = [name for name, entry in report["data_sources"].items()
             if not entry["received"] and not any(f.get("sync_mode") == "iter" for f in entry.get("files", []))]
    if empty:
        named = "; ".join(f"data source '{name}': no line in its dump(s) "
                          f"({', '.join(posixpath.basename(f['path']) for f in report['data_sources'][name]['files'])})"
                          for name in empty)
        raise RunFailed(f"{named}: an empty delivery would publish an empty audience; take the data source out of "
                        "the config to import without it. Nothing was published")


def _check_profile_keys(name: str, entry: dict, profiles_read: int, cfg: JobConfig) -> None:
    """Profiles were read and the dump has IDs to match, yet no profile value gave the data source a
    key: its column is empty or misnamed (the visitor-ID column may be missing from an extract), and
    every line would be unmatched, or in the file audience, with no profile."""
    to_match = entry["received"] - entry["format_errors"] - entry["invalid_ids"] - entry["removals_only"]
    if not profiles_read or entry["profile_keys"] or to_match <= 0 or cfg.profiles.allow_empty_profiles:
        return
    ds = cfg.data_source(name)
    column = cfg.profiles.key_column(ds)
    raise RunFailed(
        f"data source '{name}': none of the {profiles_read} profiles read gave a key from column '{column}' "
        f"({to_match} dump IDs to match): an empty or misnamed column? Set profiles.allow_empty_profiles: true "
        "if that is expected. Nothing was published"
    )


# A declared-ID source of which this many IDs or more matched no profile at all is configured wrongly
# (a customer declares IDs from its own database); fewer cannot tell that from a low match rate.
MIN_IDS_TO_MATCH = 100


def _check_matches(name: str, entry: dict, cfg: JobConfig) -> None:
    """Keys on both sides, and not one declared ID matched: a wrong ``match_on``, normalization or
    digest would publish an empty audience. Visitor IDs link to profiles through tracking (a
    partner's audience may overlap little), and a file audience keeps every address: not judged."""
    ds = cfg.data_source(name)
    to_match = entry["reconciled"] + entry["unmatched"]
    if (ds.id_type != "declared" or ds.keeps_file_audience or ds.allow_no_match or entry["reconciled"]
            or to_match < MIN_IDS_TO_MATCH):
        return
    found = _finding_text(entry, lambda f: not f.get("rejected"))
    raise RunFailed(
        f"data source '{name}': none of its {to_match} IDs to match matched a profile's key (profile column "
        f"'{cfg.profiles.key_column(ds)}'): a wrong match_on, normalization or digest? "
        f"{found + ' ' if found else ''}Set allow_no_match: true on the data source if that is expected. "
        "Nothing was published"
    )


# The likeliest cause of many format errors of one kind (see Reason's descriptions).
_FORMAT_HINTS = {
    Reason.MALFORMED_LINE: "wrong field_separator or columns?",
    Reason.INVALID_SEGMENT_ID: "wrong segment_separator or columns?",
    Reason.NOT_UTF8: "not UTF-8?",
    Reason.TRAIT_NOT_IMPORTABLE: "traits, not segments?",
}


def _rejected(entry: dict, category: Category, but: tuple = ()) -> dict[str, int]:
    """The data source's rejected lines of one category by reason (reasons ``but`` left out)."""
    return {r: n for r, n in entry["rejected_by_reason"].items() if Reason(r).category == category and Reason(r) not in but}


def _most_common(counted: dict[str, int]) -> str:
    """The reason with the most lines (of equal ones, the first by name)."""
    return max(sorted(counted), key=counted.get)


def _check_format_errors(name: str, entry: dict, ratio: float) -> None:
    errors, received = entry["format_errors"], entry["received"]
    if not received or errors / received <= ratio:
        return
    top = _most_common(_rejected(entry, Category.FORMAT_ERRORS))
    hint = _FORMAT_HINTS.get(Reason(top), "a wrong file?")
    raise RunFailed(
        f"data source '{name}': {errors} of {received} lines are format errors, most of them {top} "
        f"(more than max_format_error_ratio={ratio}): {hint} Nothing was published"
    )


def _check_encoding(name: str, entry: dict) -> None:
    """A data source's lines that are not UTF-8, judged together as a dump's start is
    (:func:`~transforms.reasons.not_stray`): a Latin-1 delivery in many small files (50 of
    10 lines, 2 of each with an accented ID) passed each file's check and was published without those
    lines' users, exit 0, where one file of the same lines failed."""
    bad, received = entry["rejected_by_reason"].get(Reason.NOT_UTF8.value, 0), entry["received"]
    if not_stray(bad, received):
        raise RunFailed(f"data source '{name}': {bad} of {received} lines of its dumps are not UTF-8: Latin-1 / "
                        "Windows-1252? Save the dumps as UTF-8. Nothing was published")


def _check_full_removals(name: str, entry: dict, ds) -> None:
    """A full dump lists the segments each user is in: most of its lines only removing segments is a
    layout read wrong (``columns`` with segments and removed swapped), which published an empty
    audience. Judged as format errors are (``max_format_error_ratio``); iter dumps may only remove. A
    dump whose name does not say (None: a one-off import's, read as the audience) is judged as full."""
    modes = {sync_mode_of(ds, f["path"]) for f in entry.get("files", [])}
    removals, received, ratio = entry["removals_only"], entry["received"], ds.max_format_error_ratio
    if not modes or "iter" in modes or not received or removals / received <= ratio:
        return
    roles = list(ds.columns)
    # In the platform's order an empty segments field is more likely two separators in a row.
    cause = ("two field separators in a row ('<ID>  5,6': no segments, removed 5,6)?"
             if "removed" in roles and roles.index("segments") < roles.index("removed")
             else "segments and removed swapped in columns?")
    raise RunFailed(
        f"data source '{name}': {removals} of {received} lines of its full or unnamed dump(s) only remove segments "
        f"(more than max_format_error_ratio={ratio}), where a full dump lists the segments each user is in: {cause} "
        "Nothing was published"
    )


def _ids_to_add(entry: dict) -> int:
    """The data source's IDs looked up: well-formed lines not rejected as removals only (in a
    nightly's iter dump a line that only removes segments is looked up too: its removals apply)."""
    return entry["received"] - entry["format_errors"] - entry["removals_only"]


def _check_invalid_ids(name: str, entry: dict, ratio: float) -> None:
    """Most IDs invalid (not a failed decryption: :func:`_check_decryption` judges those): a wrong
    digest encoding or algorithm, or another ID column, leaves the audience empty with exit 0."""
    invalid = _rejected(entry, Category.INVALID_IDS, but=DECRYPT_FAILURES)
    total = sum(invalid.values())
    candidates = _ids_to_add(entry)
    if not candidates or total / candidates <= ratio:
        return
    top = _most_common(invalid)
    cause = _cause(entry, total, candidates, ratio, decryption=False, hint=Reason(top).description + "?")
    raise RunFailed(
        f"data source '{name}': {total} of {candidates} IDs are invalid, most of them {top} (more than "
        f"max_invalid_id_ratio={ratio}); {cause} Nothing was published"
    )


def _check_token_encoding(name: str, entry: dict) -> None:
    """Any token in url-safe base64 that decrypts once read as standard base64 (``not_standard_base64``):
    the partner's file is url-safe, and about half its tokens (those without '-' or '_') decrypted as
    if standard. Under the ratio, the other half would be dropped from a published audience."""
    n = entry["rejected_by_reason"].get(Reason.NOT_STANDARD_BASE64, 0)
    if not n:
        return
    candidates = _ids_to_add(entry)
    raise RunFailed(
        f"data source '{name}': {n} of {candidates} IDs are url-safe base64 ('-' and '_' for '+' and '/') that decrypt "
        "to valid addresses once read as standard base64: the file is not in the scheme's base64, and its other IDs "
        "only look standard; ask the partner for standard base64 with '=' padding (no setting reads other base64). "
        "Nothing was published"
    )


def _check_decryption(name: str, entry: dict, ratio: float, addresses: str, algorithm: str) -> None:
    """``addresses``: what the data source's IDs decrypt to (``email addresses``, ``phone numbers``)."""
    failures = {r: entry["rejected_by_reason"].get(r, 0) for r in DECRYPT_FAILURES}
    failed = sum(failures.values())
    candidates = _ids_to_add(entry)
    if not candidates or (failed / candidates <= ratio and failed < candidates):
        return
    # Every ID failing is no audience at all, whatever the ratio tolerates (1.0 is a valid setting).
    limit = "more than" if failed / candidates > ratio else "every one: fails whatever"
    cause = _cause(entry, failed, candidates, ratio, decryption=True,
                   hint=_decryption_hint(_most_common(failures), addresses, algorithm))
    raise RunFailed(
        f"data source '{name}': {failed} of {candidates} IDs failed to decrypt or decrypted to no valid address "
        f"({limit} max_decrypt_failure_ratio={ratio}); {cause} Nothing was published"
    )


def _check_file_decryption(name: str, entry: dict, algorithm: str) -> None:
    """A dump none of whose IDs decrypts, beside dumps that do (the data source as a whole passed
    :func:`_check_decryption`): a delivery under another key, as one from before the partner's key
    rotation still in the folder. Under max_decrypt_failure_ratio its users were left out, exit 0.
    Not judged under max_decrypt_failure_ratio: 1.0 (any failure tolerated but all), nor on one or two
    such IDs (:func:`~transforms.reasons.not_stray`: a small iter dump's damaged token; the ratio's)."""
    files = entry.get("files", [])
    if not any(f.get("decrypted", 0) for f in files):  # none decrypts: _check_decryption's to judge
        return
    for f in files:
        failed = f.get("decrypt_failed", 0)
        if f.get("decrypted", 0) or not not_stray(failed, failed):
            continue
        which = "a key not in encryption.keyring, or expired" if algorithm == "aes-gcm" else "another key"
        raise RunFailed(
            f"data source '{name}': {posixpath.basename(f['path'])}: {failed} of {failed} IDs failed to decrypt or "
            f"decrypted to no valid address, where its other dumps decrypt: a delivery under {which} (from before a "
            "key rotation, or another data source's?); move it away, or import it with its own key. Nothing was "
            "published"
        )


def _decryption_hint(top: str, addresses: str, algorithm: str) -> str:
    """The likeliest cause of decrypt failures whose most common reason is ``top``, when the diagnosis
    has none: a failed decryption, a wrong key or IV (AES-GCM has no IV: a key ring not the tokens');
    text that is no address (the key and IV may be right: a wrong IV garbles only the first 16
    bytes), what the partner encrypts; else the reason."""
    gcm = algorithm == "aes-gcm"
    if top == Reason.DECRYPT_FAILED:
        return "not tokens of this key ring, or a wrong secret in it? check encryption.keyring" if gcm else "wrong key or IV?"
    if top == Reason.INVALID_PLAINTEXT:
        return (f"most of them invalid_plaintext: they decrypt, but not to {addresses} (another channel or field, a "
                f"URI scheme in front such as 'mailto:'{'' if gcm else ', or a wrong IV, which garbles the first 16 bytes'}?).")
    return f"most of them {top}: {Reason(top).description}?"


# A suspicion of the IV check fails the run when fewer than this share of at least MIN_SUSPECT_IDS
# decrypted IDs match a profile: an IV typo turns them into other valid IDs, which match nobody.
MAX_SUSPECT_MATCH_SHARE = 0.02
MIN_SUSPECT_IDS = 100


def _check_iv_suspect(name: str, entry: dict, confirmed: bool = False) -> None:
    suspect = None if confirmed else entry.get("iv_suspect")
    decrypted = entry["reconciled"] + entry["file_audience"] + entry["unmatched"]
    if not suspect or decrypted < MIN_SUSPECT_IDS or entry["reconciled"] >= MAX_SUSPECT_MATCH_SHARE * decrypted:
        return
    raise RunFailed(
        f"data source '{name}': {entry['reconciled']} of {decrypted} decrypted IDs match a profile, and byte position "
        f"{suspect['position']} of the decrypted IDs looks XORed by one value (an IV typo turns IDs into other valid "
        "ones, which match nobody): wrong IV? (Where the partner confirmed the IV: encryption.iv_confirmed: true.) "
        "Nothing was published"
    )


def _cause(entry: dict, failed: int, candidates: int, ratio: float, decryption: bool, hint: str) -> str:
    """The likely cause of ``failed`` of ``candidates`` IDs failing a run (over ``ratio``): the diagnosis'
    best explanation of such rejected IDs (of decrypt failures, or of the other invalid IDs), with its
    config change -- not a finding about lines that matched no profile (it would not fix what fails the
    run). When the rejected IDs it explains, estimated from the sample, would leave the others over the
    ratio, ``hint`` (the reason's likeliest cause) comes first and the finding after it, as what it
    explains: 100 SHA-1 digests beside 700 addresses sent unhashed were named the cause of the 800
    invalid IDs, and the run with hash_algorithm: sha1 applied failed again."""
    top = _first_finding(entry, lambda f: f.get("rejected") and (f.get("kind") in DECRYPTION_KINDS) == decryption)
    if top is None:
        return hint
    sampled, drawn = max(1, int(top["sampled"])), sampled_from(entry)
    explained = min(failed, round(int(top["rejected"]) * max(drawn, sampled) / sampled))
    if (failed - explained) / candidates <= ratio:
        return _described(top)
    about = "about " if drawn > sampled else ""
    return f"{hint} The diagnosis explains {about}{explained:,} of them: {_described(top, lead='')}"


def _finding_text(entry: dict, wanted) -> str | None:
    """The data source's first diagnosis finding that is ``wanted``, with its config change."""
    top = _first_finding(entry, wanted)
    return None if top is None else _described(top)


def _first_finding(entry: dict, wanted) -> dict | None:
    return next((f for f in entry.get("diagnosis") or () if wanted(f)), None)


def _described(finding: dict, lead: str = "diagnosis: ") -> str:
    change = suggestion_text(finding)  # none for a finding no setting fixes (tokens in another base64)
    return f"{lead}{finding['message']}" + (f" (suggested: {change})." if change else ".")
