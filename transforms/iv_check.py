"""Is the CBC IV right? A check of the decrypted IDs' first block, before anything is published.

AES-CBC with a wrong IV still decrypts, and its padding stays valid: only the first 16 bytes of every
plaintext change, each XORed with the same byte ``d_j = IV_used[j] ^ IV_true[j]``. A one-bit error
turns ``user@gmail.com`` into ``user@gmail.bom``: a valid address, in the file audience, silently.

What gives it away is that the damage is the same for every record. Per chunk, :func:`dump_keys`
histograms the first 16 bytes of the decrypted plaintexts and of their normalized join keys
(:class:`FirstBlocks`, 16 positions x 256 byte values, numpy over the buffers: about 0.1 s of CPU per
million IDs each); :class:`~transforms.key_profiles.KeyProfiles` histograms the profiles' normalized
keys (1 in 8 of a big batch's: :func:`reference_positions`). :class:`CheckIVs` sums them per data
source and fails the run when a position looks XORed:

1. :func:`implausible_positions` (needs no profile): enough bytes at ``j`` are implausible for the
   channel as they are (email: letters, digits, ``. _ + - @``, space; sms: digits, ``+``, space,
   ``- ( ) .``), and undoing some XOR ``d != 0`` makes nearly all of them plausible.
2. :func:`shifted_positions` (against the profiles): with some XOR ``d != 0`` undone, the dump's byte
   distribution at ``j`` shares much more with the profiles' than as it is. This sees a flip that
   keeps letters letters where most addresses share their first letters (``user...`` -> ``tser...``).

With the right IV neither trips (but on a few dozen addresses, several sharing an odd character at
one position: the README's known limit): real addresses' odd bytes (an apostrophe, an accent) are explained by
no single XOR, which would spoil many good bytes, and a dump shares its byte distributions with the
profiles best as it is (tests/test_iv_check.py: realistic addresses, odd ones, phones, the generator's
data; the generator's 1M-line job too, by hand). Bit 7 makes plaintexts invalid UTF-8, and a flip in
the padding of short plaintexts breaks it: both count toward ``max_decrypt_failure_ratio``. What
nothing can see: a flip that maps every byte at a position onto another plausible byte with the same
distribution (bit 0 on uniformly random digits: other valid numbers). Bit 0x20 on a position holding
only letters changes their case, which normalization undoes: the answer is right, nothing trips.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.arrow_utils import string_buffers
from transforms.cbc_kernel import BLOCK
from transforms.config import JobConfig
from transforms.errors import RunFailed
from transforms.outcomes import Metric, count

# Thresholds of garbled_positions (see the module docstring; tests/test_iv_check.py holds the evidence).
MIN_GARBLED = 2  # implausible bytes at a position, at the least, before it can be called garbled
MIN_GARBLED_SHARE = 0.005  # ... and at least this share of the bytes seen there
MAX_RESIDUE = 0.25  # the best other XOR leaves at most this share of them implausible
MIN_REFERENCE = 100  # test 2: keys with a byte at a position, on each side, before comparing
MIN_SHIFTED_OVERLAP = 0.6  # test 2: the dump with an XOR undone shares this much with the profiles...
MIN_OVERLAP_GAIN = 0.3  # ... and this much more than as it is
# A weaker gain is only a suspicion (a partner's audience may differ from the profiles: +44 numbers
# against a French file): the run fails on it only when almost none of the decrypted IDs match a
# profile (transforms.report), as when an IV typo swaps +33 and +44 (a gain of ~0.26).
WEAK_OVERLAP_GAIN = 0.15

_EMAIL = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-@ "
_SMS = b"0123456789+ -()."
PLAUSIBLE = {"email": _EMAIL, "sms": _SMS}


def _implausible_after_xor(allowed: bytes) -> np.ndarray:
    """``M[d, b]``: 1 when byte ``b`` XOR ``d`` is not in ``allowed`` (256 x 256)."""
    ok = np.zeros(256, dtype=bool)
    ok[np.frombuffer(allowed, dtype=np.uint8)] = True
    xor = np.arange(256)[:, None] ^ np.arange(256)[None, :]
    return (~ok[xor]).astype(np.int64)


_IMPLAUSIBLE = {channel: _implausible_after_xor(allowed) for channel, allowed in PLAUSIBLE.items()}


def empty_histogram() -> np.ndarray:
    return np.zeros((BLOCK, 256), dtype=np.int64)


def first_block_histogram(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``H[j, b]``: how many values (string or binary; nulls skipped) have byte ``b`` at position
    ``j < 16``. Numpy over the array's buffers: per position, one gather and one bincount (about
    0.1 s of CPU per million values)."""
    if isinstance(values, pa.ChunkedArray):
        return sum((first_block_histogram(c) for c in values.chunks), empty_histogram())
    histogram = empty_histogram()
    if len(values) == 0:
        return histogram
    if values.type in (pa.large_string(), pa.large_binary()):
        values = values.cast(pa.binary() if values.type == pa.large_binary() else pa.string())
    offsets, data = string_buffers(values)
    starts = offsets[:-1].astype(np.int64) - offsets[0]
    lengths = np.diff(offsets)
    if values.null_count:
        lengths = np.where(values.is_valid().to_numpy(zero_copy_only=False), lengths, 0)
    for j in range(BLOCK):
        rows = np.flatnonzero(lengths > j)
        if not rows.size:
            break
        histogram[j] = np.bincount(data[starts[rows] + j], minlength=256)
    return histogram


