"""Profile extracts as operators produce them: saved by Excel (a UTF-8 byte order mark), split into
several files of which one lacks a column, or exported with a header and no row."""
from __future__ import annotations

import codecs
import csv

import pyarrow.parquet as pq
import pytest

from conftest import cli_in_process
from pipelines import import_audience
from transforms.config import ConfigError
from transforms.config_load import load_config
from transforms.errors import InputError
from transforms.preflight import check_inputs
from transforms.extract_header import read_schema_names
from transforms.profiles import read_profiles


# One plain declared-ID data source matching on crm_id (the dumps are never read here).
CRM_SOURCES = [{"name": "c", "dpid": 1, "segments": "s", "id_type": "declared", "declared": "plain", "match_on": "crm_id"}]


def demo_profiles_as(demo_copy, fmt: str, bom: bool, files: int = 1) -> list:
    """The demo's profiles written as CSV or JSONL (``files`` pieces), optionally with a BOM; the
    config pointed at them."""
    table = pq.read_table(demo_copy / "profiles.parquet")
    rows = table.to_pylist()
    folder = demo_copy / "extract"
    folder.mkdir()
    paths = []
    for i in range(files):
        piece = rows[i::files]
        path = folder / f"profiles-{i}.{fmt}"
        if fmt == "csv":
            with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=table.column_names)
                writer.writeheader()
                for r in piece:
                    writer.writerow({**r, "visitor_ids": ";".join(r["visitor_ids"] or [])})
        else:
            import json

            text = "".join(json.dumps(r) + "\n" for r in piece)
            path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode())
        paths.append(path)
    job = demo_copy / "job.yaml"
    job.write_text(job.read_text().replace("path: profiles.parquet", f"path: extract/*.{fmt}"))
    return paths


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_extract_with_a_byte_order_mark_reads_normally(demo_copy, tmp_path, fmt):
    paths = demo_profiles_as(demo_copy, fmt, bom=True)
    assert read_schema_names(str(paths[0]), fmt)[0] == "profile_id"
    check_inputs(load_config(str(demo_copy / "job.yaml")))  # used to say "column 'profile_id' is not in the extract"
    report = import_audience.run(["--config", str(demo_copy / "job.yaml"), "--output", str(tmp_path / "o")])
    assert report["profiles_read"] == 300
    assert report["data_sources"]["crm-plain"]["reconciled"] == 136


def test_every_file_of_a_profile_glob_is_checked_in_preflight(demo_copy, tmp_path):
    paths = demo_profiles_as(demo_copy, "csv", bom=False, files=3)
    lines = paths[1].read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("crm_id")
    paths[1].write_text("".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop) + "\n" for line in lines))
    with pytest.raises(ConfigError) as info:
        check_inputs(load_config(str(demo_copy / "job.yaml")))
    assert str(info.value) == f"data_sources[3].match_on: column 'crm_id' is not in the extract {paths[1]}"
    result = cli_in_process("import", "--config", demo_copy / "job.yaml", "--output", tmp_path / "o")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"column 'crm_id' is not in the extract {paths[1]}" in result.stderr


def test_a_file_lacking_a_column_at_run_time_fails_naming_file_and_column(demo_copy):
    """A file that arrives after the preflight check: one line naming it, not a KeyError traceback."""
    paths = demo_profiles_as(demo_copy, "csv", bom=False)
    paths[0].write_text("profile_id,email\nP1,a@example.com\n")
    with pytest.raises(InputError) as info:
        list(read_profiles(str(paths[0]), load_config(str(demo_copy / "job.yaml"))))
    assert str(info.value).startswith(f"{paths[0]}: no column 'mobile'") or "no column" in str(info.value)
    assert str(paths[0]) in str(info.value) and "a@example.com" not in str(info.value)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_missing_column_is_named_for_every_format(tmp_path, fmt):
    import pyarrow as pa

    path = tmp_path / f"p.{fmt}"
    table = pa.table({"profile_id": ["P1"], "email": ["a@example.com"]})
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        path.write_text("profile_id,email\nP1,a@example.com\n")
    else:
        path.write_text('{"profile_id": "P1", "email": "a@example.com"}\n')
    from transforms.config_load import parse_config

    # segments absolute, as a loaded config's are: a bare "s" made the control-file listing's folder ''
    # and its glob "/*.info" walked the whole file system (20 s here)
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None},
                        "data_sources": [{**CRM_SOURCES[0], "segments": str(tmp_path / "s")}]})
    if fmt == "jsonl":  # a record may omit a key (JSON writers omit nulls): nulls; in no record, refused at start-up
        assert [r["k:crm_id"] for t in read_profiles(str(path), cfg) for r in t.to_pylist()] == [None]
        with pytest.raises(ConfigError, match=rf"data_sources\[0\].match_on: column 'crm_id' is in no record of the extract '{path}'"):
            check_inputs(cfg)
        return
    with pytest.raises(InputError, match=rf"^{path}: no column 'crm_id' \(data_sources\[0\].match_on\)"):
        list(read_profiles(str(path), cfg))


