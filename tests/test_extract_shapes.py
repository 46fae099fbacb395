"""Profile extracts in the shapes other tools write them: another line break, another encoding, a
nested column, the files of one glob unlike each other. Each reads as the plain UTF-8 / LF extract
does, or fails in one line naming the file (and line or column) and the cause."""
from __future__ import annotations

import pytest

from transforms.config import ConfigError
from transforms.config_load import parse_config
from transforms.errors import InputError, RunFailed
from transforms.outcomes import Counts
from transforms.preflight import check_inputs
from transforms.profile_columns import check_visitor_entries
from transforms.profiles import counted_profiles, read_profiles

ROWS = [("P1", "zoé@example.com", "CÉ1", "note, with a comma"), ("P2", "ann@example.com", "C2", "two\nlines"),
        ("P3", "bob@example.com", "C3", 'a "quoted" word')]


def csv_text(newline: str = "\n", rows=ROWS) -> str:
    def field(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value

    lines = ["profile_id,email,crm_id,note"] + [",".join(field(v) for v in row) for row in rows]
    return newline.join(lines) + newline


def config(path, **profiles) -> object:
    return parse_config({"profiles": {"path": str(path), "phone": None, "visitor_ids": None, **profiles},
                         "data_sources": [{"name": "crm", "dpid": 1, "segments": str(path.parent / "seg" / "*"),
                                           "id_type": "declared", "declared": "plain", "match_on": "crm_id"}]})


def profiles_of(path, cfg) -> list[dict]:
    return [r for t in read_profiles(str(path), cfg) for r in t.select(["profile_id", "k:crm_id"]).to_pylist()]


def with_dump(tmp_path):
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "ftp_1_1_full_1795305600000.sync").write_text("C1 100\n")


@pytest.mark.parametrize("newline", ["\r", "\r\n"])
def test_a_csv_extract_with_cr_line_breaks_reads_as_the_lf_one(tmp_path, newline):
    """An old Mac export (CR only): the header check read the whole file as its first line and the
    run failed on a bare "_csv.Error: new-line character seen in unquoted field", naming no file
    (exit 1). Arrow's reader takes CR as a line break: the header is read the same way."""
    with_dump(tmp_path)
    lf, other = tmp_path / "lf.csv", tmp_path / "p.csv"
    lf.write_text(csv_text(), newline="")
    other.write_text(csv_text(newline), newline="")
    check_inputs(config(other))
    assert profiles_of(other, config(other)) == profiles_of(lf, config(lf))
    assert len(profiles_of(lf, config(lf))) == 3


def test_a_latin1_csv_extract_fails_naming_the_file_its_line_and_the_encoding(tmp_path):
    """A CSV saved as Latin-1 (Excel's "CSV" on Windows) failed "cannot read the csv extract
    (ArrowInvalid)": no line, no cause. The line is the first one holding bytes that are not UTF-8
    (the file's line, a quoted field's line breaks counted), never its content."""
    path = tmp_path / "p.csv"
    path.write_bytes(csv_text(rows=ROWS[1:] + ROWS[:1]).encode("latin-1"))  # 'CÉ1' on line 5
    with pytest.raises(InputError) as info:
        profiles_of(path, config(path))
    assert str(info.value) == f"{path}:5: not UTF-8 text (Latin-1?): save the extract as UTF-8"


def test_a_latin1_jsonl_extract_is_named_as_such_with_the_diagnosis_on(tmp_path):
    """Its first record not UTF-8, the diagnosis' column screen failed it as "p.jsonl:1: not valid
    JSON" (json.loads of the raw bytes): the reading names the rows that are not UTF-8."""
    import json

    from transforms.diagnosis_forms import screen_columns

    keyed = [dict(zip(("profile_id", "email", "crm_id", "note"), row)) for row in ROWS]
    path = tmp_path / "p.jsonl"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keyed).encode("latin-1"))
    cfg = config(path)
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), cfg, extra=screen_columns(cfg, str(path))))
    assert str(info.value) == f"{path}: not UTF-8 text in rows 1-3 (Latin-1?): save the extract as UTF-8"


