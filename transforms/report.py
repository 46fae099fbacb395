"""The run report: counts per data source, in the platform's receipt shape, that must add up."""
from __future__ import annotations

from collections import defaultdict

from transforms.config import JobConfig
from transforms.errors import RunFailed
from transforms.outcomes import DECRYPT_FAILURES, OUTCOMES, Reason


def build_report(cfg: JobConfig, counts: list[tuple[tuple[str, str], int]], files: dict[str, list[dict]] | None = None, run_date: str | None = None) -> dict:
    """Assemble the report from summed counters ``((data_source, counter), n)``."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (name, counter), n in counts:
        per[name][counter] += n
    sources = {}
    for ds in cfg.data_sources:
        c = per[ds.name]
        entry = {
            "dpid": ds.dpid,
            "id_type": ds.id_type if ds.id_type == "visitor" else f"declared/{ds.declared}",
            "received": c["received"],
            **{category: 0 for category in OUTCOMES},
            "rejected_by_reason": {},
            "segments": {},
            "profile_keys": c["profile_keys"],
            "profile_keys_shuffled": c["profile_keys_shuffled"],
            "profile_values_without_key": c["profile_values_without_key"],
        }
        carried = {k: n for k, n in sorted(c.items()) if k.endswith(("_carried", "_removed"))}
        if carried:  # nightly: rows kept from / removed from the previous night's state
            entry["previous_state"] = carried
        entry["reconciled"] = c["reconciled"]
        entry["file_audience"] = c["file_audience"]
        for counter, n in sorted(c.items()):
            kind, _, value = counter.partition(":")
            if kind == "reason":
                entry["rejected_by_reason"][value] = n
                entry[Reason(value).category] += n
            elif kind in ("members", "file_audience_members"):
                seg = entry["segments"].setdefault(value, {"members": 0})
                seg["members" if kind == "members" else "file_audience"] = n
        entry["segments"] = dict(sorted(entry["segments"].items(), key=lambda kv: (len(kv[0]), kv[0])))
        if files is not None:
            entry["files"] = files.get(ds.name, [])
        sources[ds.name] = entry
    totals = {k: sum(s[k] for s in sources.values()) for k in ("received", *OUTCOMES)}
    report = {"job": "import", "profiles_read": per[""]["profiles_read"], "data_sources": sources, "totals": totals}
    if run_date:
        report["run_date"] = run_date
    return report


def check_report(report: dict, cfg: JobConfig) -> None:
    """Raise :class:`RunFailed` when the counts do not add up or a data source fails to decrypt."""
    for name, entry in report["data_sources"].items():
        accounted = sum(entry[k] for k in OUTCOMES)
        if accounted != entry["received"]:
            raise RunFailed(
                f"data source '{name}': counts do not add up (received {entry['received']}, accounted for {accounted})"
            )
        ds = cfg.data_source(name)
        if ds.decrypts and entry["received"]:
            failed = sum(entry["rejected_by_reason"].get(r, 0) for r in DECRYPT_FAILURES)
            candidates = entry["received"] - entry["format_errors"] - entry["removals_only"]
            if candidates and failed / candidates > ds.max_decrypt_failure_ratio:
                raise RunFailed(
                    f"data source '{name}': {failed} of {candidates} IDs failed to decrypt "
                    f"(more than max_decrypt_failure_ratio={ds.max_decrypt_failure_ratio}); "
                    "wrong key or IV? Nothing was published"
                )


def summary_lines(report: dict) -> list[str]:
    """A short human summary: counts only, no IDs."""
    if report.get("status") == "staged":
        return ["job staged (built and submitted, or written as a template): no report until it runs"]
    out = [f"profiles read: {report['profiles_read']}"]
    for name, e in report["data_sources"].items():
        reasons = ", ".join(f"{r}={n}" for r, n in e["rejected_by_reason"].items()) or "none"
        out.append(
            f"{name}: received={e['received']} reconciled={e['reconciled']} file_audience={e['file_audience']} "
            f"unmatched={e['unmatched']} invalid_ids={e['invalid_ids']} format_errors={e['format_errors']} "
            f"removals_only={e['removals_only']} segments={len(e['segments'])} | rejected by reason: {reasons}"
        )
    return out