# The profile side of test 2 is a distribution of bytes: a batch of REFERENCE_ALL keys or more adds 1
# key in REFERENCE_SHARE to it, picked by the top bits of the key's hash (the same keys every run,
# whatever the extract's order; a histogram of a 10M extract's keys cost ~1.5 s of CPU a run, and
# with the key cache every cached key had to be read for it). A smaller batch adds every key: a small
# extract keeps MIN_REFERENCE keys a position.
REFERENCE_ALL = 1 << 16
REFERENCE_SHARE_BITS = 3  # 1 key in 8


def reference_positions(hashes: np.ndarray) -> np.ndarray:
    """The positions of a profile batch's keys (their 64-bit hashes) whose first blocks go into the
    data source's reference histogram."""
    keep = reference_filter(len(hashes))
    return np.arange(len(hashes)) if keep is None else np.flatnonzero(keep(hashes))


def reference_filter(keys: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """Which of a batch's ``keys`` keys join the reference, by their 64-bit hashes: every one (None)
    in a batch of fewer than REFERENCE_ALL keys, else :func:`sampled_reference`'s."""
    return None if keys < REFERENCE_ALL else sampled_reference


def sampled_reference(hashes: np.ndarray) -> np.ndarray:
    """Whether each key (its 64-bit hash) is one of the 1 in 2**REFERENCE_SHARE_BITS a batch of
    REFERENCE_ALL keys or more adds to the reference."""
    return (hashes >> np.uint64(64 - REFERENCE_SHARE_BITS)) == 0


def implausible_positions(plaintexts: np.ndarray, channel: str) -> list[int]:
    """Test 1, on the raw plaintexts' histogram: positions where enough bytes are implausible for the
    channel as they are, and some XOR ``d != 0`` makes nearly all of them plausible."""
    implausible = plaintexts @ _IMPLAUSIBLE[channel].T  # [j, d]: implausible bytes at j after XOR d
    seen = plaintexts.sum(axis=1)
    as_is = implausible[:, 0]
    best_other = implausible[:, 1:].min(axis=1)
    enough = (as_is >= MIN_GARBLED) & (as_is >= MIN_GARBLED_SHARE * seen)
    explained = best_other <= MAX_RESIDUE * as_is
    return np.flatnonzero(enough & explained).tolist()


_XOR = np.arange(256)[:, None] ^ np.arange(256)[None, :]  # [d, b] -> b ^ d


def _overlap_gains(keys: np.ndarray, reference: np.ndarray):
    """``(position, best overlap with some XOR d != 0 undone, its gain over the overlap as it is)``
    for each position with enough keys on both sides."""
    for j in np.flatnonzero((keys.sum(axis=1) >= MIN_REFERENCE) & (reference.sum(axis=1) >= MIN_REFERENCE)):
        dump, prof = keys[j] / keys[j].sum(), reference[j] / reference[j].sum()
        overlap = np.minimum(dump[_XOR], prof[None, :]).sum(axis=1)  # [d]: shared share with XOR d undone
        best = float(overlap[1:].max())
        yield int(j), best, best - float(overlap[0])


def shifted_positions(keys: np.ndarray, reference: np.ndarray) -> list[int]:
    """Test 2, on the normalized keys' histograms: positions where the dump's byte distribution,
    with some XOR ``d != 0`` undone, is much closer to the profiles' than as it is."""
    return [j for j, best, gain in _overlap_gains(keys, reference)
            if best >= MIN_SHIFTED_OVERLAP and gain >= MIN_OVERLAP_GAIN]


def suspect_position(keys: np.ndarray, reference: np.ndarray | None) -> tuple[int, float] | None:
    """The position where undoing some XOR brings the dump closest to the profiles, when that gains
    at least WEAK_OVERLAP_GAIN (and less than MIN_OVERLAP_GAIN, else test 2 failed the run): a
    suspicion that the run's match rate confirms or not (transforms.report)."""
    if reference is None:
        return None
    found = [(gain, j) for j, best, gain in _overlap_gains(keys, reference)
             if best >= MIN_SHIFTED_OVERLAP and gain >= WEAK_OVERLAP_GAIN]
    return (max(found)[1], max(found)[0]) if found else None


# The other channel's kind of address, its noun, and the channel that reads it: emails decrypted on an
# sms source have letters where phones have digits, which test 1 can read as digits XORed by one byte.
OTHER_CHANNEL = {"sms": ("email", "email addresses", "email"), "email": ("phone", "phone numbers", "sms")}
_NOUN = {"sms": "phone numbers", "email": "email addresses"}


# URI schemes a partner may write before an address ('mailto:ann@example.com'), named when the IDs
# start with one: a fixed list, so that a message never shows a plaintext's bytes.
SCHEMES = ("mailto:", "tel:", "sms:", "smsto:", "callto:")


def uri_scheme(plaintexts: np.ndarray) -> str | None:
    """The scheme of :data:`SCHEMES` (any case) that at least half of the decrypted IDs start with,
    judged on their first-block histogram (every byte of it at its position), or None. Under a wrong
    IV those bytes are XORed with it: a scheme that reads is no wrong IV there."""
    total = int(plaintexts[0].sum())
    for scheme in SCHEMES:
        raw = scheme.encode()
        if total and all(2 * int(plaintexts[j, b] + (plaintexts[j, b ^ 0x20] if chr(b).isalpha() else 0)) >= total
                         for j, b in enumerate(raw)):
            return scheme
    return None


def garbled_positions(plaintexts: np.ndarray, keys: np.ndarray | None, reference: np.ndarray | None,
                      channel: str) -> list[int]:
    """Positions (0-15) of the first block that look XORed by a constant: the IV is off there."""
    found = set(implausible_positions(plaintexts, channel))
    if keys is not None and reference is not None:
        found.update(shifted_positions(keys, reference))
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# In the pipeline: per chunk histograms, summed per data source, checked before publishing
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FirstBlocks:
    """The first-block histograms of a data source's decrypted IDs: the raw plaintexts (test 1) and
    their normalized join keys (test 2, against the profiles' keys); and how many of the IDs are no
    address of the channel but one of the other (:data:`OTHER_CHANNEL`: an email on an sms source)."""

    plaintexts: np.ndarray
    keys: np.ndarray
    other_channel: int = 0

    @classmethod
    def of(cls, plaintexts: pa.Array, keys: pa.Array, other_channel: int = 0) -> "FirstBlocks":
        return cls(first_block_histogram(plaintexts), first_block_histogram(keys), other_channel)

    def __add__(self, other: "FirstBlocks") -> "FirstBlocks":
        return FirstBlocks(self.plaintexts + other.plaintexts, self.keys + other.keys,
                           self.other_channel + other.other_channel)


class SumHistograms(beam.CombineFn):
    """Sums :class:`FirstBlocks` (dump side) or plain histograms (profile side)."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, value):
        return value if acc is None else acc + value

    def merge_accumulators(self, accs):
        merged = None
        for acc in accs:
            if acc is not None:
                merged = acc if merged is None else merged + acc
        return merged

    def extract_output(self, acc):
        return acc


class CheckFirstBlocks(beam.DoFn):
    """``(data_source, FirstBlocks)`` -> fails the run when the first blocks look garbled (wrong IV),
    else one count of the plaintexts checked. ``references``: ``{data_source: histogram}`` of the
    profiles' normalized keys (a side input). Its output joins the run's counts, so the publish step,
    which waits for every count, runs only after this check."""

    def __init__(self, cfg: JobConfig):
        self._cfg = cfg

    def process(self, element, references: dict):
        name, blocks = element
        ds = self._cfg.data_source(name)
        positions = garbled_positions(blocks.plaintexts, blocks.keys, references.get(name), ds.channel)
        scheme = uri_scheme(blocks.plaintexts) if positions else None
        if scheme:
            raise RunFailed(f"data source '{name}': decrypted IDs start with '{scheme}' (a URI scheme before the address, "
                            "which the IV check reads as garbled bytes): ask the partner for bare addresses. Nothing was "
                            "published")
        total = int(blocks.plaintexts[0].sum())
        if positions and 2 * blocks.other_channel >= total:
            kind, other, channel = OTHER_CHANNEL[ds.channel]
            raise RunFailed(f"data source '{name}': {blocks.other_channel:,} of {total:,} decrypted IDs are {other}, not "
                            f"{_NOUN[ds.channel]} (channel: {ds.channel}), which the IV check read as garbled bytes: "
                            f"channel: {channel} and match_on: {kind}? Nothing was published")
        if positions and not ds.encryption.iv_confirmed:
            raise RunFailed(
                f"data source '{name}': decrypted IDs look garbled in their first 16 bytes (byte positions "
                f"{', '.join(map(str, positions))}): wrong IV? (Where the partner confirmed the IV and its IDs are "
                "of another country or kind than the profiles': encryption.iv_confirmed: true.) Nothing was published"
            )
        yield count(Metric.FIRST_BLOCKS_CHECKED, int(blocks.plaintexts[0].sum()), name)
        suspect = suspect_position(blocks.keys, references.get(name))
        if suspect is not None:
            position, gain = suspect
            yield count(Metric.IV_SUSPECT, round(gain * 1000), name, detail=str(position))


class CheckIVs(beam.PTransform):
    """``(dump FirstBlocks per chunk, profile key histograms per batch)`` -> the counts of
    :class:`CheckFirstBlocks`, after summing each side per data source."""

    def __init__(self, cfg: JobConfig):
        super().__init__()
        self._cfg = cfg

    def expand(self, sides):
        dump_side, profile_side = sides
        references = profile_side | "SumProfileSide" >> beam.CombinePerKey(SumHistograms())
        return (
            dump_side
            | "SumDumpSide" >> beam.CombinePerKey(SumHistograms())
            | "Check" >> beam.ParDo(CheckFirstBlocks(self._cfg), references=beam.pvalue.AsDict(references))
        )