@pytest.mark.parametrize("column", ["profile_id", "crm_id"])
@pytest.mark.parametrize("kind", ["list", "struct"])
def test_an_id_or_key_column_of_lists_or_structs_fails_naming_the_file_and_column(tmp_path, column, kind):
    """A Parquet extract whose match_on (or id) column holds lists or structs (one list of emails per
    profile): the run failed 'ArrowNotImplementedError [while running KeyProfiles]', naming neither
    the file nor the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"profile_id": ["P1", "P2"], "crm_id": ["C1", "C2"]})
    values = table[column].to_pylist()
    nested = [[v] for v in values] if kind == "list" else [{"v": v} for v in values]
    path = tmp_path / "p.parquet"
    pq.write_table(table.set_column(table.column_names.index(column), column, pa.array(nested)), path)
    with pytest.raises(InputError) as info:
        profiles_of(path, config(path))
    assert str(info.value).startswith(f"{path}: column '{column}': a {kind} column")


@pytest.mark.parametrize("entries, kind", [([{"id": "1" * 38}], "struct"), ([["1" * 38]], "list"),
                                           ([[("k", "1" * 38)]], "map")])
def test_a_visitor_id_list_of_structs_or_lists_fails_naming_the_file_and_column(tmp_path, entries, kind):
    """A Parquet visitor-ID column of lists whose entries are records (BigQuery's REPEATED RECORD,
    Spark's collect_list(struct(...))), lists or maps: the run failed 'ArrowNotImplementedError
    [while running KeyProfiles]', naming neither the file nor the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = pa.array([entries, None], pa.list_(pa.map_(pa.string(), pa.string()))) if kind == "map" else [entries, None]
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"profile_id": ["P1", "P2"], "visitor_ids": values}), path)
    cfg = parse_config({"profiles": {"path": str(path), "phone": None},
                        "data_sources": [{"name": "v", "dpid": 1, "segments": "s", "id_type": "visitor"}]})
    with pytest.raises(InputError) as info:
        list(read_profiles(str(path), cfg))
    assert str(info.value).startswith(f"{path}: column 'visitor_ids': a list of {kind}s (")
    assert "1" * 38 not in str(info.value)

@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_visitor_id_column_missing_from_one_file_of_the_extract_is_named_before_the_run(tmp_path, fmt):
    """The start-up check lets an extract lack the visitor-ID column (a JSONL record may omit it),
    so a partial export whose second file lacked it passed: its profiles gave no visitor key and 7
    of 13 visitor lines were published as unmatched, exit 0 (the guard on a column giving no key
    looks at the whole run). A column of one file's header missing from another's is named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with_dump(tmp_path)
    (tmp_path / "x").mkdir()
    table = pa.table({"profile_id": ["P1", "P2"], "crm_id": ["C1", "C2"], "visitor_ids": ["1" * 38, "2" * 38]})
    pieces = [table, table.drop_columns(["visitor_ids"])]
    files = [(tmp_path / "x" / f"p{i}.{fmt}", piece) for i, piece in enumerate(pieces)]
    for path, piece in files:
        rows = [piece.column_names] + [list(r.values()) for r in piece.to_pylist()]
        pq.write_table(piece, path) if fmt == "parquet" else path.write_text("\n".join(",".join(row) for row in rows))
    cfg = parse_config({"profiles": {"path": str(tmp_path / "x" / f"*.{fmt}"), "phone": None},
                        "data_sources": [{"name": "v", "dpid": 1, "segments": str(tmp_path / "seg" / "*"),
                                          "id_type": "visitor"}]})
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg)
    assert str(info.value) == (f"profiles.visitor_ids: column 'visitor_ids' is not in the extract {files[1][0]}, "
                               f"where {files[0][0]} has it")
    files[1][0].unlink()
    check_inputs(cfg)  # the files alike again


def test_a_jsonl_record_naming_a_column_twice_fails_naming_its_line_and_the_column(tmp_path):
    """Arrow refuses such a record and json.loads keeps the last value: the run failed "inconsistent
    JSON records", naming no line and no column."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"profile_id": "P1", "crm_id": "C1"}\n\n{"profile_id": "P2", "crm_id": "", "crm_id": "C2"}\n')
    with pytest.raises(InputError) as info:
        profiles_of(path, config(path))
    assert str(info.value) == f"{path}:3: column 'crm_id' appears twice in the record"


