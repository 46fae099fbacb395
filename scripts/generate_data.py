"""Generate a synthetic import job at any size: profiles, segment dumps, config, and the truth.

    python scripts/generate_data.py --out DIR [--profiles N] [--lines M] [--seed S] [--profile-format parquet]
                                    [--segment-pool 2000 [--segments-per-line 12]]

Writes under DIR:
  profiles.<fmt>                 the profile extract (ids, messy-cased emails, phones, visitor ids, crm ids, opt-out)
  segments/<source>/*.sync[.gz]  one folder of dump files per data source, split in parts
  keys/                          DEMO-ONLY AES key and IV for the encrypted data source (derived from the seed)
  job.yaml                       the import config for all of the above
  expected/memberships.csv       ground truth: data_source,segment_id,profile_id (what the import must produce)
  expected/file_audience.csv     ground truth: data_source,segment_id,channel,address,profile_id (empty: none)
  expected/counts.json           ground truth: per data source, lines by outcome

The truth is computed from how each line was generated, not by running the pipeline, so it is an
independent oracle for tests and benchmarks. All addresses use reserved example domains; nothing is
real PII. Data sources: visitor IDs, hashed emails (adobe, hex), hashed phones (uid2, base64), plain
CRM ids, and AES-CBC encrypted emails with a file audience (channel email, reconciliation not forced).

Vectorized with numpy and Arrow compute (profile keys are hashed once, lines and the truth are built
column-wise), so benchmark sizes are quick: 1M profiles + 1M lines in seconds, 10M + 10M in about a minute.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import itertools
import json
import math
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transforms.encrypt import encrypt_cbc  # noqa: E402
from transforms.normalize import normalize_and_hash  # noqa: E402

DOMAINS = ["example.com", "example.org", "gmail.com", "example.net"]
SOURCES = [
    # name, dpid, kind, segment ids, compressed, parts
    ("visitors", 56789, "visitor", ["1401", "1402", "1403", "1404"], True, 2),
    ("crm-hashed-emails", 12345, "hashed_email", ["2201", "2202", "2203"], True, 2),
    ("uid2-phones", 34567, "hashed_phone", ["3301", "3302"], False, 1),
    ("crm-plain", 45678, "plain", ["4401", "4402", "4403"], False, 1),
    ("web-encrypted-emails", 23456, "encrypted_email", ["5501", "5502"], True, 2),
]
BAD_LINES = ["", "not-a-valid-line", "{id} d_sid=24,c_color=blue", "{id} 12,ab", "{id}  {seg}", "{id} 1 2 3"]
BAD_REASON = ["format_errors"] * 4 + ["removals_only", "format_errors"]

# Line outcomes as generated (a "match" whose profile lacks the key becomes "unknown").
MATCH, UNKNOWN, INVALID, BAD = 0, 1, 2, 3
OUTCOME_CUTS = np.array([0.70, 0.92, 0.96])  # roll < .70 match, < .92 unknown, < .96 invalid, else bad
INVALID_ID = {
    "visitor": "12345",
    "hashed_email": "nothex" * 8,
    "hashed_phone": "too-short==",
    "encrypted_email": base64.b64encode(b"fifteen bytes!!").decode(),
}  # plain: "CRM:<line>"
VISITOR_ID_DIGITS = 38
ROWS_PER_SLICE = 1 << 20  # rows turned into text at a time when writing (bounded memory)
PROFILES_PER_LIST_CHUNK = 1 << 22  # visitor_ids list column chunks stay far below 2 GiB of characters
REMOVED_P = 0.2  # each segment of the source not added by a line is in its removed list with this chance
GZIP_LEVEL = 1  # the dumps are mostly random IDs: higher levels cost 3x the time for ~6% smaller files


def demo_key_material(seed: int) -> tuple[bytes, bytes]:
    """DEMO ONLY: a key and IV derived from the seed, so the committed demo is reproducible."""
    key = hashlib.sha256(f"audience-sync demo-only key {seed}".encode()).digest()
    iv = hashlib.sha256(f"audience-sync demo-only iv {seed}".encode()).digest()[:16]
    return key, iv


# ------------------------------------------------------------------------------------ helpers
def _join(*parts, sep: str = "") -> pa.StringArray:
    """Element-wise concatenation of string arrays and str scalars."""
    return pc.binary_join_element_wise(*parts, sep)


def _num(values: np.ndarray, width: int = 0) -> pa.StringArray:
    """Decimal text of integers, zero-padded to ``width`` (like f"{i:0{width}d}")."""
    text = pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())
    return pc.utf8_lpad(text, width, "0") if width else text


def _mask(values: np.ndarray) -> pa.BooleanArray:
    return pa.array(np.asarray(values, dtype=bool))


def _random_digits(rng: np.random.Generator, m: int) -> np.ndarray:
    """m random visitor IDs as an (m, 38) matrix of ASCII digits (leading zeros allowed)."""
    digits = rng.integers(0, 10, size=(m, VISITOR_ID_DIGITS), dtype=np.uint8)
    digits += ord("0")
    return digits


def _fixed_width_strings(chars: np.ndarray) -> pa.StringArray:
    """A string array over the rows of a C-contiguous (m, w) uint8 matrix of ASCII characters."""
    chars = np.ascontiguousarray(chars, dtype=np.uint8)
    m, w = chars.shape
    if m * w > np.iinfo(np.int32).max:
        raise OverflowError("more than 2 GiB of characters in one string array")
    offsets = np.arange(0, (m + 1) * w, w, dtype=np.int64).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), m, [None, pa.py_buffer(offsets), pa.py_buffer(chars)])


def _scatter(n: int, parts: list[tuple[np.ndarray, pa.Array]]) -> pa.StringArray:
    """The length-n string array whose rows ``where`` hold ``values``, for (where, values) covering 0..n-1."""
    pos = np.empty(n, dtype=np.int64)
    start = 0
    for where, values in parts:
        assert len(where) == len(values)
        pos[where] = np.arange(start, start + len(where))
        start += len(where)
    assert start == n
    arrays = [values for _, values in parts if len(values)]
    if not arrays:
        return pa.array([], pa.string())
    return pc.take(pa.concat_arrays(arrays), pa.array(pos))


class _Taken:
    """``values`` taken at ``indices``, a slice at a time (what :func:`_write_csv` reads): a truth of
    tens of millions of rows (many segments a line, 10M lines) is held as its indices only."""

    def __init__(self, values: pa.Array, indices: np.ndarray):
        self.values, self.indices = values, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, rows: slice) -> pa.Array:
        return pc.take(self.values, pa.array(self.indices[rows]))


def _text(rows: pa.StringArray, line_end: str) -> pa.Buffer:
    """The rows concatenated, each followed by ``line_end``, as one buffer (no per-row Python)."""
    if len(rows) == 0:
        return pa.py_buffer(b"")
    joined = _join(rows, "", sep=line_end)
    if joined.null_count:
        raise ValueError("null row")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset : joined.offset + len(joined) + 1]
    return joined.buffers()[2][int(offsets[0]) : int(offsets[-1])]


# ----------------------------------------------------------------------------------- profiles
def make_profiles(rng: np.random.Generator, n: int) -> dict:
    """Profile columns as Arrow arrays, plus the visitor IDs as a digit matrix with per-profile offsets."""
    i = np.arange(n, dtype=np.int64)
    istr = _num(i)
    ids = _join("P", pc.utf8_lpad(istr, 8, "0"))
    domain = rng.integers(0, len(DOMAINS), size=n)
    style = rng.integers(0, 4, size=n)
    dotted = (domain == DOMAINS.index("gmail.com")) & (i % 2 == 1)
    local = pc.take(pa.array(["user", "user."]), pa.array(dotted.astype(np.int8)))
    emails = _join(local, istr, "@", pc.take(pa.array(DOMAINS), pa.array(domain)))
    emails = pc.if_else(_mask(style == 1), pc.utf8_upper(emails), emails)
    emails = pc.if_else(_mask(style == 2), _join("  ", pc.utf8_capitalize(emails), " "), emails)
    emails = pc.if_else(_mask(rng.random(n) < 0.05), pa.scalar(None, pa.string()), emails)
    phones = _join("+33 6 ", _num(i // 10000, 4), " ", _num(i % 10000, 4))
    phones = pc.if_else(_mask(rng.random(n) < 0.10), pa.scalar(None, pa.string()), phones)
    n_vis = np.array([0, 1, 1, 2, 3], dtype=np.int64)[rng.integers(0, 5, size=n)]
    vis_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_vis, out=vis_offsets[1:])
    vis_digits = _random_digits(rng, int(vis_offsets[-1]))
    crm = _join("CRM-", pc.utf8_lpad(istr, 7, "0"))
    opt_out = rng.random(n) < 0.03
    return {
        "n": n,
        "profile_id": ids,
        "email": emails,
        "mobile": phones,
        "n_vis": n_vis,
        "vis_offsets": vis_offsets,
        "vis_digits": vis_digits,
        "crm_id": crm,
        "opt_out": opt_out,
    }


def change_profiles(profiles: dict, rng: np.random.Generator, share: float) -> None:
    """A later extract of the same base: ``share`` of the profiles get new values (email, phone,
    visitor IDs, CRM id); a quarter of those also get a new ``profile_id`` (one profile gone, one
    new). The rest are untouched, so a night's keys can be compared with the previous night's."""
    n = profiles["n"]
    picked = np.sort(rng.choice(n, size=min(n, int(round(n * share))), replace=False))
    if not len(picked):
        return
    num = _num(picked)
    profiles["email"] = _scatter_into(profiles["email"], picked, _join("changed.", num, "@example.org"))
    profiles["mobile"] = _scatter_into(profiles["mobile"], picked, _join("+44 7", pc.utf8_lpad(num, 9, "0")))
    profiles["crm_id"] = _scatter_into(profiles["crm_id"], picked, _join("CRM-C", pc.utf8_lpad(num, 7, "0")))
    is_picked = np.zeros(n, dtype=bool)
    is_picked[picked] = True
    rows = np.flatnonzero(np.repeat(is_picked, profiles["n_vis"]))  # the picked profiles' visitor IDs
    profiles["vis_digits"][rows] = _random_digits(rng, len(rows))
    renamed = picked[::4]
    if len(renamed):
        profiles["profile_id"] = _scatter_into(profiles["profile_id"], renamed, _join("Q", pc.utf8_lpad(_num(renamed), 8, "0")))
        profiles["renamed"] = True


def _scatter_into(values: pa.StringArray, where: np.ndarray, new: pa.StringArray) -> pa.StringArray:
    """``values`` with rows ``where`` (sorted) replaced by ``new``."""
    keep = np.ones(len(values), dtype=bool)
    keep[where] = False
    rest = np.flatnonzero(keep)
    return _scatter(len(values), [(rest, pc.take(values, pa.array(rest))), (where, new)])


def _hash(values: pa.StringArray, kind: str, profile: str, encoding: str) -> pa.StringArray:
    """normalize_and_hash over the whole array, a slice at a time (bounds its per-row Python objects)."""
    digests = [
        normalize_and_hash(values[s : s + ROWS_PER_SLICE], kind, profile, encoding)[0]
        for s in range(0, len(values), ROWS_PER_SLICE)
    ]
    return pa.concat_arrays(digests) if digests else pa.array([], pa.string())


def hash_profiles(profiles: dict) -> None:
    """Every profile's match keys, hashed once as the pipeline does (nulls where missing/invalid)."""
    profiles["email_digest"] = _hash(profiles["email"], "email", "adobe", "hex")
    profiles["phone_digest"] = _hash(profiles["mobile"], "phone", "uid2", "base64")
    for name in ("email", "phone"):
        digest = profiles[f"{name}_digest"]
        profiles[f"{name}_ok"] = np.asarray(digest.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    # Profile ids compare as strings; "P%08d" sorts like the integers below 10**8 only.
    n = profiles["n"]
    renamed = profiles.get("renamed", False)  # change_profiles: some ids no longer sort like their row
    profiles["order"] = None if n <= 10**8 and not renamed else np.asarray(pc.sort_indices(profiles["profile_id"])).astype(np.int64)


def _visitor_lists(profiles: dict) -> pa.ChunkedArray:
    offsets, digits, n = profiles["vis_offsets"], profiles["vis_digits"], profiles["n"]
    chunks = []
    for s in range(0, max(n, 1), PROFILES_PER_LIST_CHUNK):
        e = min(s + PROFILES_PER_LIST_CHUNK, n)
        values = _fixed_width_strings(digits[offsets[s] : offsets[e]])
        chunks.append(pa.ListArray.from_arrays(pa.array((offsets[s : e + 1] - offsets[s]).astype(np.int32)), values))
    return pa.chunked_array(chunks, pa.list_(pa.string()))


def write_profiles(profiles: dict, out: Path, fmt: str, parts: int = 1) -> str:
    """The extract (``profiles.<fmt>``; with ``parts`` over 1, Parquet in that many files under
    ``profiles/``, as Spark writes them); returns its path or glob, as the config names it."""
    table = pa.table(
        {
            "profile_id": profiles["profile_id"],
            "email": profiles["email"],
            "mobile": profiles["mobile"],
            "visitor_ids": _visitor_lists(profiles),
            "crm_id": profiles["crm_id"],
            "opt_out": pa.array(profiles["opt_out"], pa.bool_()),
        }
    )
    name = f"profiles.{fmt}"
    if parts > 1:
        assert fmt == "parquet", "an extract in parts is written as Parquet"
        (out / "profiles").mkdir(exist_ok=True)
        for k, rows in enumerate(np.array_split(np.arange(table.num_rows), parts)):
            pq.write_table(table.take(pa.array(rows)), out / "profiles" / f"part-{k:05d}.parquet")
        return "profiles/part-*.parquet"
    if fmt == "parquet":
        pq.write_table(table, out / name)
    elif fmt == "csv":
        joined = pc.binary_join(table["visitor_ids"], ";")
        pacsv.write_csv(table.set_column(3, "visitor_ids", joined), out / name)
    else:
        with open(out / name, "w") as fh:
            for batch in table.to_batches(max_chunksize=ROWS_PER_SLICE):
                fh.write("".join(json.dumps(row) + "\n" for row in batch.to_pylist()))
    return name


# -------------------------------------------------------------------------------------- dumps
class SegmentPlan:
    """Every ordered choice of 1..K distinct segments of a source (what rng.choice(replace=False) draws),
    with its text, first segment and set bitmask; and the text of every removed-segments bitmask."""

    def __init__(self, segments: list[str]):
        k = len(segments)
        perms = [p for c in range(1, k + 1) for p in itertools.permutations(range(k), c)]
        self.k = k
        # perms holds the choices of c segments at start[c] .. start[c] + count[c] - 1
        self.count = np.array([0] + [math.perm(k, c) for c in range(1, k + 1)], dtype=np.int64)
        self.start = np.concatenate(([0], np.cumsum(self.count)[:-1]))
        self.text = pa.array([",".join(segments[j] for j in p) for p in perms], pa.string())
        self.first = [segments[p[0]] for p in perms]
        self.setmask = np.array([sum(1 << j for j in p) for p in perms], dtype=np.int64)
        self.removed_text = pa.array(
            [",".join(s for j, s in enumerate(segments) if mask >> j & 1) for mask in range(1 << k)], pa.string()
        )
        self.sorted_segments = sorted(segments)
        self.rank = np.array([self.sorted_segments.index(s) for s in segments], dtype=np.int64)

    def draw(self, rng: np.random.Generator, n: int) -> "PlannedLines":
        """Per line: 1-3 segments (a permutation index) and a removed list (a bitmask of the others)."""
        count = np.minimum(rng.integers(1, 4, size=n), self.k)
        perm = self.start[count] + rng.integers(0, self.count[count])
        bits = (rng.random((n, self.k)) < REMOVED_P).astype(np.int64) @ (np.int64(1) << np.arange(self.k))
        return PlannedLines(self, perm, bits & ~self.setmask[perm])

    def explode(self, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, sorted segment index) for every segment of every line."""
        masks = self.setmask[perm]
        rows, segs = [], []
        for j in range(self.k):
            hit = np.flatnonzero(masks >> j & 1)
            rows.append(hit)
            segs.append(np.full(len(hit), self.rank[j], dtype=np.int64))
        return np.concatenate(rows), np.concatenate(segs)


class PlannedLines:
    """The segments drawn for a source's lines, as :func:`make_dump` reads them (``rows``: line
    indices, ascending): the segments' and removed lists' text, each line's first segment, and every
    (position in ``rows``, sorted segment index) pair. This one: :class:`SegmentPlan`'s."""

    def __init__(self, plan: SegmentPlan, perm: np.ndarray, removed: np.ndarray):
        self.plan, self.perm, self.removed = plan, perm, removed
        self.sorted_segments = plan.sorted_segments

    def text(self, rows: np.ndarray) -> pa.StringArray:
        return pc.take(self.plan.text, pa.array(self.perm[rows]))

    def removed_text(self, rows: np.ndarray) -> pa.StringArray:
        return pc.take(self.plan.removed_text, pa.array(self.removed[rows]))

    def first(self, rows: np.ndarray) -> list[str]:
        return [self.plan.first[p] for p in self.perm[rows].tolist()]

    def explode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.plan.explode(self.perm[rows])


