"""A JSONL extract in parts whose key or visitor-ID field was renamed in one part's export ('crmId'
for 'crm_id'): JSON writers leave null fields out, so such a part read as profiles without the key,
exit 0. The start-up check (transforms/jsonl_keys.py) tells it from a small part or a sparse column."""
from __future__ import annotations

import json

import pytest
from test_extract_shapes import config, with_dump

from transforms.config import ConfigError
from transforms.config_load import parse_config
from transforms.preflight import check_inputs


def jsonl_part(path, name: str, count: int = 1000, tenths: int = 9) -> None:
    """``count`` profiles, ``tenths`` in ten holding the field ``name`` (a JSON writer leaves the others' out)."""
    path.write_text("".join(json.dumps({"profile_id": f"{path.stem}-{i}", **({name: f"C{i}"} if i % 10 < tenths else {})})
                            + "\n" for i in range(count)))


@pytest.mark.parametrize("renamed, count, tenths", [("crmId", 1000, 9), ("crm_id", 1000, 9), ("crmId", 999, 9),
                                                    ("crmId", 1000, 4)])
def test_a_jsonl_part_whose_key_field_was_renamed_is_named_before_the_run(tmp_path, renamed, count, tenths):
    """One part of three written with 'crmId' for 'crm_id': read as profiles without that key (another
    part has it), its lines were unmatched, exit 0. A part of 1,000 records or more none of whose first
    1,000 has a key most records of the parts holding it have is refused, naming the part and the
    key. A smaller part, or a column most records lack, reads as nulls."""
    (tmp_path / "p").mkdir()
    with_dump(tmp_path / "p")
    for i in range(3):
        jsonl_part(tmp_path / "p" / f"part-{i}.jsonl", renamed if i == 1 else "crm_id", count, tenths)
    cfg = config(tmp_path / "p" / "*.jsonl")
    if renamed == "crm_id" or count < 1000 or tenths < 5:  # read as nulls: a small part, a column most records lack
        check_inputs(cfg)
        return
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg)
    assert str(info.value) == (
        f"data_sources[0].match_on: column 'crm_id' is in none of the first 1,000 records of {tmp_path}/p/part-1.jsonl, "
        "but in 1,800 of the 2,000 read of the parts that have it: renamed in that part? Its profiles would have no "
        "such key (if they truly have none, write the field as null, Spark's ignoreNullFields=false, or add 'crm_id' to "
        "profiles.parts_may_lack)")
    (tmp_path / "p" / "part-1.jsonl").write_text('{"profile_id": "P1", "crm_id": null}\n' * 1000)
    check_inputs(cfg)  # nulls written: the part has the field


def test_a_jsonl_part_of_nulls_from_an_extract_sorted_by_the_key_is_read_as_nulls(tmp_path):
    """Spark sorts nulls first and leaves null fields out: an extract ordered (or partitioned) by its
    key column writes whole parts without the field. They name no field the other parts lack, so they
    are no renamed field (the first version of the check refused such a valid extract)."""
    (tmp_path / "p").mkdir()
    with_dump(tmp_path / "p")
    jsonl_part(tmp_path / "p" / "part-0.jsonl", "crm_id", tenths=0)  # the nulls, first
    for i in (1, 2):
        jsonl_part(tmp_path / "p" / f"part-{i}.jsonl", "crm_id", tenths=10)
    check_inputs(config(tmp_path / "p" / "*.jsonl"))