@pytest.mark.parametrize("record", ["[1, 2]", '"text"', "12"])
def test_a_jsonl_line_that_is_no_object_fails_naming_its_line(tmp_path, record):
    """A JSON array, string or number on a line of its own (a JSON array file cut into lines, a log
    line): the run failed "inconsistent JSON records", naming no line and no cause."""
    path = tmp_path / "p.jsonl"
    path.write_text(f'{{"profile_id": "P1", "crm_id": "C1"}}\n{record}\n')
    with pytest.raises(InputError) as info:
        profiles_of(path, config(path))
    assert str(info.value) == f"{path}:2: not a JSON object (one record per line, {{\"column\": value, ...}})"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_compressed_extract_under_a_plain_name_is_named_as_such(tmp_path, fmt):
    """A .csv (.jsonl) that is gzip (a transfer tool dropped the .gz): the header check read bytes
    as names, and the run failed on a bare '_csv.Error' naming no file (CSV), or said the columns
    were not in the extract (after 53d5a1f) or 'not valid JSON', never why."""
    import gzip

    with_dump(tmp_path)
    path = tmp_path / f"p.{fmt}"
    path.write_bytes(gzip.compress(csv_text().encode() if fmt == "csv" else b'{"profile_id": "P1", "crm_id": "C1"}\n'))
    with pytest.raises(ConfigError) as info:
        check_inputs(config(tmp_path / "p*", format=fmt))
    assert str(info.value) == f"profiles.path: {path}: gzip content under a name without .gz: rename it p.{fmt}.gz"


def test_the_name_a_compressed_extract_part_is_told_to_take_is_one_its_glob_still_reads(tmp_path):
    """extract/*.csv, one part gzip under b.csv: told 'rename it b.csv.gz', the glob no longer listed
    it and its profiles were read as gone (exit 0). The message says the glob must change too; so
    for --targets, whose parts are the audience."""
    import gzip

    from transforms.preflight_export import _targets_problems

    with_dump(tmp_path)
    (tmp_path / "a.csv").write_text(csv_text())
    part = tmp_path / "b.csv"
    part.write_bytes(gzip.compress(csv_text().encode()))
    hint = "rename it b.csv.gz and change '*.csv' to match it (as it stands, the renamed file would not be read)"
    with pytest.raises(ConfigError) as info:
        check_inputs(config(tmp_path / "*.csv"))
    assert str(info.value) == f"profiles.path: {part}: gzip content under a name without .gz: {hint}"
    assert _targets_problems(str(tmp_path / "*.csv")) == [  # the file named once (it was named twice)
        f"--targets: {part}: gzip content under a name without .gz: {hint}"]


def test_a_targets_file_in_utf16_is_told_to_be_saved_as_utf8_as_a_targets_file(tmp_path):
    """It was told to 'save the extract as UTF-8': the extract is another file."""
    from transforms.preflight_export import _targets_problems

    path = tmp_path / "t.csv"
    path.write_bytes("profile_id\np1\n".encode("utf-16"))
    assert _targets_problems(str(path)) == [
        f"--targets: {path}: UTF-16/UTF-32 text (a byte order mark or NUL bytes), not UTF-8: save the targets file as UTF-8"]


