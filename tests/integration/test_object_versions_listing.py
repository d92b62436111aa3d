"""list_versions against a real S3 endpoint (moto over HTTP): pages, delete markers, order, state at T."""

import time

from hadr_backup.objectstore.versions import list_versions, state_at


def test_listing_pages_through_versions_and_markers_and_gives_each_state(s3_server, s3_bucket):
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    oracle = []  # (instant after the round, {key: content})
    current: dict[str, bytes] = {}
    for round_ in range(3):  # each round in its own second: S3 stamps LastModified to the second
        for i in range(40):
            key = f"k{i:03d}"
            if (i + round_) % 3 == 0 and key in current:
                client.delete_object(Bucket=s3_bucket, Key=key)
                del current[key]
            else:
                body = f"{key}-r{round_}".encode()
                client.put_object(Bucket=s3_bucket, Key=key, Body=body)
                current[key] = body
        time.sleep(1.1)
        oracle.append((time.time() - 0.05, dict(current)))
        time.sleep(1.0)

    records = list(list_versions(client, s3_bucket, page_size=7))  # 7: markers land on page edges
    listed = client.list_object_versions(Bucket=s3_bucket, MaxKeys=1000)
    assert len(records) == len(listed.get("Versions", [])) + len(listed.get("DeleteMarkers", []))
    assert [r.key for r in records] == sorted(r.key for r in records)
    assert any(r.deleted for r in records)
    for at, expected in oracle:
        state = {r.key: r for r in state_at(records, at)}
        assert set(state) == set(expected)
        for key, record in state.items():
            body = client.get_object(Bucket=s3_bucket, Key=key, VersionId=record.version_id)["Body"].read()
            assert body == expected[key]
