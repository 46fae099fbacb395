"""The import transforms inside a real TestPipeline (pinned local runner), checked with assert_that."""
from __future__ import annotations

import gzip

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.util import assert_that, equal_to

from conftest import local_test_pipeline
from transforms.config_load import parse_config
from transforms.keys import segment_rows
from transforms.normalize import hash_value
from transforms.outcomes import Count, Metric, SumCounts
from transforms.reconcile import ReconcileAudiences

V1 = "1" * 38
V2 = "2" * 38
V3 = "3" * 38
UNKNOWN = "9" * 38


def make_job(tmp_path):
    pq.write_table(
        pa.table(
            {
                "profile_id": ["p1", "p2", "p3"],
                "email": [" Ann@Example.com", "bob@example.org", None],
                "visitor_ids": [[V1], [V2, V3], [V3]],  # V3 is seen on two profiles
            }
        ),
        tmp_path / "profiles.parquet",
    )
    (tmp_path / "vis").mkdir()
    (tmp_path / "vis" / "ftp_1_2_full_1486140844000.sync.gz").write_bytes(
        gzip.compress(f"{V1} 10,11\n{V3} 11 10\n{UNKNOWN} 10\n123 10\n\n{V2}  10\n".encode())
    )
    (tmp_path / "hashed").mkdir()
    ann = hash_value("ann@example.com", "email", "adobe", "hex")
    (tmp_path / "hashed" / "ftp_1_3_full_1486140844000.sync").write_text(
        f"{ann.upper()} 20\n{hash_value('zoe@example.com', 'email')} 20\nnot-a-hash 20\n{ann} d_sid=1\n"
    )
    return parse_config(
        {
            "profiles": {"path": str(tmp_path / "profiles.parquet"), "phone": None},
            "data_sources": [
                {"name": "vis", "dpid": 2, "segments": str(tmp_path / "vis" / "*"), "id_type": "visitor"},
                {"name": "hashed", "dpid": 3, "segments": str(tmp_path / "hashed" / "*"), "id_type": "declared",
                 "declared": "hashed", "match_on": "email"},
            ],
            "buckets": 4,
        }
    )


def test_reconcile_transform_routes_every_line(tmp_path):
    cfg = make_job(tmp_path)
    with local_test_pipeline() as p:
        out = p | ReconcileAudiences(cfg)
        members = out.reconciled | "MemberRows" >> beam.FlatMap(
            lambda t: [(r["data_source"], r["segment_id"], r["profile_id"]) for r in segment_rows(t.table()).to_pylist()]
        )
        rejected = out.rejected | "RejectedRows" >> beam.FlatMap(
            lambda t: [(r["data_source"], r["line"], r["reason"]) for r in t.to_pylist()]
        )
        counts = out.counts | "SumCounts" >> SumCounts()
        assert_that(
            members,
            equal_to(
                [
                    ("vis", "10", "p1"), ("vis", "11", "p1"),
                    ("vis", "11", "p2"), ("vis", "11", "p3"),  # V3 is on two profiles: both get it
                    ("hashed", "20", "p1"),  # upper-case hex digest still matches
                ]
            ),
            label="memberships",
        )
        assert_that(
            rejected,
            equal_to(
                [
                    ("vis", 3, "no_matching_profile"), ("vis", 4, "invalid_visitor_id"),
                    ("vis", 5, "empty_line"), ("vis", 6, "removals_only"),
                    ("hashed", 2, "no_matching_profile"), ("hashed", 3, "invalid_hash"),
                    ("hashed", 4, "trait_not_importable"),
                ]
            ),
            label="rejections",
        )
        assert_that(
            counts | beam.Filter(lambda kv: kv[0].metric in (Metric.RECEIVED, Metric.RECONCILED, Metric.PROFILES_READ)),
            equal_to(
                [
                    (Count(Metric.RECEIVED, "vis"), 6), (Count(Metric.RECONCILED, "vis"), 2),
                    (Count(Metric.RECEIVED, "hashed"), 4), (Count(Metric.RECONCILED, "hashed"), 1),
                    (Count(Metric.PROFILES_READ), 3),
                ]
            ),
            label="counts",
        )