def test_a_csv_row_with_an_extra_field_fails_cleanly_with_the_diagnosis_on(demo_copy, tmp_path):
    """The diagnosis lists the extract's columns from its first block: that read met the bad row
    first and printed Arrow's message, the row's email and phone in it, under a traceback."""
    from conftest import assert_failed_cleanly, run_import_cli

    (path,) = demo_profiles_as(demo_copy, "csv", bom=False)
    lines = path.read_text().split("\n")
    row = lines[100]
    lines[100] += ",EXTRA"
    path.write_text("\n".join(lines))
    out = tmp_path / "o"
    result = run_import_cli(demo_copy / "job.yaml", out)
    assert_failed_cleanly(result, out, path.name, "101")
    for value in row.split(","):
        if len(value.strip()) > 3:
            assert value.strip() not in result.stderr, "a profile's value in the error output"


@pytest.mark.parametrize("joined", ["plain", "gzip", "second with a byte order mark"])
def test_two_csv_extracts_joined_with_cat_fail_naming_the_line_of_the_second_header(demo_copy, tmp_path, joined):
    """`cat a.csv b.csv > all.csv` (or two .csv.gz, a multi-member gzip): b's header row was read as a
    profile whose id is the id column's name, `profiles read: 301` for 300, exit 0."""
    import gzip

    from conftest import assert_failed_cleanly, run_import_cli

    first, second = demo_profiles_as(demo_copy, "csv", bom=False, files=2)
    head, tail = first.read_bytes(), second.read_bytes()
    if joined == "second with a byte order mark":  # Excel's save: the mark at the start of b's header
        tail = codecs.BOM_UTF8 + tail
    name = "all.csv.gz" if joined == "gzip" else "all.csv"
    whole = demo_copy / "extract" / name
    whole.write_bytes(gzip.compress(head) + gzip.compress(tail) if joined == "gzip" else head + tail)
    first.unlink()
    second.unlink()
    job = demo_copy / "job.yaml"
    job.write_text(job.read_text().replace("path: extract/*.csv", f"path: extract/{name}"))
    out = tmp_path / "o"
    line = head.count(b"\n") + 1  # b's header: the line after a's last
    last = assert_failed_cleanly(run_import_cli(job, out), out, f"{whole}:{line}: repeats the header")
    assert "two files joined" in last and "@" not in last


def test_a_profile_with_one_value_equal_to_its_column_name_is_read(tmp_path):
    """Only a row whose every read cell is its column's name repeats the header."""
    from transforms.config_load import parse_config

    path = tmp_path / "p.csv"
    path.write_text("profile_id,crm_id,note\nP1,crm_id,x\nprofile_id,C2,y\n")
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None, "email": None, "phone": None},
                        "data_sources": CRM_SOURCES})
    assert [t["profile_id"].to_pylist() for t in read_profiles(str(path), cfg)] == [["P1", "profile_id"]]


@pytest.mark.parametrize("damage", ["empty", "truncated", "pages overwritten"])
def test_a_damaged_parquet_extract_fails_naming_the_file(demo_copy, damage):
    """A Parquet extract damaged after the preflight check (a copy cut short, a disk error in its
    pages): one error naming the file, never a partial read or Arrow's own message."""
    path = demo_copy / "profiles.parquet"
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                      "pages overwritten": data[:1000] + bytes(b ^ 0xFF for b in data[1000:3000]) + data[3000:]}[damage])
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), load_config(str(demo_copy / "job.yaml"))))
    assert str(info.value).startswith(f"{path}: cannot read the parquet extract (")


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_parquet_extract_is_named_where_the_import_keys_profiles(demo_copy, damage):
    """The import's keying lists the extract's text columns first, for the mismatch diagnosis (on by
    default): there a Parquet file damaged or arriving after the preflight check (an upload in
    progress) failed the run 'ArrowInvalid [while running ...KeyProfiles]', naming no file."""
    from test_dofns import run_dofn
    from transforms.key_profiles import KeyProfiles

    cfg = load_config(str(demo_copy / "job.yaml"))
    assert any(cfg.sample_size(ds) for ds in cfg.data_sources)  # the diagnosis is on
    path = demo_copy / "profiles.parquet"
    data = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        run_dofn(KeyProfiles(cfg), (str(path), ({},)))
    assert str(info.value).startswith(f"{path}: ")
    assert "empty file" in str(info.value) if damage == "empty" else "cannot read the parquet extract" in str(info.value)


