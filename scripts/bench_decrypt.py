#!/usr/bin/env python
"""Benchmark: AES-CBC declared-ID decryption, per-record reference vs. vectorized batch.

    python scripts/bench_decrypt.py [--records 1000000] [--key-bits 256] [--seed 0]

Generates random e-mail addresses (~30 bytes), encrypts them with a random key and IV, then times
``decrypt_cbc_per_record`` (the reference, ``tests/cbc_reference.py``) and ``decrypt_cbc_batch`` on the
same Arrow array in this process, checks that both return identical plaintexts and reasons (and the
original addresses), and prints the records/s of each and the ratio batch / per-record.
Single-threaded: rates are per core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pyarrow as pa

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "tests"))  # the per-record reference is a test oracle, not shipped code

from cbc_reference import decrypt_cbc_per_record  # noqa: E402
from transforms.crypto import decrypt_cbc_batch  # noqa: E402
from transforms.encrypt import encrypt_cbc  # noqa: E402

_LOCAL = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789._-", dtype=np.uint8)
_DOMAINS = [b"gmail.com", b"yahoo.fr", b"example.org", b"outlook.com", b"company.co.uk", b"mail.de"]


def random_emails(n: int, rng: np.random.Generator) -> list[str]:
    """n random addresses, local part 10..28 characters: about 30 bytes on average."""
    local_len = rng.integers(10, 29, size=n)
    blob = _LOCAL[rng.integers(0, len(_LOCAL), size=int(local_len.sum()))].tobytes().decode("ascii")
    domains = [d.decode("ascii") for d in _DOMAINS]
    pick = rng.integers(0, len(domains), size=n).tolist()
    out, pos = [], 0
    for length, d in zip(local_len.tolist(), pick):
        out.append(f"{blob[pos:pos + length]}@{domains[d]}")
        pos += length
    return out


def _time(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def run(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--key-bits", type=int, choices=(128, 192, 256), default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    key, iv = os.urandom(args.key_bits // 8), os.urandom(16)
    emails = random_emails(args.records, rng)
    t0 = time.perf_counter()
    tokens = pa.array(encrypt_cbc(emails, key, iv), type=pa.string())
    print(
        f"generated {args.records:,} records (mean e-mail {np.mean([len(e) for e in emails]):.1f} B, "
        f"mean token {tokens.nbytes / max(args.records, 1):.1f} B incl. offsets), "
        f"AES-{args.key_bits}, encrypted in {time.perf_counter() - t0:.2f} s"
    )

    (ref_plain, ref_reason), t_ref = _time(decrypt_cbc_per_record, tokens, key, iv)
    (bat_plain, bat_reason), t_bat = _time(decrypt_cbc_batch, tokens, key, iv)

    assert bat_plain.equals(ref_plain), "plaintexts differ between batch and per-record"
    assert bat_reason.equals(ref_reason), "reasons differ between batch and per-record"
    assert ref_plain.to_pylist() == emails, "round trip failed"
    assert ref_reason.null_count == len(ref_reason), "unexpected failures"

    r_ref, r_bat = args.records / t_ref, args.records / t_bat
    print(f"per-record: {t_ref:8.3f} s  {r_ref / 1e6:7.3f} M records/s")
    print(f"batch:      {t_bat:8.3f} s  {r_bat / 1e6:7.3f} M records/s")
    print(f"ratio (batch / per-record): {r_bat / r_ref:.1f}x   outputs identical: yes")
    return 0


if __name__ == "__main__":
    sys.exit(run())
