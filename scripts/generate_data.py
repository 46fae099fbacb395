"""Generate a synthetic import job at any size: profiles, segment dumps, config, and the truth.

    python scripts/generate_data.py --out DIR [--profiles N] [--lines M] [--seed S] [--profile-format parquet]

Writes under DIR:
  profiles.<fmt>                 the profile extract (ids, messy-cased emails, phones, visitor ids, crm ids, opt-out)
  segments/<source>/*.sync[.gz]  one folder of dump files per data source, split in parts
  keys/                          DEMO-ONLY AES key and IV for the encrypted data source (derived from the seed)
  job.yaml                       the import config for all of the above
  expected/memberships.csv       ground truth: data_source,segment_id,profile_id (what the import must produce)
  expected/file_audience.csv     ground truth: data_source,segment_id,channel,address
  expected/counts.json           ground truth: per data source, lines by outcome

The truth is computed from how each line was generated, not by running the pipeline, so it is an
independent oracle for tests and benchmarks. All addresses use reserved example domains; nothing is
real PII. Data sources: visitor IDs, hashed emails (adobe, hex), hashed phones (uid2, base64), plain
CRM ids, and AES-CBC encrypted emails with a file audience (channel email, reconciliation not forced).
"""
from __future__ import annotations

import argparse
import base64
import csv
import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transforms.crypto import encrypt_cbc  # noqa: E402
from transforms.normalize import hash_value, normalize_email  # noqa: E402

DOMAINS = ["example.com", "example.org", "gmail.com", "example.net"]
SOURCES = [
    # name, dpid, kind, segment ids, compressed, parts
    ("visitors", 20914, "visitor", ["1401", "1402", "1403", "1404"], True, 2),
    ("crm-hashed-emails", 12345, "hashed_email", ["2201", "2202", "2203"], True, 2),
    ("uid2-phones", 34567, "hashed_phone", ["3301", "3302"], False, 1),
    ("crm-plain", 45678, "plain", ["4401", "4402", "4403"], False, 1),
    ("web-encrypted-emails", 23456, "encrypted_email", ["5501", "5502"], True, 2),
]
BAD_LINES = ["", "not-a-valid-line", "{id} d_sid=24,c_color=blue", "{id} 12,ab", "{id}  {seg}", "{id} 1 2 3"]
BAD_REASON = ["format_errors"] * 4 + ["removals_only", "format_errors"]


def demo_key_material(seed: int) -> tuple[bytes, bytes]:
    """DEMO ONLY: a key and IV derived from the seed, so the committed demo is reproducible."""
    key = hashlib.sha256(f"audience-sync demo-only key {seed}".encode()).digest()
    iv = hashlib.sha256(f"audience-sync demo-only iv {seed}".encode()).digest()[:16]
    return key, iv


def make_profiles(rng: np.random.Generator, n: int) -> dict:
    ids = np.array([f"P{i:08d}" for i in range(n)], dtype=object)
    domains = rng.choice(DOMAINS, size=n)
    style = rng.integers(0, 4, size=n)
    emails = []
    for i in range(n):
        local = f"user.{i}" if domains[i] == "gmail.com" and i % 2 else f"user{i}"
        e = f"{local}@{domains[i]}"
        if style[i] == 1:
            e = e.upper()
        elif style[i] == 2:
            e = f"  {e.capitalize()} "
        emails.append(e)
    emails = np.array(emails, dtype=object)
    emails[rng.random(n) < 0.05] = None
    phones = np.array([f"+33 6 {i // 10000:04d} {i % 10000:04d}" for i in range(n)], dtype=object)
    phones[rng.random(n) < 0.10] = None
    n_vis = rng.choice([0, 1, 1, 2, 3], size=n)
    hi = rng.integers(0, 10**19, size=int(n_vis.sum()), dtype=np.uint64)
    lo = rng.integers(0, 10**19, size=int(n_vis.sum()), dtype=np.uint64)
    flat = [f"{a:019d}{b:019d}" for a, b in zip(hi, lo)]
    offsets = np.concatenate(([0], np.cumsum(n_vis)))
    visitor_ids = [flat[offsets[i] : offsets[i + 1]] for i in range(n)]
    crm = np.array([f"CRM-{i:07d}" for i in range(n)], dtype=object)
    opt_out = rng.random(n) < 0.03
    return {"profile_id": ids, "email": emails, "mobile": phones, "visitor_ids": visitor_ids, "crm_id": crm, "opt_out": opt_out}