@pytest.mark.parametrize("ids, missing", [(["P1", None, "P3"], 1), (["P1", "", "P3"], 1), ([None, "", "P3", ""], 3),
                                          ([None, None], 2), (["", ""], 2), (["P1", "P2"], 0)])
def test_profiles_without_an_id_fail_the_extract_with_their_count(tmp_path, ids, missing):
    """A profile without an id (null or empty) could never be an audience member: the file fails,
    counting them (not naming them: the other columns are PII)."""
    import pyarrow as pa

    from transforms.config_load import parse_config

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"profile_id": pa.array(ids, pa.string()), "crm_id": [f"c{i}" for i in range(len(ids))]}), path)
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None},
                        "data_sources": CRM_SOURCES})
    if not missing:
        assert sum(t.num_rows for t in read_profiles(str(path), cfg)) == len(ids)
        return
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), cfg))
    first = next(n for n, i in enumerate(ids, start=1) if not i)
    assert str(info.value) == f"{path}: row {first}: {missing} profile(s) have an empty 'profile_id'"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_profile_without_an_id_is_named_by_its_line_or_row(tmp_path, fmt):
    """One empty id in a large extract failed it '1 profile(s) have an empty 'profile_id'', naming
    the file only: the operator had to search millions of rows for it. The first is named (CSV,
    JSONL: the file's line, its header and blank lines counted; Parquet: the row), in any batch."""
    import json

    import pyarrow as pa

    from transforms.config_load import parse_config

    ids = ["P1", "P2", "P3", "P4", "", "P6", None]  # the 5th record (a later batch) is the first without
    path = tmp_path / f"p.{fmt}"
    if fmt == "csv":  # a quoted field over two lines and a blank line before it: lines are not records
        path.write_text('profile_id,crm_id\nP1,"C\n1"\nP2,C2\n\nP3,C3\nP4,C4\n,C5\nP6,C6\n,C7\n')
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps({"profile_id": i, "crm_id": f"C{n}"}) for n, i in enumerate(ids)) + "\n")
    else:
        pq.write_table(pa.table({"profile_id": pa.array(ids, pa.string()), "crm_id": [f"C{n}" for n in range(7)]}), path)
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None, "email": None, "phone": None},
                        "data_sources": CRM_SOURCES})
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), cfg, batch_rows=2))
    where = {"csv": f"{path}:8: ", "jsonl": f"{path}:5: ", "parquet": f"{path}: row 5: "}[fmt]
    assert str(info.value).startswith(where + "1 profile(s) have an empty 'profile_id'"), str(info.value)

def test_a_csv_id_reading_na_or_null_is_said_to_be_empty_too(tmp_path):
    """Arrow reads a CSV cell 'NA' or 'NULL' as missing: a profile whose id was 'NA' failed the
    extract with '1 profile(s) have an empty 'profile_id'', which its cell is not."""
    from transforms.config_load import parse_config

    path = tmp_path / "p.csv"
    path.write_text("profile_id,crm_id\nNA,C1\np2,C2\n")
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None, "email": None, "phone": None},
                        "data_sources": CRM_SOURCES})
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), cfg))
    assert str(info.value) == (f"{path}:2: 1 profile(s) have an empty 'profile_id' (a CSV cell reading NA, N/A, NULL, "
                               "null, nan or NaN is empty too, as Arrow reads text)")