def test_a_compressed_part_of_an_extract_folder_is_not_told_to_change_the_folder(tmp_path):
    """profiles.path 'extract/' (a folder's files), one part gzip under part-0.csv: told 'rename it
    part-0.csv.gz and change 'extract' to match it (as it stands, the renamed file would not be read)',
    when the folder reads it renamed (the import then ran, exit 0): a cause the path did not have."""
    import gzip

    with_dump(tmp_path)
    (tmp_path / "extract").mkdir()
    part = tmp_path / "extract" / "part-0.csv"
    part.write_bytes(gzip.compress(csv_text().encode()))
    cfg = config(tmp_path / "extract", format="csv")
    cfg = cfg.model_copy(update={"profiles": cfg.profiles.model_copy(update={"path": f"{tmp_path}/extract/"})})
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg)
    assert str(info.value) == f"profiles.path: {part}: gzip content under a name without .gz: rename it part-0.csv.gz"


def test_a_parquet_file_under_a_csv_name_is_named_as_such(tmp_path):
    """It was refused 'UTF-16/UTF-32 text' (NUL bytes in its first line): the bytes are Parquet's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with_dump(tmp_path)
    path = tmp_path / "p.csv"
    pq.write_table(pa.table({"profile_id": ["P1"], "crm_id": ["C1"]}), path)
    with pytest.raises(ConfigError) as info:
        check_inputs(config(path))
    assert str(info.value) == (f"profiles.path: {path}: Parquet content, not text: name the file .parquet and change "
                               "'p.csv' to match it (as it stands, the renamed file would not be read)")


def test_a_parquet_extract_read_as_text_by_its_format_setting_is_told_so(tmp_path):
    """'p.parquet' with profiles.format: csv (a setting left from the CSV extract it replaced) was
    told 'Parquet content, not text: name the file .parquet', the name it has."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with_dump(tmp_path)
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"profile_id": ["P1"], "crm_id": ["C1"]}), path)
    with pytest.raises(ConfigError) as info:
        check_inputs(config(path, format="csv"))
    assert str(info.value) == (f"profiles.path: {path}: Parquet content, read as csv by profiles.format: set it to "
                               "parquet, or leave it out")

@pytest.mark.parametrize("name, content, problem", [
    ("p.parquet.gz", "gzip", "gzip content, not Parquet (a Parquet file compresses its own pages): decompress it "
                             "and name it p.parquet and change 'p.parquet.gz' to match it (as it stands, the renamed "
                             "file would not be read)"),
    ("p.parquet", "zstd", "zstd content, not Parquet (a Parquet file compresses its own pages): decompress it"),
    ("p.parquet", "csv", "text, not Parquet (a CSV or JSONL file?): name it by its format or set profiles.format"),
])
def test_a_compressed_or_text_file_under_a_parquet_name_is_named_as_such(tmp_path, name, content, problem):
    """A Parquet extract gzipped for the transfer ('p.parquet.gz'), or a CSV saved under a '.parquet'
    name, was refused 'cannot read the parquet extract', saying neither what the file holds nor what
    to do."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    with_dump(tmp_path)
    path = tmp_path / name
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"profile_id": ["P1"], "crm_id": ["C1"]}), buf)
    data = buf.getvalue().to_pybytes()
    path.write_bytes({"gzip": lambda: gzip.compress(data), "zstd": lambda: zstandard.ZstdCompressor().compress(data),
                      "csv": lambda: b"profile_id,crm_id\nP1,C1\n"}[content]())
    with pytest.raises(ConfigError) as info:
        check_inputs(config(path))
    assert str(info.value) == f"profiles.path: {path}: {problem}"

def test_a_zip_archive_under_an_extracts_name_or_a_dumps_is_named_as_such(tmp_path):
    """A zipped CSV named p.csv was refused as 'UTF-16/UTF-32 text', a zipped dump failed '52 NUL bytes
    ...: UTF-16/UTF-32 text or a binary file'. Zip is no stream either reader reads: it is named."""
    import io
    import zipfile

    from transforms.dumps import read_dump

    def zipped(name: str, text: str) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name, text)
        return buf.getvalue()

    with_dump(tmp_path)
    path = tmp_path / "p.csv"
    path.write_bytes(zipped("p.csv", csv_text()))
    with pytest.raises(ConfigError) as info:
        check_inputs(config(path))
    assert str(info.value) == (f"profiles.path: {path}: a zip archive (an Excel workbook?), which is not read: extract "
                               "the file from it, or save it as CSV")
    dump = tmp_path / "seg" / "ftp_1_1_full_1795305600000.sync"
    dump.write_bytes(zipped("d.sync", "C1 100\n"))
    with pytest.raises(InputError) as info:
        list(read_dump(str(dump), config(path).data_sources[0]))
    assert str(info.value) == f"{dump}: zip content: a dump is plain text or gzip (decompress it, or compress it with gzip)"