class PooledLines:
    """Lines naming many segments of a big pool, as partners' AAM dumps do (thousands of segments, a
    dozen a line): ``pool`` segment ids of the source (its first segment id followed by the pool
    index, all of one width, so their text sorts as their numbers do), and per line a Poisson count
    of mean ``per_line`` (at least 1, at most ``pool``) drawn with replacement, then kept once each
    and in ascending order (so a line names a few hundredths fewer than drawn, and no two lines'
    lists differ by their order only). A line's removed list names one other segment of the pool
    with chance REMOVED_P (none when the draw is one of its own). Every line's segments are one
    slice of a flat array (``offsets``), so the text, explode and truth need no per-line Python."""

    def __init__(self, rng: np.random.Generator, segments: list[str], n: int, pool: int, per_line: float):
        width = len(str(pool - 1))
        self.sorted_segments = [f"{segments[0]}{j:0{width}d}" for j in range(pool)]
        drawn = np.minimum(np.maximum(rng.poisson(per_line, size=n), 1), pool)
        flat = rng.integers(0, pool, size=int(drawn.sum()))
        flat += np.repeat(np.arange(n, dtype=np.int64) * pool, drawn)
        flat.sort(kind="stable")  # line by line, each line's segments ascending; repeats are neighbours
        flat = flat[np.concatenate(([True], flat[1:] != flat[:-1]))] if len(flat) else flat
        self.offsets = np.searchsorted(flat, np.arange(n + 1, dtype=np.int64) * pool)
        other = np.arange(n, dtype=np.int64) * pool + rng.integers(0, pool, size=n)
        own = flat[np.minimum(np.searchsorted(flat, other), len(flat) - 1)] == other if len(flat) else np.zeros(n, bool)
        self.removed = np.where((rng.random(n) < REMOVED_P) & ~own, other % pool, -1)
        self.segment = (flat % pool).astype(np.int32)  # (a 10M bench: 120M of them)
        self.segment_text = pa.array(self.sorted_segments, pa.string())

    def _positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``rows``, index in the flat arrays) of every segment of the lines ``rows``."""
        counts = self.offsets[rows + 1] - self.offsets[rows]
        pos = np.repeat(np.arange(len(rows), dtype=np.int32), counts)
        at = np.repeat(self.offsets[rows] - (np.cumsum(counts) - counts), counts)
        at += np.arange(len(pos), dtype=np.int64)
        return pos, at

    def text(self, rows: np.ndarray) -> pa.StringArray:
        """The lines' segment lists, ``ROWS_PER_SLICE`` lines at a time (bounds the per-token arrays)."""
        pieces = []
        for s in range(0, len(rows), ROWS_PER_SLICE):
            some = rows[s : s + ROWS_PER_SLICE]
            offsets = np.concatenate(([0], np.cumsum(self.offsets[some + 1] - self.offsets[some]))).astype(np.int32)
            tokens = pc.take(self.segment_text, pa.array(self.segment[self._positions(some)[1]]))
            pieces.append(pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), tokens), ","))
        return pa.concat_arrays(pieces) if pieces else pa.array([], pa.string())

    def removed_text(self, rows: np.ndarray) -> pa.StringArray:
        removed = self.removed[rows]
        return pc.fill_null(pc.take(self.segment_text, pa.array(removed, mask=removed < 0)), "")

    def first(self, rows: np.ndarray) -> list[str]:
        return pc.take(self.segment_text, pa.array(self.segment[self.offsets[rows]])).to_pylist()

    def explode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, at = self._positions(rows)
        return pos, self.segment[at].astype(np.int64)  # (int64: the truth's sort keys are segment x profiles)