def test_ids_stored_as_floats_with_gaps_count_nan_as_missing(tmp_path):
    """What pandas writes for an integer id column with gaps: NaN read as the id "nan" made one
    profile of every row without an id."""
    import pyarrow as pa

    from transforms.config_load import parse_config

    path = tmp_path / "p.parquet"
    ids = pa.array([1.0, float("nan"), 3.0, float("nan")])
    pq.write_table(pa.table({"profile_id": ids, "crm_id": ["a", "b", "c", "d"]}), path)
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None},
                        "data_sources": CRM_SOURCES})
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), cfg))
    assert str(info.value) == f"{path}: row 2: 2 profile(s) have an empty 'profile_id'"



def test_ids_stored_as_floats_read_as_the_integers_they_hold(tmp_path):
    """Arrow writes a double of 1e10 or more as exponent text: a 12-digit profile_id stored as a float
    (what pandas writes for an integer column with gaps) was published as "1.23456789012e+11", a
    phone number as "3.3612345678e+10" (invalid_phone: not a key), a CRM id "1.2345678e+10": ids and
    keys no dump has, no error."""
    import pyarrow as pa

    from transforms.config_load import parse_config

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"profile_id": [123456789012.0, 2.0, 9007199254740991.0], "crm_id": [12345678000.0, 1.5, -0.0],
                             "mobile": [33612345678.0, None, 447340760837.0]}), path)
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None, "email": None},
                        "data_sources": [{"name": "c", "dpid": 1, "segments": "s", "id_type": "declared",
                                          "declared": "plain", "match_on": "crm_id"},
                                         {"name": "m", "dpid": 2, "segments": "t", "id_type": "declared",
                                          "declared": "plain", "match_on": "phone"}]})
    (table,) = list(read_profiles(str(path), cfg))
    assert table["profile_id"].to_pylist() == ["123456789012", "2", "9007199254740991"]
    assert table["k:crm_id"].to_pylist() == ["12345678000", "1.5", "0"]
    assert table["k:mobile"].to_pylist() == ["33612345678", None, "447340760837"]


def test_ids_stored_as_decimals_with_a_scale_read_as_the_integers_they_hold(tmp_path):
    """A database's NUMBER(38,10) (Spark's decimal(38,10), pandas' Decimal objects) holding an integer
    id was read as "123456789012.0000000000", an id no dump has, no error: the float rule (7e798e3)
    did not cover decimals. Found in review of today's diff."""
    from decimal import Decimal

    import pyarrow as pa

    from transforms.config_load import parse_config

    path = tmp_path / "p.parquet"
    ids = [Decimal("123456789012"), Decimal("-7"), Decimal("2.5")]
    pq.write_table(pa.table({"profile_id": pa.array(ids, pa.decimal128(38, 10)),
                             "crm_id": pa.array([Decimal("12345678000"), None, Decimal("1")], pa.decimal128(20, 2))}), path)
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None, "email": None, "phone": None},
                        "data_sources": CRM_SOURCES})
    (table,) = list(read_profiles(str(path), cfg))
    assert table["profile_id"].to_pylist() == ["123456789012", "-7", "2.5000000000"]
    assert table["k:crm_id"].to_pylist() == ["12345678000", None, "1"]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_ids_stored_as_floats_of_2_to_the_53_or_more_fail_naming_the_column(tmp_path, fmt):
    """A double holds integers exactly below 2^53 only: a 17-digit profile_id stored as a float lost
    its last digits, and a 20-digit CRM id written as a JSON number (beyond int64, Arrow reads a
    double) too; they were read as "1.2345678901234568e+16", "1.2345678901234567e+19", no error."""
    import pyarrow as pa

    from transforms.config_load import parse_config

    path = tmp_path / f"p.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.table({"profile_id": [12345678901234567.0, 2.0], "crm_id": ["a", "b"]}), path)
        column = "profile_id"
    else:
        path.write_text('{"profile_id": "P1", "crm_id": 12345678901234567890}\n{"profile_id": "P2", "crm_id": 17}\n')
        column = "crm_id"
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None},
                        "data_sources": CRM_SOURCES})
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), cfg))
    assert str(info.value) == (f"{path}: column '{column}': 1 value(s) stored as floating-point numbers of 2^53 or more, "
                               "whose last digits are lost: write the column as text")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_needed_column_twice_in_the_header_fails_naming_it(demo_copy, fmt):
    """An empty 'email' column before the real one: Arrow reads the first, and a source matched
    nothing. Which one is meant cannot be guessed."""
    import pyarrow as pa

    table = pq.read_table(demo_copy / "profiles.parquet")
    doubled = pa.Table.from_arrays([pa.nulls(table.num_rows, pa.string()), *table.columns],
                                   names=["email", *table.column_names])
    if fmt == "csv":
        (path,) = demo_profiles_as(demo_copy, "csv", bom=False)
        lines = path.read_text().split("\n")
        path.write_text("\n".join(["email," + lines[0], *("," + line if line else line for line in lines[1:])]))
    else:
        path = demo_copy / "profiles.parquet"
        pq.write_table(doubled, path)
    with pytest.raises(ConfigError) as info:
        check_inputs(load_config(str(demo_copy / "job.yaml")))
    assert "column 'email' appears 2 times" in str(info.value)
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), load_config(str(demo_copy / "job.yaml"))))
    assert "column 'email' appears 2 times" in str(info.value)