@pytest.mark.parametrize("fmt, kind", [("parquet", "bool"), ("jsonl", "bool"), ("parquet", "date"),  # (JSONL dates: text)
                                       ("parquet", "timestamp"), ("parquet", "time"), ("parquet", "duration")])
def test_a_profile_id_column_of_a_type_no_id_has_fails_naming_the_file_and_column(tmp_path, fmt, kind):
    """profiles.id naming a boolean column (an 'is_customer' flag): every profile read as 'true' or
    'false', 10 profiles' 20 memberships published as 4, exit 0; a date or timestamp column (a
    creation date) merged the profiles of a day. Integers, decimals, floats and text stay ids."""
    import datetime
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    values = {"bool": [True, False], "date": [datetime.date(2020, 1, 1)] * 2,
              "timestamp": [datetime.datetime(2020, 1, 1)] * 2, "time": [datetime.time(1)] * 2,
              "duration": [datetime.timedelta(1)] * 2}[kind]
    path = tmp_path / f"p.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.table({"profile_id": pa.array(values), "crm_id": ["C1", "C2"]}), path)
    else:
        path.write_text("".join(json.dumps({"profile_id": v, "crm_id": c}) + "\n" for v, c in zip(values, ["C1", "C2"])))
    with pytest.raises(InputError) as info:
        profiles_of(path, config(path))
    assert str(info.value).startswith(f"{path}: column 'profile_id': ")
    assert "no profile ids" in str(info.value)
    for ids in ([1, 2], [1.0, 2.5], ["P1", "P2"]):
        pq.write_table(pa.table({"profile_id": ids, "crm_id": ["C1", "C2"]}), tmp_path / "ok.parquet")
        assert len(profiles_of(tmp_path / "ok.parquet", config(tmp_path / "ok.parquet"))) == 2


def test_a_jsonl_extract_whose_first_record_omits_a_key_column_is_read(tmp_path):
    """JSON writers omit null fields (Spark's to_json): a first record without 'crm_id' was refused at
    start-up, 'column 'crm_id' is not in the extract' (exit 2), though the later records hold it. The
    start-up check reads on until a record has it; no record of the extract having it is a
    configuration error naming the column."""
    with_dump(tmp_path)
    path = tmp_path / "p.jsonl"
    path.write_text('{"profile_id": "P1"}\n{"profile_id": "P2", "crm_id": "C2"}\n')
    check_inputs(config(path))
    assert profiles_of(path, config(path)) == [{"profile_id": "P1", "k:crm_id": None}, {"profile_id": "P2", "k:crm_id": "C2"}]
    path.write_text('{"profile_id": "P1"}\n{"profile_id": "P2", "crm": "C2"}\n')
    with pytest.raises(ConfigError) as info:
        check_inputs(config(path))
    assert str(info.value) == f"data_sources[0].match_on: column 'crm_id' is in no record of the extract '{path}'"


