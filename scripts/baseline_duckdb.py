"""The benchmark's baseline: the same memberships as `audience-sync import`, computed with DuckDB.

    python scripts/baseline_duckdb.py --data DIR --out memberships.parquet
    python scripts/baseline_duckdb.py --data NIGHT2 --previous night1.parquet --out night2.parquet  # iter dumps

Reads the generator's job (DIR/job.yaml layout: profiles.parquet, or profiles/part-*.parquet, and
segments/<source>/*), applies the same rules in SQL (38-digit visitor IDs; adobe/hex hashed emails;
uid2/base64 hashed phones; plain CRM ids; AES-CBC encrypted emails decrypted with the project's
vectorized decryptor, since SQL has no AES) and writes the distinct (data_source, segment_id,
profile_id) memberships; with ``--previous`` (the dumps are a night's ``iter`` changes), the previous
night's memberships of profiles still in the extract, less the lines' removed segments, plus their
segments (an addition wins over a removal of the same night). It is a fair single-process reference for
one job shape, not a general implementation: it knows the five data sources the generator makes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transforms.crypto import CbcDecryptor  # noqa: E402
from transforms.secrets import load_secret  # noqa: E402

VALID_LINES = """
    SELECT split_part(line, ' ', 1) AS id, split_part(line, ' ', 2) AS segs, split_part(line, ' ', 3) AS rems
    FROM read_csv({files}, columns={{'line': 'VARCHAR'}}, header=false, delim='\t', quote='', escape='',
                  auto_detect=false)
    WHERE len(string_split(line, ' ')) IN (2, 3)
      AND regexp_full_match(split_part(line, ' ', 2), '[0-9]+(,[0-9]+)*')
"""


def lines_sql(data: Path, source: str) -> str:
    files = sorted(str(p) for p in (data / "segments" / source).glob("*.sync*"))
    return VALID_LINES.format(files="[" + ",".join(f"'{f}'" for f in files) + "]")


def memberships(data: Path, previous: Path | None = None) -> pa.Table:
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    extract = data / "profiles.parquet" if (data / "profiles.parquet").exists() else data / "profiles" / "part-*.parquet"
    con.execute(f"CREATE VIEW p AS SELECT * FROM read_parquet('{extract}')")
    key = load_secret(f"file:{data / 'keys' / 'demo-only-aes256.key'}", "hex")
    iv = load_secret(f"file:{data / 'keys' / 'demo-only-iv.hex'}", "hex", (16,))
    enc = _arrow(con.sql(lines_sql(data, "web-encrypted-emails")))
    plain, _ = CbcDecryptor(key, iv).decrypt(enc["id"])
    decrypted = pa.table({"address": plain, "segs": enc["segs"], "rems": enc["rems"]})  # noqa: F841 - read by DuckDB below
    email_ok = "regexp_full_match(x, '[^@\\s]+@[^@\\s]+')"
    query = f"""
    WITH
    vis AS (
      SELECT 'visitors' AS ds, l.segs, l.rems, p.profile_id
      FROM ({lines_sql(data, 'visitors')}) l
      JOIN (SELECT profile_id, unnest(visitor_ids) AS vid FROM p) p ON p.vid = l.id
      WHERE regexp_full_match(l.id, '[0-9]{{38}}')),
    hashed AS (
      SELECT 'crm-hashed-emails' AS ds, l.segs, l.rems, p.profile_id
      FROM ({lines_sql(data, 'crm-hashed-emails')}) l
      JOIN (SELECT profile_id, sha256(x) AS h FROM (SELECT profile_id, lower(trim(email)) AS x FROM p)
            WHERE {email_ok}) p ON p.h = lower(l.id)),
    phones AS (
      SELECT 'uid2-phones' AS ds, l.segs, l.rems, p.profile_id
      FROM ({lines_sql(data, 'uid2-phones')}) l
      JOIN (SELECT profile_id, to_base64(unhex(sha256('+' || regexp_replace(mobile, '[^0-9]', '', 'g')))) AS h
            FROM p WHERE mobile IS NOT NULL) p ON p.h = l.id),
    crm AS (
      SELECT 'crm-plain' AS ds, l.segs, l.rems, p.profile_id
      FROM ({lines_sql(data, 'crm-plain')}) l JOIN p ON p.crm_id = l.id
      WHERE l.id NOT LIKE '%:%'),
    enc AS (
      SELECT 'web-encrypted-emails' AS ds, d.segs, d.rems, p.profile_id
      FROM (SELECT lower(trim(address)) AS a, segs, rems FROM decrypted WHERE address IS NOT NULL) d
      JOIN (SELECT profile_id, x FROM (SELECT profile_id, lower(trim(email)) AS x FROM p) WHERE {email_ok}) p
        ON p.x = d.a),
    hits AS (SELECT * FROM vis UNION ALL SELECT * FROM hashed UNION ALL SELECT * FROM phones
             UNION ALL SELECT * FROM crm UNION ALL SELECT * FROM enc),
    added AS (SELECT DISTINCT ds AS data_source, unnest(string_split(segs, ',')) AS segment_id, profile_id FROM hits)
    """
    if previous is None:
        return _arrow(con.sql(query + "SELECT * FROM added"))
    return _arrow(con.sql(query + f""",
    removed AS (SELECT DISTINCT ds, unnest(string_split(rems, ',')), profile_id FROM hits WHERE rems <> '')
    SELECT data_source, segment_id, profile_id FROM read_parquet('{previous}')
    WHERE profile_id IN (SELECT profile_id FROM p)
    EXCEPT SELECT * FROM removed
    UNION SELECT * FROM added
    """))


def _arrow(cursor) -> pa.Table:
    fetch = getattr(cursor, "to_arrow_table", None) or cursor.fetch_arrow_table  # DuckDB 2.x / 1.x
    return fetch()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--previous", type=Path, help="the previous night's memberships (the dumps are iter)")
    args = parser.parse_args(argv)
    table = memberships(args.data, args.previous)
    pq.write_table(table, args.out)
    print(f"memberships: {table.num_rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