def test_a_csv_header_name_with_a_trailing_space_is_named_before_the_run(demo_copy):
    """The start-up check stripped header names and passed; the reader did not, and failed with
    Arrow's KeyError under a traceback."""
    (path,) = demo_profiles_as(demo_copy, "csv", bom=False)
    text = path.read_text()
    path.write_text(text.replace("email,", "email ,", 1))
    with pytest.raises(ConfigError) as info:
        check_inputs(load_config(str(demo_copy / "job.yaml")))
    assert "column 'email' is not in the extract" in str(info.value) and "'email '" in str(info.value)
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), load_config(str(demo_copy / "job.yaml"))))
    assert "no column 'email'" in str(info.value)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_extract_that_is_not_utf8_fails_naming_the_file_and_rows(tmp_path, fmt):
    """Arrow's JSON and Parquet readers do not check UTF-8 (its CSV reader does): a Latin-1 email
    failed the run inside the keying, under a traceback."""
    import pyarrow as pa

    from transforms.config_load import parse_config

    path = tmp_path / f"p.{fmt}"
    if fmt == "jsonl":
        path.write_bytes(b'{"profile_id": "P1", "crm_id": "c1"}\n{"profile_id": "P2", "crm_id": "R\xe9mi"}\n')
    else:
        crm_ids = pa.array([b"c1", b"R\xe9mi"], pa.binary())
        pq.write_table(pa.table({"profile_id": ["P1", "P2"], "crm_id": crm_ids}), path)
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None},
                        "data_sources": CRM_SOURCES})
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), cfg))
    message = str(info.value)
    assert message.startswith(f"{path}: not UTF-8 text in rows 1-2") and "mi" not in message.split(":", 1)[1]


def test_an_unused_binary_column_does_not_fail_the_import_with_the_diagnosis_on(demo_copy, tmp_path):
    """A Parquet extract with a binary column no data source uses (a thumbnail's bytes): the
    diagnosis' screen carried it as text and failed the whole import, "not UTF-8 text (Latin-1?)",
    even with every line matching. The screen leaves it out; a job that needs it still fails naming
    the file."""
    import pyarrow as pa

    from transforms.diagnosis_forms import screen_columns

    path = demo_copy / "profiles.parquet"
    table = pq.read_table(path)
    thumbs = pa.array([bytes([0xFF, i % 256, 0xFE]) for i in range(table.num_rows)], pa.binary())
    pq.write_table(table.append_column("thumbnail", thumbs), path)
    report = import_audience.run(["--config", str(demo_copy / "job.yaml"), "--output", str(tmp_path / "o")])
    assert report["profiles_read"] == 300 and report["data_sources"]["crm-plain"]["reconciled"] == 136
    cfg = load_config(str(demo_copy / "job.yaml"))
    assert "thumbnail" not in screen_columns(cfg, str(path))
    text = demo_copy / "job.yaml"
    text.write_text(text.read_text().replace("match_on: crm_id", "match_on: thumbnail"))
    cfg = load_config(str(text))
    with pytest.raises(InputError, match=rf"^{path}: not UTF-8 text in rows 1-300"):
        list(read_profiles(str(path), cfg, extra=screen_columns(cfg, str(path))))