@pytest.mark.parametrize("before", ["\n", "  \r\n\n", "\ufeff\n"], ids=["blank", "spaces-crlf", "bom-blank"])
def test_a_jsonl_extract_whose_first_line_is_blank_is_read(tmp_path, before):
    """Blank lines are no records (Arrow's reader skips them; the reader read this extract): one
    before the first record failed the start-up check 'p.jsonl:1: not valid JSON' (exit 2), and the
    diagnosis' column screen the same way. The first record is the first line that is not blank."""
    from transforms.diagnosis_forms import screen_columns

    with_dump(tmp_path)
    path = tmp_path / "p.jsonl"
    path.write_text(before + '{"profile_id": "P1", "crm_id": "C1", "email": "a@example.com"}\n')
    check_inputs(config(path))
    assert profiles_of(path, config(path)) == [{"profile_id": "P1", "k:crm_id": "C1"}]
    assert screen_columns(config(path), str(path)) == ["email", "crm_id"]
    path.write_text(before + '{"profile_id": "P1", "crm_id": "C1"\n')  # a record that does not parse: its line
    with pytest.raises(ConfigError, match=f"{path}:{before.count(chr(10)) + 1}: not valid JSON"):
        check_inputs(config(path))
    path.write_text(before)
    with pytest.raises(ConfigError, match=f"{path}: empty file"):
        check_inputs(config(path))


def test_a_jsonl_part_whose_records_all_omit_a_key_column_reads_as_nulls(tmp_path):
    """An extract in part files (Spark's), one of whose records all omit 'crm_id' (null, and JSON
    writers omit null fields): the run failed 'part-1.jsonl: no column 'crm_id'' (exit 1), a valid
    extract refused. That part's profiles have no such key; a column no part has is refused at start-up."""
    (tmp_path / "p").mkdir()
    with_dump(tmp_path / "p")  # the dumps in p/seg/, beside the parts
    (tmp_path / "p" / "part-0.jsonl").write_text('{"profile_id": "P1"}\n{"profile_id": "P2", "crm_id": "C2"}\n')
    (tmp_path / "p" / "part-1.jsonl").write_text('{"profile_id": "P3"}\n')
    cfg = config(tmp_path / "p" / "*.jsonl")
    check_inputs(cfg)
    assert profiles_of(tmp_path / "p" / "part-1.jsonl", cfg) == [{"profile_id": "P3", "k:crm_id": None}]
    (tmp_path / "p" / "part-0.jsonl").write_text('{"profile_id": "P1"}\n{"profile_id": "P2", "crmId": "C2"}\n')
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg)
    assert str(info.value) == f"data_sources[0].match_on: column 'crm_id' is in no record of the extract '{tmp_path}/p/*.jsonl'"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_utf16_extract_is_named_as_such(tmp_path, encoding, fmt):
    """Excel's 'Unicode text', PowerShell's default: its header read as UTF-8 gave no such names, and
    the run was refused 'column 'crm_id' is not in the extract' (exit 2), the column being there."""
    with_dump(tmp_path)
    path = tmp_path / f"p.{fmt}"
    text = csv_text() if fmt == "csv" else '{"profile_id": "P1", "crm_id": "C1"}\n'
    path.write_bytes(text.encode(encoding))
    with pytest.raises(ConfigError) as info:
        check_inputs(config(path))
    assert str(info.value) == (f"profiles.path: {path}: UTF-16/UTF-32 text (a byte order mark or NUL bytes), "
                               "not UTF-8: save the extract as UTF-8")
    with pytest.raises(InputError):
        profiles_of(path, config(path))


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_a_csv_extract_separated_otherwise_than_by_commas_is_named_as_such(tmp_path, separator):
    """Excel in a European locale writes ';': the header was one column and the run was refused
    'column 'crm_id' is not in the extract', the column being there. The separator is named."""
    with_dump(tmp_path)
    path = tmp_path / "p.csv"
    path.write_text(csv_text().replace(",", separator))
    with pytest.raises(ConfigError) as info:
        check_inputs(config(path))
    shown = "\\t" if separator == "\t" else separator
    assert str(info.value).endswith(f"data_sources[0].match_on: column 'crm_id' is not in the extract {path} (its header "
                                    f"is one column holding '{shown}': a CSV is separated by commas)")


