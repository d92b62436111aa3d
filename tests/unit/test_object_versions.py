"""The order of a bucket's versions and the state at T, as pure functions over records."""

from hadr_backup.objectstore.versions import VersionRecord, merge_runs, newest_first, page_records, state_at


def v(key, vid, t, deleted=False, latest=False):
    return VersionRecord(key=key, version_id=vid, last_modified=t, deleted=deleted, latest=latest)


def test_page_records_follow_the_document_order_of_versions_and_markers():
    page = {
        "Versions": [
            {"Key": "a", "VersionId": "2", "LastModified": "2026-01-01T00:00:05Z", "Size": 3, "ETag": '"x"'},
            {"Key": "a", "VersionId": "1", "LastModified": "2026-01-01T00:00:01Z", "Size": 1},
        ],
        "DeleteMarkers": [{"Key": "a", "VersionId": "3", "LastModified": "2026-01-01T00:00:05Z", "IsLatest": True}],
        "HadrEntryOrder": [True, False, False],
    }
    records = page_records(page)
    assert [(r.version_id, r.deleted) for r in records] == [("3", True), ("2", False), ("1", False)]
    assert records[1].etag == "x" and records[1].size == 3 and records[0].size == 0


def test_without_the_document_order_a_tie_is_broken_by_the_latest_flag_then_time():
    page = {
        "Versions": [
            {"Key": "a", "VersionId": "2", "LastModified": "2026-01-01T00:00:05Z"},
            {"Key": "a", "VersionId": "1", "LastModified": "2026-01-01T00:00:01Z"},
        ],
        "DeleteMarkers": [{"Key": "a", "VersionId": "3", "LastModified": "2026-01-01T00:00:05Z", "IsLatest": True}],
    }
    assert [r.version_id for r in newest_first(page_records(page))] == ["3", "2", "1"]


def test_newest_first_keeps_the_listing_order_within_one_second():
    records = [v("a", "old", 10), v("a", "newer", 12), v("a", "newest", 12)]
    assert [r.version_id for r in newest_first(records)] == ["newer", "newest", "old"]


def test_state_at_picks_the_newest_record_at_or_before_t_and_drops_deleted_keys():
    records = [
        v("a", "a3", 30),
        v("a", "a2", 20, deleted=True),
        v("a", "a1", 10),
        v("b", "b1", 15),
        v("c", "c2", 40, deleted=True),
        v("c", "c1", 5),
    ]

    def at(t):
        return {r.key: r.version_id for r in state_at(records, t)}

    assert at(4) == {}
    assert at(10) == {"a": "a1", "c": "c1"}
    assert at(19.9) == {"a": "a1", "b": "b1", "c": "c1"}
    assert at(20) == {"b": "b1", "c": "c1"}
    assert at(35) == {"a": "a3", "b": "b1", "c": "c1"}
    assert at(40) == {"a": "a3", "b": "b1"}


def test_merge_runs_puts_a_later_runs_records_of_a_key_first():
    run1 = [v("a", "a1", 10, latest=True), v("c", "c1", 10, latest=True)]
    run2 = [v("a", "a2", 10, latest=True), v("b", "b1", 11, latest=True)]  # same second as a1, but newer
    merged = list(merge_runs([run1, run2]))
    assert [r.version_id for r in merged] == ["a2", "a1", "b1", "c1"]
    assert {r.key: r.version_id for r in state_at(merged, 10)} == {"a": "a2", "c": "c1"}


def test_records_round_trip_through_json():
    record = VersionRecord("k", "id", 12.0, size=5, etag="e", sha256="f" * 64, latest=True)
    assert VersionRecord.from_json(record.to_json()) == record
    marker = VersionRecord("k", "id2", 13.0, deleted=True)
    assert VersionRecord.from_json(marker.to_json()) == marker