def make_dump(rng, kind: str, segments: list[str], n: int, profiles: dict, key: bytes, iv: bytes,
              segment_pool: int = 0, segments_per_line: float = 0.0):
    """Lines for one data source plus the truth: memberships, file audience and outcome counts.

    Returns (lines, memberships, file_audience, counts): lines a string array; memberships
    (the source's segment ids sorted, sorted segment index, profile index), the arrays de-duplicated
    and in CSV order; file_audience the columns segment_id, address, profile_id (:class:`_Taken`),
    de-duplicated and sorted; counts by outcome category. ``segment_pool``: lines draw from that many segments
    (:class:`PooledLines`) instead of ``segments``.
    """
    n_prof = profiles["n"]
    outcome = np.searchsorted(OUTCOME_CUTS, rng.random(n), side="right")
    who = rng.integers(0, max(n_prof, 1), size=n)
    if segment_pool:
        drawn = PooledLines(rng, segments, n, segment_pool, segments_per_line)
    else:
        drawn = SegmentPlan(segments).draw(rng, n)

    matched = outcome == MATCH
    if n_prof == 0:
        outcome[matched] = UNKNOWN
    elif kind == "visitor":
        outcome[matched & (profiles["n_vis"][who] == 0)] = UNKNOWN
    elif kind in ("hashed_email", "encrypted_email"):
        outcome[matched & ~profiles["email_ok"][who]] = UNKNOWN
    elif kind == "hashed_phone":
        outcome[matched & ~profiles["phone_ok"][who]] = UNKNOWN
    at = {o: np.flatnonzero(outcome == o) for o in (MATCH, UNKNOWN, INVALID, BAD)}
    w_match = who[at[MATCH]]
    unknown_no = _num(at[UNKNOWN])

    # IDs of matching lines, taken from the profile they were drawn for; and of unknown lines.
    if kind == "visitor":
        pick = profiles["vis_offsets"][w_match] + rng.integers(0, profiles["n_vis"][w_match])
        match_ids = _fixed_width_strings(profiles["vis_digits"][pick])
        unknown_ids = _fixed_width_strings(_random_digits(rng, len(at[UNKNOWN])))
    elif kind == "hashed_email":
        match_ids = pc.take(profiles["email_digest"], pa.array(w_match))
        unknown_ids = _hash(_join("nobody", unknown_no, "@example.invalid"), "email", "adobe", "hex")
    elif kind == "hashed_phone":
        match_ids = pc.take(profiles["phone_digest"], pa.array(w_match))
        unknown_ids = _hash(_join("+1555", pc.utf8_lpad(unknown_no, 7, "0")), "phone", "uid2", "base64")
    elif kind == "plain":
        match_ids = pc.take(profiles["crm_id"], pa.array(w_match))
        unknown_ids = _join("CRM-X", pc.utf8_lpad(unknown_no, 7, "0"))
    else:  # encrypted_email: the profile's email as stored (stripped), unknown addresses in mixed case
        match_plain = pc.utf8_trim_whitespace(pc.take(profiles["email"], pa.array(w_match)))
        unknown_plain = _join("Visitor", unknown_no, "@Example.net")
        tokens = pa.array(encrypt_cbc(match_plain.to_pylist() + unknown_plain.to_pylist(), key, iv), pa.string())
        match_ids, unknown_ids = tokens[: len(w_match)], tokens[len(w_match) :]
    if kind == "plain":
        invalid_ids = _join("CRM:", _num(at[INVALID]))
    else:
        invalid_ids = pa.array([INVALID_ID[kind]] * len(at[INVALID]), pa.string())

    # Good lines: "<id> <segments> <removed>"; bad lines from the templates (4%, rendered in Python).
    good = np.flatnonzero(outcome != BAD)
    pos_in_good = np.cumsum(outcome != BAD) - 1
    ids = _scatter(
        len(good),
        [(pos_in_good[at[o]], arr) for o, arr in ((MATCH, match_ids), (UNKNOWN, unknown_ids), (INVALID, invalid_ids))],
    )
    good_lines = _join(
        ids,
        drawn.text(good),
        drawn.removed_text(good),
        sep=" ",
    )
    template = rng.integers(0, len(BAD_LINES), size=len(at[BAD]))
    if kind == "visitor":
        bad_ids = ["0" * VISITOR_ID_DIGITS] * len(at[BAD])
    else:
        bad_ids = _fixed_width_strings(_random_digits(rng, len(at[BAD]))).to_pylist()
    bad_lines = pa.array(
        [
            BAD_LINES[t].format(id=some_id, seg=first)
            for t, some_id, first in zip(template.tolist(), bad_ids, drawn.first(at[BAD]))
        ],
        pa.string(),
    )
    lines = _scatter(n, [(good, good_lines), (at[BAD], bad_lines)])
    del ids, good_lines, bad_lines  # (not held while the truth is built: a 10M mix's are GBs)

    counts: dict[str, int] = {}
    categories = {MATCH: "reconciled", UNKNOWN: "unmatched", INVALID: "invalid_ids"}
    if kind == "encrypted_email":
        categories[UNKNOWN] = "file_audience"
    for o, category in categories.items():
        if len(at[o]):
            counts[category] = len(at[o])
    for t, c in enumerate(np.bincount(template, minlength=len(BAD_LINES)).tolist()):
        if c:
            counts[BAD_REASON[t]] = counts.get(BAD_REASON[t], 0) + c
    counts["received"] = n

    # Memberships: every segment of every matching line, for the profile it was drawn for. One sort key
    # (segment, profile in string order) orders them; equal neighbours are duplicates.
    rows, seg = drawn.explode(at[MATCH])
    prof = w_match[rows]
    order = profiles["order"]
    if order is not None:
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        prof = rank[prof]
    flat = np.sort(seg * max(n_prof, 1) + prof)
    flat = flat[np.concatenate(([True], flat[1:] != flat[:-1]))] if len(flat) else flat
    seg, prof = flat // max(n_prof, 1), flat % max(n_prof, 1)
    if order is not None:
        prof = order[prof]
    small = np.int32 if n_prof <= np.iinfo(np.int32).max else np.int64  # a 10M truth holds 5 x 17M rows
    memberships = (drawn.sorted_segments, seg.astype(np.int32), prof.astype(small))

    # File audience: every decrypted address of the encrypted source, normalized (trimmed, lower case),
    # with the profile it was drawn for (matching lines) or none (unknown lines: an empty profile_id).
    # Rows are de-duplicated and sorted as numbers (segment, rank of the line's address and profile):
    # a string group-by and sort of every row took a third of a 1M generation with a dozen segments a line.
    if kind == "encrypted_email":
        m_rows, m_seg = drawn.explode(at[MATCH])
        u_rows, u_seg = drawn.explode(at[UNKNOWN])
        address = pa.concat_arrays([pc.utf8_lower(match_plain), pc.utf8_lower(unknown_plain)])
        owner = pa.concat_arrays([pc.take(profiles["profile_id"], pa.array(w_match)),
                                  pa.repeat(pa.scalar("", pa.string()), len(at[UNKNOWN]))])
        rank, first = _dense_rank(address, owner)
        flat = np.sort(np.concatenate([m_seg, u_seg]) * max(len(first), 1)
                       + rank[np.concatenate([m_rows, len(w_match) + u_rows])])
        flat = flat[np.concatenate(([True], flat[1:] != flat[:-1]))] if len(flat) else flat  # (np.unique: 4x slower)
        seg, line = np.divmod(flat, max(len(first), 1))
        line = first[line].astype(np.int32)
        file_audience = {"segment_id": _Taken(pa.array(drawn.sorted_segments, pa.string()), seg.astype(np.int32)),
                         "address": _Taken(address, line), "profile_id": _Taken(owner, line)}
    else:
        file_audience = {c: _Taken(pa.array([], pa.string()), np.zeros(0, np.int32))
                         for c in ("segment_id", "address", "profile_id")}
    return lines, memberships, file_audience, counts