def write_profiles(profiles: dict, out: Path, fmt: str) -> str:
    table = pa.table(
        {
            "profile_id": pa.array(profiles["profile_id"], pa.string()),
            "email": pa.array(profiles["email"], pa.string()),
            "mobile": pa.array(profiles["mobile"], pa.string()),
            "visitor_ids": pa.array(profiles["visitor_ids"], pa.list_(pa.string())),
            "crm_id": pa.array(profiles["crm_id"], pa.string()),
            "opt_out": pa.array(profiles["opt_out"], pa.bool_()),
        }
    )
    name = f"profiles.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, out / name)
    elif fmt == "csv":
        joined = pa.array([";".join(v) for v in profiles["visitor_ids"]], pa.string())
        pacsv.write_csv(table.set_column(3, "visitor_ids", joined), out / name)
    else:
        with open(out / name, "w") as fh:
            for row in table.to_pylist():
                fh.write(json.dumps(row) + "\n")
    return name


def _random_visitor_ids(rng, n):
    hi = rng.integers(0, 10**19, size=n, dtype=np.uint64)
    lo = rng.integers(0, 10**19, size=n, dtype=np.uint64)
    return [f"{a:019d}{b:019d}" for a, b in zip(hi, lo)]


def make_dump(rng, kind: str, segments: list[str], n: int, profiles: dict, key: bytes, iv: bytes):
    """Lines for one data source plus the truth: memberships, file audience and outcome counts."""
    n_prof = len(profiles["profile_id"])
    roll = rng.random(n)
    outcome = np.where(roll < 0.70, "match", np.where(roll < 0.92, "unknown", np.where(roll < 0.96, "invalid", "bad")))
    who = rng.integers(0, n_prof, size=n)
    seg_count = rng.integers(1, 4, size=n)
    memberships, file_audience, counts = set(), set(), {}
    ids: list[str | None] = [None] * n
    truth_kind = {"match": "reconciled", "unknown": "unmatched", "invalid": "invalid_ids"}

    if kind == "encrypted_email":
        truth_kind["unknown"] = "file_audience"

    plaintexts_to_encrypt: list[tuple[int, str]] = []
    for i in range(n):
        o = outcome[i]
        p = int(who[i])
        if o == "match":
            if kind == "visitor":
                vis = profiles["visitor_ids"][p]
                if not vis:
                    o = outcome[i] = "unknown"
                else:
                    ids[i] = vis[int(rng.integers(0, len(vis)))]
            elif kind in ("hashed_email", "encrypted_email"):
                email = profiles["email"][p]
                if email is None:
                    o = outcome[i] = "unknown"
                elif kind == "hashed_email":
                    ids[i] = hash_value(email, "email", "adobe", "hex")
                else:
                    plaintexts_to_encrypt.append((i, email.strip()))
            elif kind == "hashed_phone":
                phone = profiles["mobile"][p]
                if phone is None:
                    o = outcome[i] = "unknown"
                else:
                    ids[i] = hash_value(phone, "phone", "uid2", "base64")
            else:
                ids[i] = profiles["crm_id"][p]
        if o == "unknown":
            if kind == "visitor":
                ids[i] = _random_visitor_ids(rng, 1)[0]
            elif kind == "hashed_email":
                ids[i] = hash_value(f"nobody{i}@example.invalid", "email", "adobe", "hex")
            elif kind == "encrypted_email":
                plaintexts_to_encrypt.append((i, f"Visitor{i}@Example.net"))
            elif kind == "hashed_phone":
                ids[i] = hash_value(f"+1555{i:07d}", "phone", "uid2", "base64")
            else:
                ids[i] = f"CRM-X{i:07d}"
        elif o == "invalid":
            ids[i] = {
                "visitor": "12345",
                "hashed_email": "nothex" * 8,
                "hashed_phone": "too-short==",
                "plain": f"CRM:{i}",
                "encrypted_email": base64.b64encode(b"fifteen bytes!!").decode(),
            }[kind]
    if plaintexts_to_encrypt:
        tokens = encrypt_cbc([t for _, t in plaintexts_to_encrypt], key, iv)
        for (i, _), tok in zip(plaintexts_to_encrypt, tokens):
            ids[i] = tok

    lines = []
    for i in range(n):
        segs = [str(s) for s in rng.choice(segments, size=min(int(seg_count[i]), len(segments)), replace=False)]
        o = outcome[i]
        if o == "bad":
            b = int(rng.integers(0, len(BAD_LINES)))
            some_id = ids[i] or _random_visitor_ids(rng, 1)[0]
            lines.append(BAD_LINES[b].format(id=some_id if kind != "visitor" else "0" * 38, seg=segs[0]))
            counts[BAD_REASON[b]] = counts.get(BAD_REASON[b], 0) + 1
            continue
        removed = ",".join(s for s in segments if s not in segs and rng.random() < 0.2)
        lines.append(f"{ids[i]} {','.join(segs)} {removed}")
        category = truth_kind[o]
        counts[category] = counts.get(category, 0) + 1
        if o == "match":
            for s in segs:
                if kind == "visitor":
                    # a visitor ID may be shared by no one else: membership of its profile only
                    memberships.add((s, profiles["profile_id"][int(who[i])]))
                else:
                    memberships.add((s, profiles["profile_id"][int(who[i])]))
        elif o == "unknown" and kind == "encrypted_email":
            for s in segs:
                file_audience.add((s, f"visitor{i}@example.net"))
    counts["received"] = n
    return lines, memberships, file_audience, counts