@pytest.mark.parametrize("written", ["python", "json"])
@pytest.mark.parametrize("several", [False, True])
def test_visitor_ids_written_as_a_list_in_text_are_named_so(tmp_path, written, several):
    """pandas writes a list column to CSV as "['838...', '123...']" (json.dumps: '["838..."]'). One ID
    each, no profile gave a key and the run failed 'an empty or misnamed column?'; several, it
    said to set visitor_ids_separator to the extract's, which brackets and quotes would still spoil."""
    import csv
    import io
    import json

    vids = [f"{i:038d}" for i in range(1, 41)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["profile_id", "crm_id", "visitor_ids"])
    for i, vid in enumerate(vids):
        ids = [vid, vids[i - 1]] if several else [vid]
        writer.writerow([f"P{i}", f"C{i}", str(ids) if written == "python" else json.dumps(ids)])
    path = tmp_path / "p.csv"
    path.write_text(buf.getvalue())
    cfg = parse_config({"profiles": {"path": str(path), "phone": None},
                        "data_sources": [{"name": "v", "dpid": 1, "segments": "s", "id_type": "visitor"}]})
    counts = Counts(n for _, entries in counted_profiles(str(path), cfg) for n in entries)
    with pytest.raises(RunFailed) as info:  # judged over the whole extract (test_visitor_entries.py)
        check_visitor_entries(counts, cfg.profiles)
    assert str(info.value) == (f"profiles: column 'visitor_ids' of '{path}': 40 of 40 entries hold a list written as "
                               "text ('[...]': a list column saved to CSV): write the IDs separated by "
                               "profiles.visitor_ids_separator (now ';'). Nothing was published")


def test_an_export_reads_a_jsonl_extract_whose_first_record_omits_the_visitor_ids(tmp_path):
    """JSON writers omit null fields (Spark's to_json): a part whose first profile has no visitor ID
    was refused by the export's start-up check, 'column 'visitor_ids' is not in the extract part-1.jsonl'
    (exit 2), while the import reads the same extract (the reader takes a part without them as a
    profile without visitor IDs)."""
    from datetime import date

    from transforms.export_spec import export_spec
    from transforms.preflight_export import check_export_inputs

    (tmp_path / "p").mkdir()
    vid = "1" * 38
    (tmp_path / "p" / "part-0.jsonl").write_text(f'{{"profile_id": "P1", "visitor_ids": ["{vid}"]}}\n')
    (tmp_path / "p" / "part-1.jsonl").write_text('{"profile_id": "P3"}\n{"profile_id": "P4"}\n')
    (tmp_path / "t.csv").write_text("profile_id\nP1\nP3\n")
    cfg = parse_config({"profiles": {"path": str(tmp_path / "p" / "*.jsonl"), "phone": None, "email": None,
                                     "visitor_ids": "visitor_ids", "opt_out": None, "opt_out_missing": "consented"},
                        "data_sources": [{"name": "vis", "dpid": 56789, "segments": str(tmp_path / "seg" / "*"),
                                          "id_type": "visitor"}]})
    spec = export_spec(cfg, "V", None, date(2026, 11, 22))
    check_export_inputs(cfg, spec, str(tmp_path / "t.csv"), [])
    rows = [r for f in ("part-0", "part-1") for t in read_profiles(str(tmp_path / "p" / f"{f}.jsonl"), cfg, export=True)
            for r in t.to_pylist()]
    assert len(rows) == 3


def test_a_jsonl_record_longer_than_arrows_block_is_read(tmp_path):
    """One profile of 120,000 visitor IDs (a shared device's, 5 MB on one line) among others: Arrow's
    JSON reader, in blocks of 1 MB, refused it ('straddling object ...') and the run failed
    'profiles.jsonl: inconsistent JSON records' (exit 1), the records consistent. It is read again
    in one block, as a column whose type changes between blocks is."""
    import json

    with_dump(tmp_path)
    path = tmp_path / "p.jsonl"
    rows = [{"profile_id": f"P{i}", "crm_id": f"C{i}", "visitor_ids": [f"{i:038d}"]} for i in range(3)]
    rows[1]["visitor_ids"] = [f"{k:038d}" for k in range(120_000)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert profiles_of(path, config(path)) == [{"profile_id": f"P{i}", "k:crm_id": f"C{i}"} for i in range(3)]