def _dense_rank(address: pa.StringArray, owner: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each row's (address, owner) pair in string order, equal pairs alike; a row of each rank)."""
    order = np.asarray(pc.sort_indices(pa.table({"a": address, "o": owner}), [("a", "ascending"), ("o", "ascending")]),
                       dtype=np.int64)
    a, o = pc.take(address, pa.array(order)), pc.take(owner, pa.array(order))
    new = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        new[1:] = pc.or_(pc.not_equal(a[1:], a[:-1]), pc.not_equal(o[1:], o[:-1])).to_numpy(zero_copy_only=False)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.cumsum(new) - 1
    return rank, order[new]


def write_dump(lines: pa.StringArray, folder: Path, did: int, dpid: int, parts: int, compressed: bool, ts_ms: int,
               sync_mode: str = "full") -> None:
    """Split the lines in ``parts`` files (sizes as np.array_split), each line ending in a newline;
    ``sync_mode``: full or iter, in the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [len(lines) // parts + (k < len(lines) % parts) for k in range(parts)]
    start = 0
    for k, size in enumerate(sizes, start=1):
        split = f"{k:03d}" if parts > 1 else ""
        name = f"ftp_{did}_{dpid}_{sync_mode}_{ts_ms}{split}.sync" + (".gz" if compressed else "")
        with open(folder / name, "wb") as raw, (
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=GZIP_LEVEL)
            if compressed
            else nullcontext(raw)
        ) as fh:
            if size == 0:
                fh.write(b"\n")  # as "\n".join([]) + "\n"
            for s in range(start, start + size, ROWS_PER_SLICE):
                fh.write(_text(lines[s : min(s + ROWS_PER_SLICE, start + size)], "\n"))
        start += size


def _write_csv(path: Path, header: list[str], blocks) -> None:
    """CSV as csv.writer writes it (\\r\\n, no quoting needed: no field holds a comma, quote or newline).

    ``blocks``: (rows, fields) pairs in output order; a field is a str (the same on every row) or an array."""
    with open(path, "wb") as fh:
        fh.write((",".join(header) + "\r\n").encode())
        for rows, fields in blocks:
            for s in range(0, rows, ROWS_PER_SLICE):
                cols = [f if isinstance(f, str) else f[s : s + ROWS_PER_SLICE] for f in fields]
                fh.write(_text(_join(*cols, sep=","), "\r\n"))


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
    dpid: 56789
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


def generate(out: Path, n_profiles: int, n_lines: int, seed: int = 7, profile_format: str = "parquet",
             parts: int | None = None, shares: dict[str, float] | None = None, changed: float = 0.0,
             sync_mode: str = "full", ts_ms: int = 1795305600000, segment_pool: int = 0,
             segments_per_line: float = 12.0, profile_parts: int = 1) -> dict:
    """Write a job under ``out``; returns the expected counts per data source.

    ``parts``: files per data source (default: each source's own, 1-2); ``shares``: relative share of
    the dump lines per data source name (default: equal); ``changed``: share of the profiles that
    differ from the same seed's profiles (a later night's extract, see :func:`change_profiles`);
    ``sync_mode``: ``iter`` names the dumps as a night's changes (their removed lists then apply);
    ``ts_ms``: the delivery time in the dump names (default 2026-11-22T00:00:00Z; a later night's
    delivery is later: the nightly job refuses one no later than what the night before read);
    ``segment_pool``: when set (e.g. 2000), each data source's lines name its own pool of that many
    segments, ``segments_per_line`` of them a line on average (a Poisson count, at least 1; distinct,
    in ascending order), as partners' AAM dumps do; off by default: each source's 2-4 segments, 1-3 a
    line (:class:`PooledLines`, :class:`SegmentPlan`); ``profile_parts``: the extract in that many
    Parquet files (:func:`write_profiles`)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    profiles = make_profiles(rng, n_profiles)
    if changed:
        change_profiles(profiles, np.random.default_rng([seed, 1]), changed)
    profile_file = write_profiles(profiles, out, profile_format, profile_parts)
    hash_profiles(profiles)
    key, iv = demo_key_material(seed)
    (out / "keys").mkdir(exist_ok=True)
    (out / "keys" / "demo-only-aes256.key").write_text(key.hex() + "\n")
    (out / "keys" / "demo-only-iv.hex").write_text(iv.hex() + "\n")
    (out / "expected").mkdir(exist_ok=True)
    truth, all_counts = {}, {}
    weights = {name: (shares or {}).get(name, 0.0 if shares else 1.0) for name, *_ in SOURCES}
    for name, dpid, kind, segments, compressed, source_parts in SOURCES:
        share = n_lines // len(SOURCES) if shares is None else int(n_lines * weights[name] / sum(weights.values()))
        lines, members, file_audience, counts = make_dump(rng, kind, segments, share, profiles, key, iv,
                                                          segment_pool, segments_per_line)
        write_dump(lines, out / "segments" / name, 1234, dpid, parts or source_parts, compressed, ts_ms, sync_mode)
        del lines
        truth[name] = (members, file_audience)
        all_counts[name] = dict(sorted(counts.items()))
    ids = profiles["profile_id"]
    _write_csv(
        out / "expected" / "memberships.csv",
        ["data_source", "segment_id", "profile_id"],
        (
            (len(seg), [name, _Taken(pa.array(segs), seg), _Taken(ids, prof)])
            for name, ((segs, seg, prof), _) in sorted(truth.items())
        ),
    )
    _write_csv(
        out / "expected" / "file_audience.csv",
        ["data_source", "segment_id", "channel", "address", "profile_id"],
        (
            (len(fa["segment_id"]), [name, fa["segment_id"], "email", fa["address"], fa["profile_id"]])
            for name, (_, fa) in sorted(truth.items())
        ),
    )
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
    parser.add_argument("--segment-pool", type=int, default=0,
                        help="segments per data source that lines draw from (default: each source's 2-4, 1-3 a line)")
    parser.add_argument("--segments-per-line", type=float, default=12.0, help="with --segment-pool: their mean a line")
    args = parser.parse_args(argv)
    counts = generate(args.out, args.profiles, args.lines, args.seed, args.profile_format,
                      segment_pool=args.segment_pool, segments_per_line=args.segments_per_line)
    print(json.dumps(counts, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
