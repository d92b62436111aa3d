"""The bundler-like schema, its seed data, and the invariants that must hold on it.

The invariant checks return problems as values (an empty list means the check passed); the sandbox
status, the workload tests and data verification after a restore all use the same functions.
"""

from __future__ import annotations

import json
import random
import shutil
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hadr_backup.policy.model import RedisSource
from hadr_backup.redis import queues
from hadr_backup.redis.wire import Address, Connection
from hadr_backup.sandbox.workload import DATA_ITEM_PREFIX, Bundler, Stack
from hadr_backup.ui import plural

PAYMENT_DB = "payment_service"
UPLOAD_DB = "upload_service"

PAYMENT_SCHEMA = """
CREATE TABLE "user" (
    user_address text PRIMARY KEY,
    user_address_type text NOT NULL DEFAULT 'arweave',
    winston_credit_balance numeric NOT NULL DEFAULT 0,
    promotional_info jsonb NOT NULL DEFAULT '{}',
    user_creation_date timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE audit_log (
    audit_id bigserial PRIMARY KEY,
    user_address text NOT NULL REFERENCES "user",
    winston_credit_amount numeric NOT NULL,  -- signed change of the balance
    change_reason text NOT NULL,             -- payment | x402_payment | upload | refund
    change_id text,
    audit_date timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_log_user_address ON audit_log (user_address);
CREATE TABLE balance_reservation (
    reservation_id text PRIMARY KEY,
    data_item_id text NOT NULL,
    user_address text NOT NULL REFERENCES "user",
    reserved_winc_amount numeric NOT NULL,
    reserved_date timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX balance_reservation_reserved_date ON balance_reservation (reserved_date);
CREATE TABLE finalized_reservation (LIKE balance_reservation INCLUDING ALL,
    finalized_date timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE refunded_reservation (LIKE balance_reservation INCLUDING ALL,
    refund_reason text, refunded_date timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE x402_payment (
    payment_id text PRIMARY KEY,
    user_address text NOT NULL REFERENCES "user",
    payer_address text NOT NULL,
    network text NOT NULL,
    token text NOT NULL,
    amount_atomic numeric NOT NULL,
    winc_amount numeric NOT NULL,
    status text NOT NULL,                    -- pending | settled | failed
    created_date timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

_ITEM_COLUMNS = """
    data_item_id text PRIMARY KEY,
    owner_public_address text NOT NULL,
    byte_count bigint NOT NULL,
    uploaded_date timestamptz NOT NULL DEFAULT clock_timestamp(),
    assessed_winston_price numeric NOT NULL,
    signature_type int NOT NULL,
    content_type text"""

UPLOAD_SCHEMA = f"""
CREATE TABLE new_data_item ({_ITEM_COLUMNS});
CREATE INDEX new_data_item_uploaded_date ON new_data_item (uploaded_date);
CREATE TABLE planned_data_item ({_ITEM_COLUMNS},
    plan_id text NOT NULL,
    planned_date timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX planned_data_item_plan_id ON planned_data_item (plan_id);
CREATE TABLE permanent_data_item ({_ITEM_COLUMNS},
    plan_id text NOT NULL,
    planned_date timestamptz NOT NULL,
    bundle_id text NOT NULL,
    block_height int,
    permanent_date timestamptz NOT NULL DEFAULT clock_timestamp());
"""

DATA_ITEM_TABLES = ("new_data_item", "planned_data_item", "permanent_data_item")
PAYMENT_TABLES = (
    "user",
    "audit_log",
    "balance_reservation",
    "finalized_reservation",
    "refunded_reservation",
    "x402_payment",
)


@dataclass(frozen=True)
class Problem:
    """One broken invariant: which check, about what, and what is wrong."""

    check: str
    subject: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}"


# -- schema and seed ---------------------------------------------------------------------------------


def create_databases(admin_conn: Any) -> None:
    """(Re)create payment_service and upload_service with their schema; ``admin_conn`` is autocommit."""
    import psycopg

    for dbname, schema in ((PAYMENT_DB, PAYMENT_SCHEMA), (UPLOAD_DB, UPLOAD_SCHEMA)):
        admin_conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        admin_conn.execute(f"CREATE DATABASE {dbname}")
        info = admin_conn.info
        with psycopg.connect(host=info.host, port=info.port, user=info.user, dbname=dbname, autocommit=True) as conn:
            conn.execute(schema)


def reset_bucket(s3: Any, bucket: str) -> None:
    """Create ``bucket`` if needed, with versioning on (what `hadr restore s3` restores from), and remove
    every object (and version) in it."""
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    if bucket not in existing:
        return
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if doomed:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})


def save_buckets(s3: Any, dest: Path) -> int:
    """Write the current object of every key of every bucket under ``dest``; returns how many.

    The sandbox's S3 endpoint keeps objects in memory, so they are saved while it stops and loaded
    back when it starts (earlier object versions do not survive the restart).
    """
    staging, saved = Path(f"{dest}.new"), 0
    shutil.rmtree(staging, ignore_errors=True)
    manifest: dict[str, Any] = {}
    for bucket in (b["Name"] for b in s3.list_buckets().get("Buckets", [])):
        objects: dict[str, str] = {}
        manifest[bucket] = {"versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status"), "objects": objects}
        (staging / bucket).mkdir(parents=True)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", []):
                name = urllib.parse.quote(entry["Key"], safe="")
                with open(staging / bucket / name, "wb") as saved_object:
                    shutil.copyfileobj(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"], saved_object)
                objects[name] = entry["Key"]
                saved += 1
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return saved


def load_buckets(s3: Any, src: Path) -> int:
    """Recreate the buckets and objects written by ``save_buckets``; returns how many objects."""
    if not (src / "manifest.json").exists():
        return 0
    existing, loaded = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}, 0
    for bucket, saved in json.loads((src / "manifest.json").read_text()).items():
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        if saved["versioning"]:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": saved["versioning"]})
        for name, key in saved["objects"].items():
            with open(src / bucket / name, "rb") as saved_object:
                s3.put_object(Bucket=bucket, Key=key, Body=saved_object)
            loaded += 1
    return loaded


def seed_data(stack: Stack, *, users: int = 40, uploads: int = 150, seed: int = 20240601) -> dict[str, int]:
    """Fill an empty stack with a believable history; returns what was written."""
    bundler = Bundler(stack, random.Random(seed))
    stack.cache.flushdb()
    stack.queues.flushdb()
    for _ in range(users):
        bundler.pay(bundler.add_user())
    for _ in range(users // 4):
        bundler.pay_x402()
    for number in range(uploads):
        bundler.upload()
        if number % 30 == 29:
            bundler.plan_bundle()
    for _ in range(uploads * 2 // 3):
        bundler.resolve_reservation()
    for _ in range(2):
        bundler.make_permanent()
    for _ in range(uploads // 2):
        bundler.work_queues()
    for _ in range(100):
        bundler.touch_cache()
    for number in range(40):  # long-lived cache entries, so a fresh sandbox always has keys
        stack.cache.set(f"arweave:price:chunk:{number}", str(1000 + number), ex=7 * 24 * 3600)
    return dict(bundler.counts)


# -- invariants --------------------------------------------------------------------------------------


def check_ledger(conn: Any) -> list[Problem]:
    """payment_service: balances equal their audit trail; settled x402 payments were credited once."""
    problems = []
    rows = conn.execute(
        'SELECT u.user_address, u.winston_credit_balance, coalesce(a.total, 0) FROM "user" u '
        "LEFT JOIN (SELECT user_address, sum(winston_credit_amount) AS total FROM audit_log "
        "GROUP BY user_address) a USING (user_address) "
        "WHERE u.winston_credit_balance <> coalesce(a.total, 0) OR u.winston_credit_balance < 0 "
        "ORDER BY 1"
    ).fetchall()
    for address, balance, total in rows:
        problems.append(Problem("ledger", f"user {address}", f"balance {balance} but audit_log sums to {total}"))
    rows = conn.execute(
        "SELECT p.payment_id, p.winc_amount, count(a.audit_id), coalesce(sum(a.winston_credit_amount), 0) "
        "FROM x402_payment p LEFT JOIN audit_log a ON a.change_id = p.payment_id "
        "AND a.change_reason = 'x402_payment' WHERE p.status = 'settled' GROUP BY 1, 2 "
        "HAVING count(a.audit_id) <> 1 OR coalesce(sum(a.winston_credit_amount), 0) <> p.winc_amount "
        "ORDER BY 1"
    ).fetchall()
    for payment_id, winc, credits, credited in rows:
        problems.append(
            Problem(
                "ledger",
                f"x402_payment {payment_id}",
                f"settled for {winc} winc but credited {plural(credits, 'time')}, {credited} winc",
            )
        )
    return problems


def check_data_items(pg_conn: Any, s3_client: Any, bucket: str) -> list[Problem]:
    """upload_service: every data item row has an object of exactly ``byte_count`` bytes, in one table."""
    union = " UNION ALL ".join(f"SELECT data_item_id, byte_count, '{t}' FROM {t}" for t in DATA_ITEM_TABLES)
    rows = pg_conn.execute(union).fetchall()
    sizes: dict[str, int] = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=DATA_ITEM_PREFIX):
        for obj in page.get("Contents", []):
            sizes[obj["Key"][len(DATA_ITEM_PREFIX) :]] = obj["Size"]
    problems, seen = [], {}
    for data_item_id, byte_count, table in rows:
        if data_item_id in seen:
            problems.append(
                Problem("data_items", f"data item {data_item_id}", f"in both {seen[data_item_id]} and {table}")
            )
        seen[data_item_id] = table
        size = sizes.get(data_item_id)
        if size is None:
            problems.append(
                Problem(
                    "data_items",
                    f"data item {data_item_id}",
                    f"row in {table} but no object {DATA_ITEM_PREFIX}{data_item_id} in {bucket}",
                )
            )
        elif size != byte_count:
            problems.append(
                Problem(
                    "data_items",
                    f"data item {data_item_id}",
                    f"byte_count {byte_count} but the object has {size} bytes",
                )
            )
    return problems


def check_queues(source: RedisSource) -> list[Problem]:
    """BullMQ queues, checked by hadr's own queue checks (hadr_backup.redis.queues); a job in ``active``
    is no problem here: the sandbox's workers take no locks."""
    with Connection(Address.of_source(source)) as conn:
        report = queues.check_queues(conn, active_allowed=True).report
    return [Problem("queues", finding.subject, finding.message) for finding in report.problems]


# -- what is in the stack ----------------------------------------------------------------------------


def table_counts(payment_conn: Any, upload_conn: Any) -> dict[str, int]:
    """Rows per table of both databases, keyed ``<database>.<table>``."""
    counts = {}
    for dbname, conn, tables in (
        (PAYMENT_DB, payment_conn, PAYMENT_TABLES),
        (UPLOAD_DB, upload_conn, DATA_ITEM_TABLES),
    ):
        for table in tables:
            counts[f"{dbname}.{table}"] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    return counts


def bucket_counts(s3: Any, buckets: tuple[str, ...]) -> dict[str, int]:
    """Objects and bytes per bucket (current versions), keyed ``<bucket>.objects`` / ``<bucket>.bytes``."""
    counts = {}
    for bucket in buckets:
        objects = size = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objects += len(page.get("Contents", []))
            size += sum(entry["Size"] for entry in page.get("Contents", []))
        counts[f"{bucket}.objects"], counts[f"{bucket}.bytes"] = objects, size
    return counts


def queue_counts(source: RedisSource) -> dict[str, dict[str, int]]:
    """Jobs per state for every queue, e.g. ``{"new-data-item": {"wait": 3, "active": 1, ...}}``."""
    with Connection(Address.of_source(source)) as conn:
        return queues.queue_counts(conn)