def write_dump(lines: list[str], folder: Path, did: int, dpid: int, parts: int, compressed: bool, ts_ms: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(lines)), parts) if parts > 1 else [np.arange(len(lines))]
    for k, idx in enumerate(chunks, start=1):
        split = f"{k:03d}" if parts > 1 else ""
        name = f"ftp_{did}_{dpid}_full_{ts_ms}{split}.sync" + (".gz" if compressed else "")
        body = ("\n".join(lines[j] for j in idx) + "\n").encode()
        if compressed:
            with open(folder / name, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
                gz.write(body)
        else:
            (folder / name).write_bytes(body)


def config_text(profile_file: str) -> str:
    return f"""# Generated by scripts/generate_data.py. The key files under keys/ are DEMO ONLY.
profiles:
  path: {profile_file}
  id: profile_id
  email: email
  phone: mobile
  visitor_ids: visitor_ids
  opt_out: opt_out
data_sources:
  - name: visitors
    dpid: 20914
    segments: segments/visitors/*.sync*
    id_type: visitor
  - name: crm-hashed-emails
    dpid: 12345
    segments: segments/crm-hashed-emails/*.sync*
    id_type: declared
    declared: hashed
    match_on: email
    normalization: adobe
  - name: uid2-phones
    dpid: 34567
    segments: segments/uid2-phones/*.sync*
    id_type: declared
    declared: hashed
    match_on: phone
    normalization: uid2
  - name: crm-plain
    dpid: 45678
    segments: segments/crm-plain/*.sync*
    id_type: declared
    declared: plain
    match_on: crm_id
  - name: web-encrypted-emails
    dpid: 23456
    segments: segments/web-encrypted-emails/*.sync*
    id_type: declared
    declared: encrypted
    match_on: email
    channel: email
    force_reconciliation: false
    encryption:
      algorithm: aes-cbc
      key: file:keys/demo-only-aes256.key
      key_encoding: hex
      iv: file:keys/demo-only-iv.hex
      iv_encoding: hex
"""


def generate(out: Path, n_profiles: int, n_lines: int, seed: int = 7, profile_format: str = "parquet") -> dict:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    profiles = make_profiles(rng, n_profiles)
    profile_file = write_profiles(profiles, out, profile_format)
    key, iv = demo_key_material(seed)
    (out / "keys").mkdir(exist_ok=True)
    (out / "keys" / "demo-only-aes256.key").write_text(key.hex() + "\n")
    (out / "keys" / "demo-only-iv.hex").write_text(iv.hex() + "\n")
    (out / "expected").mkdir(exist_ok=True)
    all_members, all_file, all_counts = [], [], {}
    ts_ms = 1795305600000  # 2026-11-23T00:00:00Z
    for name, dpid, kind, segments, compressed, parts in SOURCES:
        share = n_lines // len(SOURCES)
        lines, members, file_audience, counts = make_dump(rng, kind, segments, share, profiles, key, iv)
        write_dump(lines, out / "segments" / name, 1234, dpid, parts, compressed, ts_ms)
        all_members += [(name, s, p) for s, p in members]
        all_file += [(name, s, "email", a) for s, a in file_audience]
        all_counts[name] = dict(sorted(counts.items()))
    with open(out / "expected" / "memberships.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["data_source", "segment_id", "profile_id"])
        w.writerows(sorted(all_members))
    with open(out / "expected" / "file_audience.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["data_source", "segment_id", "channel", "address"])
        w.writerows(sorted(all_file))
    (out / "expected" / "counts.json").write_text(json.dumps(all_counts, indent=2, sort_keys=True) + "\n")
    (out / "job.yaml").write_text(config_text(profile_file))
    return all_counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--profiles", type=int, default=300)
    parser.add_argument("--lines", type=int, default=1000, help="dump lines in total, shared by the data sources")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile-format", choices=["parquet", "csv", "jsonl"], default="parquet")
    args = parser.parse_args(argv)
    counts = generate(args.out, args.profiles, args.lines, args.seed, args.profile_format)
    print(json.dumps(counts, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
