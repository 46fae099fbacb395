"""One extract written in the forms upstream jobs write it (CSV, Parquet, JSONL; ids and keys as text,
integers, floats, decimals, dictionaries; binary emails; visitor IDs as lists or joined text) gives the
canonical extract's answer, or fails in one line naming the file, the line and the column."""
from __future__ import annotations

import csv
import io

import pytest

from conftest import assert_failed_cleanly, run_import_cli
from transforms.config_load import parse_config
from transforms.errors import InputError
from transforms.profiles import read_profiles

CRM = {"name": "crm", "dpid": 2, "segments": "seg/crm/*.sync", "id_type": "declared", "declared": "plain",
       "match_on": "crm_id"}


def crm_config(path, **profiles):
    return parse_config({"profiles": {"path": str(path), "email": None, "phone": None, "visitor_ids": None, **profiles},
                         "data_sources": [CRM]})


FLOAT_TEXT = {"excel": "1.23457E+11", "excel, no decimals": "1E+11", "pandas": "123456789012.0",
              "python": "1.23456789012e+16", "java": "1.23456789012E11"}


@pytest.mark.parametrize("written", sorted(FLOAT_TEXT))
@pytest.mark.parametrize("column", ["profile_id", "crm_id"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_ids_and_keys_written_as_float_text_fail_naming_the_line_and_column(tmp_path, fmt, column, written):
    """A number column saved as text by a spreadsheet (`1.23457E+11`: Excel keeps 6 digits), pandas
    (`123456789012.0`: an integer column with gaps is a float column) or a float's own text: read as
    written, 12 profiles of 12-digit ids became one, `1.23457E+11` (exit 0), and a CRM key so written
    matched nothing. The same extract in Parquet or JSON numbers reads as the integers (or fails at 2^53)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"profile_id": "P1", "crm_id": "C1"}, {"profile_id": "P2", "crm_id": "C2"},
            {"profile_id": "P3", "crm_id": "C3"}]
    rows[1][column] = FLOAT_TEXT[written]
    path = tmp_path / f"p.{fmt}"
    if fmt == "csv":
        path.write_text("profile_id,crm_id\n" + "".join(f"{r['profile_id']},{r['crm_id']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), crm_config(path)))
    where = f"{path}: row 2: " if fmt == "parquet" else f"{path}:{3 if fmt == 'csv' else 2}: "
    assert str(info.value) == where + (
        f"column '{column}': 1 value(s) written as a floating-point number's text (1.0, 1.2E+11: a number column "
        "saved by a spreadsheet or pandas; an exponent drops digits): write the column's integers as text")
    assert FLOAT_TEXT[written] not in str(info.value)


def test_ids_and_keys_that_only_look_like_numbers_are_read_as_written(tmp_path):
    """Hexadecimal ids (`1e3456`, `12e4`: an exponent without a sign or a point), decimals (`1.5`),
    versions (`1.0.3`), signed numbers and addresses are no float text."""
    ids = ["1e3456", "12e4", "1.5", "1.0.3", "-7", "+33612345678", "a.b@example.com", "0.0x", "E+11", "1.e"]
    path = tmp_path / "p.csv"
    path.write_text("profile_id,crm_id\n" + "".join(f"{i},{i}\n" for i in ids))
    (table,) = list(read_profiles(str(path), crm_config(path)))
    assert table["profile_id"].to_pylist() == ids
    assert table["k:crm_id"].to_pylist() == ids


def extract_csv(ids: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["profile_id", "crm_id"])
    writer.writerows([i, f"C{n}"] for n, i in enumerate(ids))
    return buf.getvalue()


def test_a_csv_extract_saved_by_a_spreadsheet_fails_the_import_where_its_profiles_were_merged(tmp_path):
    """12 profiles of 12-digit ids, the CSV opened and saved in a spreadsheet: every id became
    `1.23457E+11`, the import read 12 rows of one profile and published its memberships under that
    id, exit 0 (CLI). Now it fails in one line naming the file, the first such line and the column."""
    ids = [str(123456789012 + n) for n in range(12)]
    (tmp_path / "seg" / "crm").mkdir(parents=True)
    (tmp_path / "seg" / "crm" / "d.sync").write_text("".join(f"C{n} 200\n" for n in range(12)))
    (tmp_path / "p.csv").write_text(extract_csv(["%.5E" % int(i) for i in ids]))
    job = tmp_path / "job.yaml"
    job.write_text(f"profiles: {{path: p.csv, id: profile_id, email: null, phone: null, visitor_ids: null}}\n"
                   f"data_sources: [{CRM}]\n".replace("'", ""))
    out = tmp_path / "out"
    last = assert_failed_cleanly(run_import_cli(job, out), out, f"{tmp_path / 'p.csv'}:2: column 'profile_id'",
                                 "floating-point number's text")
    assert "1.23457" not in last