def test_jsonl_text_that_looks_like_a_date_stays_the_text_it_is(tmp_path):
    """Arrow's JSON reader takes such strings for timestamps: the id "2020-01-01" read as
    "2020-01-01 00:00:00", a key no dump has (a silent no-match)."""
    from transforms.config_load import parse_config

    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"profile_id": "P1", "crm_id": "2020-01-01"}\n'
                     b'{"profile_id": "P2", "crm_id": "2020-01-02 10:00:00"}\n')
    cfg = parse_config({"profiles": {"path": str(path), "visitor_ids": None},
                        "data_sources": CRM_SOURCES})
    (table,) = list(read_profiles(str(path), cfg))
    assert table["k:crm_id"].to_pylist() == ["2020-01-01", "2020-01-02 10:00:00"]


def test_jsonl_whose_list_column_is_null_for_its_first_blocks_reads_whole(tmp_path):
    """Arrow infers JSON types block by block (1 MB): a column null in the first blocks and lists
    of IDs after it failed with ArrowNotImplementedError (a traceback) for a valid file."""
    import json

    from transforms.config_load import parse_config

    path = tmp_path / "p.jsonl"
    pad = "x" * 200
    head = [{"profile_id": f"Z{i}", "visitor_ids": None, "pad": pad} for i in range(6000)]
    tail = [{"profile_id": "P1", "visitor_ids": ["1" * 38, "2" * 38], "pad": pad}]
    path.write_text("".join(json.dumps(r) + "\n" for r in head + tail))
    cfg = parse_config({"profiles": {"path": str(path), "email": None, "phone": None},
                        "data_sources": [{"name": "v", "dpid": 1, "segments": "s", "id_type": "visitor"}]})
    rows = [r for t in read_profiles(str(path), cfg) for r in t.select(["profile_id", "visitor_ids"]).to_pylist()]
    assert len(rows) == 6001 and rows[-1] == {"profile_id": "P1", "visitor_ids": ["1" * 38, "2" * 38]}


@pytest.mark.parametrize("fmt, content, problem", [("parquet", b"PAR1 cut short", "cannot read the parquet extract"),
                                                   ("parquet", b"", "empty file"), ("csv", b"", "empty file")])
def test_an_empty_or_cut_extract_is_named_in_preflight(demo_copy, fmt, content, problem):
    """Arrow's "Parquet magic bytes not found" came without the file; a 0-byte CSV gave one "column
    not in the extract" per column."""
    path = demo_copy / f"profiles.{fmt}"
    path.write_bytes(content)
    job = demo_copy / "job.yaml"
    job.write_text(job.read_text().replace("path: profiles.parquet", f"path: profiles.{fmt}"))
    with pytest.raises(ConfigError) as info:
        check_inputs(load_config(str(job)))
    assert str(info.value) == f"profiles.path: {path}: {problem}"


def _compressed_extract(tmp_path, fmt: str, ext: str, cut: bool):
    """20,000 profiles as ``p.<fmt>.<ext>``, two compressed streams end to end (what ``cat`` of two
    compressed pieces gives: a valid file). ``cut``: the copy ends 10 bytes into the second stream,
    after the first one's last row (a transfer cut short: no end-of-stream marker)."""
    import bz2
    import gzip
    import json
    import lzma

    import zstandard

    from transforms.config_load import parse_config

    rows = [f"P{i},user{i}@example.com\n" if fmt == "csv" else json.dumps({"profile_id": f"P{i}", "email": f"user{i}@example.com"}) + "\n"
            for i in range(20000)]
    head = "profile_id,email\n" if fmt == "csv" else ""
    first, second = (head + "".join(rows[:10000])).encode(), "".join(rows[10000:]).encode()
    compress = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress,
                "zst": zstandard.ZstdCompressor().compress}[ext]
    data = compress(first) + (compress(second)[:10] if cut else compress(second))
    path = tmp_path / f"p.{fmt}.{ext}"
    path.write_bytes(data)
    cfg = parse_config({"profiles": {"path": str(path), "format": fmt, "phone": None, "visitor_ids": None},
                        "data_sources": [{"name": "e", "dpid": 1, "segments": "s", "id_type": "declared",
                                          "declared": "hashed", "match_on": "email", "normalization": "adobe"}]})
    return path, cfg


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("ext", ["gz", "bz2", "xz", "zst"])
def test_a_compressed_extract_reads_whole_and_one_cut_short_fails_naming_the_file(tmp_path, fmt, ext):
    """Beam's decompressors return the bytes up to a cut as if they were the whole file: a
    .jsonl.gz cut after its first half read as 10,000 of 20,000 profiles, no error (every line of
    the others unmatched). And a .csv.gz failed every run ("cannot read the csv extract (ValueError)")."""
    path, cfg = _compressed_extract(tmp_path, fmt, ext, cut=False)
    assert read_schema_names(str(path), fmt) == ["profile_id", "email"]
    assert sum(t.num_rows for t in read_profiles(str(path), cfg, batch_rows=4096)) == 20000
    path, cfg = _compressed_extract(tmp_path, fmt, ext, cut=True)
    with pytest.raises(InputError) as info:
        sum(t.num_rows for t in read_profiles(str(path), cfg, batch_rows=4096))
    assert str(info.value).startswith(f"{path}: ") and "cut short" in str(info.value)


