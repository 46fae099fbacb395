"""Encrypt the IDs of a segment dump, to make test dumps for encrypted data sources.

    python scripts/encrypt_dump.py IN.sync OUT.sync[.gz] --key env:NAME --iv file:PATH      # AES-CBC
    python scripts/encrypt_dump.py IN.sync OUT.sync[.gz] --keyring file:ring.json --key-id 2  # AES-GCM

IN's first field (space separated) is the plaintext address; it is replaced by the base64 token,
the rest of each line is kept. Keys are read from references only (env:NAME or file:PATH), like the
pipeline's config; nothing is printed but counts.
"""
from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transforms.encrypt import encrypt_cbc, encrypt_gcm  # noqa: E402
from transforms.secrets import load_keyring, load_secret  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--key", help="AES-CBC key reference (env:NAME or file:PATH)")
    parser.add_argument("--key-encoding", choices=["hex", "base64"])
    parser.add_argument("--iv", help="AES-CBC IV reference")
    parser.add_argument("--iv-encoding", choices=["hex", "base64"])
    parser.add_argument("--keyring", help="AES-GCM key ring reference")
    parser.add_argument("--key-id", type=int, help="AES-GCM: the ring key to encrypt with")
    args = parser.parse_args(argv)

    lines = args.source.read_text(encoding="utf-8").splitlines()
    heads, tails = zip(*(line.split(" ", 1) if " " in line else (line, "") for line in lines)) if lines else ((), ())
    if args.keyring:
        key = {k.id: k for k in load_keyring(args.keyring)}[args.key_id]
        tokens = encrypt_gcm(list(heads), key)
    else:
        if not (args.key and args.iv):
            parser.error("AES-CBC needs --key and --iv (or use --keyring/--key-id for AES-GCM)")
        tokens = encrypt_cbc(list(heads), load_secret(args.key, args.key_encoding), load_secret(args.iv, args.iv_encoding, (16,)))
    body = "".join(f"{t} {rest}\n" for t, rest in zip(tokens, tails)).encode()
    args.target.write_bytes(gzip.compress(body, mtime=0) if args.target.suffix == ".gz" else body)
    print(f"encrypted {len(tokens)} lines -> {args.target.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
