"""The write workload of a bundler: payments, reservations, uploads, bundle planning and queue jobs.

Every operation keeps the seed invariants (``seed.check_*``) true at each commit:
- a balance changes only in the transaction that writes its ``audit_log`` row;
- a data item row is inserted only after its object of ``byte_count`` bytes is stored;
- the queue ``id`` counter is incremented before a job exists, and a job id enters a state list or set
  only in the same MULTI/EXEC that writes (or, when the job leaves for good, deletes) its hash.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DATA_ITEM_PREFIX = "raw-data-item/"
QUEUES = ("new-data-item", "plan-bundle", "prepare-bundle", "post-bundle", "verify-bundle")
WINC_PER_BYTE = 2_000
WINC_PER_UPLOAD = 150_000
COMPLETED_KEPT = 500  # like BullMQ's removeOnComplete: older finished jobs are removed


@dataclass
class Stack:
    """Open connections to one running bundler-like stack."""

    payment: Any  # psycopg connection to payment_service (autocommit)
    upload: Any  # psycopg connection to upload_service (autocommit)
    s3: Any  # boto3 S3 client
    bucket: str  # where data items are stored
    cache: Any  # redis client (cache role)
    queues: Any  # redis client (queue role)

    def close(self) -> None:
        for closeable in (self.payment, self.upload, self.cache, self.queues):
            try:
                closeable.close()
            except Exception:  # closing is best effort
                pass


def arweave_id(rng: random.Random) -> str:
    """A 43-character base64url id, the shape of Arweave addresses and data item ids."""
    return base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")


def queue_key(queue: str, suffix: str) -> str:
    return f"bull:{queue}:{suffix}"


class Bundler:
    """The bundler's writes, one method per business operation; ``counts`` says what was done."""

    def __init__(self, stack: Stack, rng: random.Random | None = None):
        self.stack = stack
        self.rng = rng or random.Random()
        self.counts: Counter[str] = Counter()
        rows = stack.payment.execute('SELECT user_address FROM "user"').fetchall()
        self.users = [row[0] for row in rows]

    # -- payment_service ----------------------------------------------------------------------------

    def add_user(self) -> str:
        if self.rng.random() < 0.2:
            address, kind = "0x" + self.rng.randbytes(20).hex(), "ethereum"
        else:
            address, kind = arweave_id(self.rng), "arweave"
        self.stack.payment.execute(
            'INSERT INTO "user" (user_address, user_address_type) VALUES (%s, %s) ON CONFLICT DO NOTHING',
            (address, kind),
        )
        self.users.append(address)
        self.counts["users"] += 1
        return address

    def _credit(self, user: str, amount: int, reason: str, change_id: str) -> None:
        """Credit a user and write the audit row; the caller holds the transaction."""
        self.stack.payment.execute(
            'UPDATE "user" SET winston_credit_balance = winston_credit_balance + %s WHERE user_address = %s',
            (amount, user),
        )
        self.stack.payment.execute(
            "INSERT INTO audit_log (user_address, winston_credit_amount, change_reason, change_id) "
            "VALUES (%s, %s, %s, %s)",
            (user, amount, reason, change_id),
        )

    def pay(self, user: str | None = None, amount: int | None = None) -> None:
        """A top-up: the payment receipt and the credit commit together."""
        user = user or (self.rng.choice(self.users) if self.users and self.rng.random() < 0.8 else None)
        user = user or self.add_user()
        amount = amount or self.rng.randrange(10**9, 5 * 10**11)
        with self.stack.payment.transaction():
            self._credit(user, amount, "payment", str(uuid.UUID(int=self.rng.getrandbits(128))))
        self.counts["payments"] += 1

    def pay_x402(self) -> None:
        """An x402 payment: recorded, settled and credited in one transaction."""
        user = self.rng.choice(self.users) if self.users else self.add_user()
        payment_id = "0x" + self.rng.randbytes(32).hex()
        usdc = self.rng.randrange(10_000, 5_000_000)  # atomic units, 6 decimals
        winc = usdc * 40_000
        with self.stack.payment.transaction():
            self.stack.payment.execute(
                "INSERT INTO x402_payment (payment_id, user_address, payer_address, network, token, "
                "amount_atomic, winc_amount, status) VALUES (%s, %s, %s, 'base', 'usdc', %s, %s, 'settled')",
                (payment_id, user, "0x" + self.rng.randbytes(20).hex(), usdc, winc),
            )
            self._credit(user, winc, "x402_payment", payment_id)
        self.counts["x402_payments"] += 1

    def _reserve(self, user: str, data_item_id: str, amount: int) -> str | None:
        """Debit ``amount`` into a reservation; None when the balance is short."""
        import psycopg

        reservation_id = str(uuid.UUID(int=self.rng.getrandbits(128)))
        with self.stack.payment.transaction():
            debited = self.stack.payment.execute(
                'UPDATE "user" SET winston_credit_balance = winston_credit_balance - %s '
                "WHERE user_address = %s AND winston_credit_balance >= %s",
                (amount, user, amount),
            )
            if debited.rowcount != 1:
                raise psycopg.Rollback()
            self.stack.payment.execute(
                "INSERT INTO balance_reservation (reservation_id, data_item_id, user_address, "
                "reserved_winc_amount) VALUES (%s, %s, %s, %s)",
                (reservation_id, data_item_id, user, amount),
            )
            self.stack.payment.execute(
                "INSERT INTO audit_log (user_address, winston_credit_amount, change_reason, change_id) "
                "VALUES (%s, %s, 'upload', %s)",
                (user, -amount, data_item_id),
            )
            return reservation_id
        return None

    def resolve_reservation(self) -> None:
        """Finalize the oldest reservation, or (sometimes) refund it back to the user."""
        conn = self.stack.payment
        refund = self.rng.random() < 0.1
        with conn.transaction():
            row = conn.execute(
                "DELETE FROM balance_reservation WHERE reservation_id = (SELECT reservation_id FROM "
                "balance_reservation ORDER BY reserved_date LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "RETURNING reservation_id, data_item_id, user_address, reserved_winc_amount, "
                "reserved_date"
            ).fetchone()
            if row is None:
                return
            if refund:
                self._credit(row[2], row[3], "refund", row[1])
                conn.execute(
                    "INSERT INTO refunded_reservation (reservation_id, data_item_id, user_address, "
                    "reserved_winc_amount, reserved_date, refund_reason) "
                    "VALUES (%s, %s, %s, %s, %s, 'upload failed')",
                    row,
                )
            else:
                conn.execute(
                    "INSERT INTO finalized_reservation (reservation_id, data_item_id, user_address, "
                    "reserved_winc_amount, reserved_date) VALUES (%s, %s, %s, %s, %s)",
                    row,
                )
        self.counts["reservations_refunded" if refund else "reservations_finalized"] += 1

    # -- upload_service + bucket --------------------------------------------------------------------

    def _byte_count(self) -> int:
        if self.rng.random() < 0.9:
            return self.rng.randrange(64, 16 * 1024)
        return self.rng.randrange(16 * 1024, 256 * 1024)

    def upload(self) -> None:
        """Reserve the price, store the object, then insert the row and enqueue it."""
        user = self.rng.choice(self.users) if self.users else self.add_user()
        byte_count = self._byte_count()
        price = byte_count * WINC_PER_BYTE + WINC_PER_UPLOAD
        data_item_id = arweave_id(self.rng)
        if self._reserve(user, data_item_id, price) is None:
            self.pay(user, price * self.rng.randrange(5, 50))
            if self._reserve(user, data_item_id, price) is None:
                return
        self.stack.s3.put_object(
            Bucket=self.stack.bucket,
            Key=DATA_ITEM_PREFIX + data_item_id,
            Body=self.rng.randbytes(byte_count),
            ContentType="application/octet-stream",
        )
        self.stack.upload.execute(
            "INSERT INTO new_data_item (data_item_id, owner_public_address, byte_count, "
            "assessed_winston_price, signature_type, content_type) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                data_item_id,
                user,
                byte_count,
                price,
                1 if not user.startswith("0x") else 3,
                self.rng.choice(("application/json", "image/png", "text/plain", "application/octet-stream")),
            ),
        )
        self.add_job("new-data-item", {"dataItemId": data_item_id, "byteCount": byte_count})
        self.counts["uploads"] += 1
        self.counts["bytes_uploaded"] += byte_count

    def plan_bundle(self) -> None:
        """Move the oldest new data items into one bundle plan."""
        plan_id = str(uuid.UUID(int=self.rng.getrandbits(128)))
        moved = self.stack.upload.execute(
            "WITH moved AS (DELETE FROM new_data_item WHERE data_item_id IN (SELECT data_item_id FROM "
            "new_data_item ORDER BY uploaded_date LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *) "
            "INSERT INTO planned_data_item (data_item_id, owner_public_address, byte_count, uploaded_date, "
            "assessed_winston_price, signature_type, content_type, plan_id) SELECT data_item_id, "
            "owner_public_address, byte_count, uploaded_date, assessed_winston_price, signature_type, "
            "content_type, %s FROM moved",
            (self.rng.randrange(5, 40), plan_id),
        ).rowcount
        self.add_job("plan-bundle", {"trigger": "cron"})
        if moved:
            self.add_job("prepare-bundle", {"planId": plan_id, "dataItemCount": moved})
            self.counts["bundles_planned"] += 1

    def make_permanent(self) -> None:
        """A posted bundle got confirmed: its plan's items become permanent."""
        row = self.stack.upload.execute(
            "SELECT plan_id FROM planned_data_item ORDER BY planned_date LIMIT 1"
        ).fetchone()
        if row is None:
            return
        bundle_id = arweave_id(self.rng)
        self.stack.upload.execute(
            "WITH moved AS (DELETE FROM planned_data_item WHERE plan_id = %s RETURNING *) "
            "INSERT INTO permanent_data_item (data_item_id, owner_public_address, byte_count, uploaded_date, "
            "assessed_winston_price, signature_type, content_type, plan_id, planned_date, bundle_id, "
            "block_height) SELECT data_item_id, owner_public_address, byte_count, uploaded_date, "
            "assessed_winston_price, signature_type, content_type, plan_id, planned_date, %s, %s FROM moved",
            (row[0], bundle_id, 1_500_000 + self.counts["bundles_permanent"]),
        )
        self.add_job("post-bundle", {"planId": row[0], "bundleId": bundle_id})
        self.add_job("verify-bundle", {"planId": row[0], "bundleId": bundle_id})
        self.counts["bundles_permanent"] += 1

    # -- queues (BullMQ layout) and cache -----------------------------------------------------------

    def add_job(self, queue: str, data: dict[str, Any]) -> str:
        redis = self.stack.queues
        job_id = str(redis.incr(queue_key(queue, "id")))
        now = int(time.time() * 1000)
        pipe = redis.pipeline(transaction=True)
        pipe.hset(
            queue_key(queue, job_id),
            mapping={
                "name": queue,
                "data": json.dumps(data),
                "opts": json.dumps({"attempts": 3, "removeOnFail": False}),
                "timestamp": now,
                "delay": 0,
                "priority": 0,
                "attemptsMade": 0,
            },
        )
        pipe.lpush(queue_key(queue, "wait"), job_id)
        pipe.execute()
        self.counts["jobs_added"] += 1
        return job_id

    def work_queues(self, steps: int = 3) -> None:
        """Workers at work: a few job moves on queues that have jobs waiting or active."""
        pipe = self.stack.queues.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue_key(queue, "wait"))
            pipe.llen(queue_key(queue, "active"))
        lengths = pipe.execute()
        busy = [q for i, q in enumerate(QUEUES) if lengths[2 * i] or lengths[2 * i + 1]]
        for _ in range(steps if busy else 0):
            self.work_queue(self.rng.choice(busy))

    def work_queue(self, queue: str) -> None:
        """One worker step on ``queue``: take a waiting job, or finish an active one (completed or failed)."""
        redis = self.stack.queues
        now = int(time.time() * 1000)
        active = redis.lrange(queue_key(queue, "active"), -1, -1)
        if active and (self.rng.random() < 0.6 or not redis.llen(queue_key(queue, "wait"))):
            job_id = active[0].decode()
            failed = self.rng.random() < 0.05
            state, field = ("failed", "failedReason") if failed else ("completed", "returnvalue")
            pipe = redis.pipeline(transaction=True)
            pipe.lrem(queue_key(queue, "active"), 1, job_id)
            pipe.zadd(queue_key(queue, state), {job_id: now})
            pipe.hset(
                queue_key(queue, job_id),
                mapping={"finishedOn": now, field: "timeout" if failed else "null", "attemptsMade": 1},
            )
            pipe.execute()
            self.counts[f"jobs_{state}"] += 1
            self._trim_completed(queue)
            return
        self.start_job(queue)

    def start_job(self, queue: str) -> str | None:
        """A worker takes the next waiting job (BullMQ's moveToActive: the right end of wait)."""
        redis = self.stack.queues
        job_id = redis.lmove(queue_key(queue, "wait"), queue_key(queue, "active"), "RIGHT", "LEFT")
        if job_id is None:
            return None
        redis.hset(queue_key(queue, job_id.decode()), "processedOn", int(time.time() * 1000))
        self.counts["jobs_started"] += 1
        return job_id.decode()

    def _trim_completed(self, queue: str) -> None:
        redis = self.stack.queues
        excess = redis.zcard(queue_key(queue, "completed")) - COMPLETED_KEPT
        if excess <= 0:
            return
        oldest = [j.decode() for j in redis.zrange(queue_key(queue, "completed"), 0, excess - 1)]
        pipe = redis.pipeline(transaction=True)
        pipe.zrem(queue_key(queue, "completed"), *oldest)
        pipe.delete(*(queue_key(queue, job_id) for job_id in oldest))
        pipe.execute()
        self.counts["jobs_removed"] += len(oldest)

    def touch_cache(self) -> None:
        cache = self.stack.cache
        if self.users and self.rng.random() < 0.5:
            user = self.rng.choice(self.users)
            cache.set(f"balance:{user}", str(self.rng.randrange(10**12)), ex=3600)
        elif self.rng.random() < 0.5:
            cache.set(f"price:bytes:{self.rng.randrange(1, 10**7)}", str(self.rng.randrange(10**9)), ex=600)
        else:
            key = f"rate-limit:10.0.{self.rng.randrange(256)}.{self.rng.randrange(256)}"
            cache.incr(key)
            cache.expire(key, 60)
        self.counts["cache_writes"] += 1

    # -- the mix ------------------------------------------------------------------------------------

    OPERATIONS = (
        ("upload", 35),
        ("work_queues", 25),
        ("pay", 10),
        ("resolve_reservation", 12),
        ("touch_cache", 8),
        ("plan_bundle", 4),
        ("pay_x402", 3),
        ("make_permanent", 3),
    )

    def step(self) -> str:
        names, weights = zip(*self.OPERATIONS, strict=True)
        name = self.rng.choices(names, weights)[0]
        getattr(self, name)()
        self.counts["operations"] += 1
        return name


def run_workload(
    bundler: Bundler,
    *,
    seconds: float,
    rate: float,
    should_stop: Callable[[], bool] = lambda: False,
    on_tick: Callable[[], None] = lambda: None,
) -> bool:
    """Run ``rate`` operations per second for ``seconds``; returns True when stopped early.
    ``on_tick()`` is called after each operation and every 50 ms between them (for progress)."""
    deadline = time.monotonic() + seconds
    interval = 1.0 / rate
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        if should_stop():
            return True
        bundler.step()
        on_tick()
        next_at = max(next_at + interval, time.monotonic() - 1.0)  # do not burst to catch up
        while not should_stop() and time.monotonic() < min(next_at, deadline):
            time.sleep(min(0.05, max(0.0, next_at - time.monotonic())))
            on_tick()
    return should_stop()