def test_a_zstd_file_read_in_small_pieces_takes_linear_time(tmp_path):
    """The zstd reader handed out its decompressed bytes by slicing them off the front of what one
    1 MB read of the file gave, copying the rest each time: small reads (``read()`` of a suppression
    list, the 8 KB reads of csv_line_of_row naming a bad row) took time quadratic in that. A 48 MB
    .csv.zst extract (42x compressible) took 36 s to find its last row's line, its .csv.gz 0.6 s.
    Found in review of today's diff."""
    import time

    import zstandard

    from transforms.storage import open_decompressed

    path = tmp_path / "sparse.csv.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"p,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,\n" * (1 << 20)))  # 32 MB
    started = time.perf_counter()
    with open_decompressed(str(path)) as handle:
        assert len(handle.read()) == 33 << 20
    assert time.perf_counter() - started < 3  # (quadratic: ~20 s; linear: ~0.1 s)


def few_ids_job(tmp_path, rows: int, id_of) -> tuple:
    """A plain-CRM import job: ``rows`` extract rows (row i: crm id c<i>, country and segment of few
    values, profile id ``id_of(i)``) and a full dump naming every crm id in segment 24."""
    lines = ["profile_id,crm_id,country"] + [f"{id_of(i)},c{i},{('FR', 'DE', 'BE', 'ES', 'IT')[i % 5]}"
                                             for i in range(rows)]
    (tmp_path / "profiles.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ftp_1_9_full_1795305600000.sync").write_text("".join(f"c{i} 24\n" for i in range(rows)))
    (tmp_path / "job.yaml").write_text(
        "profiles: {path: profiles.csv, id: country, email: null, phone: null, visitor_ids: null}\n"
        "data_sources: [{name: crm, dpid: 9, segments: d/*, id_type: declared, declared: plain, match_on: crm_id}]\n")
    return tmp_path / "job.yaml", tmp_path / "o"


def test_a_profile_id_column_of_few_values_fails_naming_the_column_and_field(tmp_path):
    """`profiles.id: country` (or a segment column): the 1,200 profiles were merged into 5, their 1,200
    memberships published as 5 (exit 0). Fewer distinct ids than 1 % of the rows fails the run,
    naming the column and the field, never a value."""
    from conftest import assert_failed_cleanly

    job, out = few_ids_job(tmp_path, 1_200, lambda i: f"P{i}")
    last = assert_failed_cleanly(cli_in_process("import", "--config", job, "--output", out), out,
                                 "profiles.id: column 'country'", "at most 5 distinct values in 1,200 rows")
    assert not any(value in last for value in ("FR", "DE", "c1", "P1"))
    job.write_text(job.read_text().replace("visitor_ids: null", "visitor_ids: null, opt_out_missing: consented"))
    export = cli_in_process("export", "--config", job, "--audience", "A", "--targets", tmp_path / "profiles.csv",
                            "--output", tmp_path / "e")  # the export reads the extract too
    assert_failed_cleanly(export, tmp_path / "e", "profiles.id: column 'country'")


def test_profile_ids_repeated_on_several_rows_are_read(tmp_path):
    """Rows sharing a profile id are legitimate (one row per email of a profile): 1,200 rows of 400
    profiles, or of 12 (100 rows each, the limit), import; 11 profiles in 1,200 rows would not."""
    for profiles, members in ((400, 400), (12, 12)):
        folder = tmp_path / str(profiles)
        folder.mkdir()
        job, out = few_ids_job(folder, 1_200, lambda i: f"P{i % profiles}")
        job.write_text(job.read_text().replace("id: country", "id: profile_id"))
        result = cli_in_process("import", "--config", job, "--output", out)
        assert result.returncode == 0, result.stderr
        assert pq.read_table(out / "reconciled").num_rows == members
