"""The one CSV reader of profile extracts and target lists: BOM, bad rows, nulls, missing columns."""
from __future__ import annotations

import io

import pyarrow as pa
import pytest

from transforms.csv_reader import csv_tables
from transforms.errors import InputError


def read(text: bytes, columns: list[str], strings_can_be_null: bool) -> list[list]:
    tables = csv_tables(io.BytesIO(text), "f.csv", columns, strings_can_be_null)
    return [t[c].to_pylist() for t in tables for c in columns]


def test_reads_only_the_asked_columns_as_strings_and_skips_a_bom():
    data = "\ufeffid,n,note\n007,1,x\nb,2,y\n".encode("utf-8")
    assert read(data, ["id", "n"], strings_can_be_null=False) == [["007", "b"], ["1", "2"]]


def test_null_like_values_are_kept_unless_asked():
    data = b"id,note\nNA,x\n,y\nNULL,z\n"
    assert read(data, ["id"], strings_can_be_null=False) == [["NA", "", "NULL"]]
    assert read(data, ["id"], strings_can_be_null=True) == [[None, None, None]]


def test_a_row_with_the_wrong_number_of_columns_names_its_line_not_its_content():
    data = b"id,note\np1,x\nsecret,x,extra\np3,x\n"
    with pytest.raises(InputError) as err:
        read(data, ["id"], strings_can_be_null=False)
    assert (err.value.path, err.value.line, err.value.problem) == ("f.csv", 3, "wrong number of columns")
    assert "secret" not in str(err.value)


def test_a_missing_column_fails_when_opened_before_any_table():
    with pytest.raises(KeyError):  # pa.ArrowKeyError
        csv_tables(io.BytesIO(b"id,note\np1,x\n"), "f.csv", ["profile_id"], strings_can_be_null=False)
    with pytest.raises(pa.ArrowInvalid):
        csv_tables(io.BytesIO(b""), "f.csv", ["profile_id"], strings_can_be_null=False)