@pytest.mark.parametrize("export", [False, True])
def test_a_jsonl_part_whose_visitor_id_field_was_renamed_is_named_before_the_run(tmp_path, export):
    """The visitor IDs, which a part may lack (profiles without them), renamed in one part of three
    ('visitorIds'): its profiles gave no visitor key (unmatched; unmapped in an export), exit 0."""
    from datetime import date

    from transforms.export_spec import export_spec
    from transforms.preflight_export import check_export_inputs

    (tmp_path / "p").mkdir()
    for i in range(3):
        jsonl_part(tmp_path / "p" / f"part-{i}.jsonl", "visitorIds" if i == 1 else "visitor_ids")
    (tmp_path / "t.csv").write_text("profile_id\nP1\n")
    with_dump(tmp_path)
    cfg = parse_config({"profiles": {"path": str(tmp_path / "p" / "*.jsonl"), "phone": None, "email": None,
                                     "opt_out": None, "opt_out_missing": "consented"},
                        "data_sources": [{"name": "vis", "dpid": 56789, "segments": str(tmp_path / "seg" / "*"),
                                          "id_type": "visitor"}]})
    with pytest.raises(ConfigError) as info:
        if export:
            check_export_inputs(cfg, export_spec(cfg, "V", None, date(2026, 11, 22)), str(tmp_path / "t.csv"), [])
        else:
            check_inputs(cfg)
    assert str(info.value).startswith("profiles.visitor_ids: column 'visitor_ids' is in none of the first 1,000 "
                                      f"records of {tmp_path}/p/part-1.jsonl, but in 1,800 of the 2,000 read")


def test_a_jsonl_part_not_utf8_is_left_to_the_reader(tmp_path):
    """A Latin-1 part's records do not parse: they are not taken for a part without the key (the reader
    names the part and its rows 'not UTF-8', the cause)."""
    (tmp_path / "p").mkdir()
    with_dump(tmp_path / "p")
    for i in range(3):
        jsonl_part(tmp_path / "p" / f"part-{i}.jsonl", "crm_id")
    part = tmp_path / "p" / "part-1.jsonl"
    part.write_bytes(part.read_text().replace('"}', 'é"}').encode("latin-1"))
    check_inputs(config(tmp_path / "p" / "*.jsonl"))


@pytest.mark.parametrize("count, renamed", [(500, "crmId"), (300, "crmId"), (500, None)])
def test_small_jsonl_parts_whose_key_field_was_renamed_are_named_together(tmp_path, count, renamed):
    """Parts of two writers, one writing 'crmId' for 'crm_id', 500 records a part (Spark's 200 shuffle
    partitions of a 100k extract): no part had 1,000 records, so none was sampled enough, and half the
    profiles gave no key, exit 0. The parts lacking the key and naming the same new field are sampled
    together: 1,000 records or more of them, none holding the key, are refused as one part is. Fewer
    (3 parts of 300), or small parts of nulls naming nothing new, read as nulls."""
    (tmp_path / "p").mkdir()
    with_dump(tmp_path / "p")
    for i in range(6):
        jsonl_part(tmp_path / "p" / f"part-{i}.jsonl", (renamed or "crm_id") if i % 2 else "crm_id", count,
                   9 if renamed or i % 2 == 0 else 0)
    cfg = config(tmp_path / "p" / "*.jsonl")
    if count < 500 or renamed is None:
        check_inputs(cfg)
        return
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg)
    assert str(info.value) == (
        f"data_sources[0].match_on: column 'crm_id' is in none of the 1,500 records of {tmp_path}/p/part-1.jsonl and 2 "
        "more parts naming the same new field, but in 1,350 of the 1,500 read of the parts that have it: renamed in "
        "those parts? "
        "Their profiles would have no such key (if they truly have none, write the field as null, Spark's "
        "ignoreNullFields=false, or add 'crm_id' to profiles.parts_may_lack)")


def test_parts_of_nulls_naming_fields_of_their_own_pass_once_the_column_may_be_lacking(tmp_path):
    """customers.unionByName(prospects, allowMissingColumns=True) written by Spark: whole parts are
    prospects, without crm_id and with a lead_source no customer part has. The check cannot tell them
    from a renamed field and refuses the extract; where the writer cannot be changed, the column is
    listed in profiles.parts_may_lack and the parts read as nulls."""
    (tmp_path / "p").mkdir()
    with_dump(tmp_path / "p")
    for i in range(2):
        jsonl_part(tmp_path / "p" / f"part-{i}.jsonl", "crm_id", 1500)
    jsonl_part(tmp_path / "p" / "part-2.jsonl", "lead_source", 1500, tenths=10)
    with pytest.raises(ConfigError, match="renamed in that part"):
        check_inputs(config(tmp_path / "p" / "*.jsonl"))
    check_inputs(config(tmp_path / "p" / "*.jsonl", parts_may_lack=["crm_id"]))
