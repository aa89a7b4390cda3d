"""The ingest path's promises under concurrency, through real ``unlearnd serve`` processes
on Postgres (service.deletion_requests.ingest): group commit never weakens idempotency
(across processes too), a request is unaffected by its batch-mates' problems, and a
database failure mid-batch answers the whole batch 503 and stores none of it. Plus the
same domain code on the embedded SQLite default, and the Postgres storage's own SQL held
to the SQLAlchemy reference."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from service.subjects import subject_digest
from service.tables import DeletionRequest
from tests.helpers.app import create_dataset, create_model, make_key, train_keys
from tests.helpers.network import free_port
from tests.helpers.processes import Processes, wait_for

pytestmark = pytest.mark.postgres
ADMIN_KEY = "ingest-test-" + uuid.uuid4().hex


class Served:
    def __init__(
        self, bases: list[str], model: dict[str, Any], train: list[str], holdout: list[str]
    ):
        self.bases, self.model, self.train, self.holdout = bases, model, train, holdout
        self.headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def body(self, keys: list[str], subject: str) -> dict[str, Any]:
        return {"model_id": self.model["id"], "subject_id": subject, "sample_keys": keys}


def _serve(env: dict[str, str], redis_url: str, tmp_path, processes: int, wait_ms: int) -> Any:
    settings = {
        **env,
        "broker_url": redis_url,  # no embedded worker: nothing trains in the served process
        "bootstrap_admin_key": ADMIN_KEY,
        "rate_limit_per_second": "0",
        "ingest_batch_wait_ms": str(wait_ms),
    }
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    running = Processes(settings, logs)
    bases: list[str] = []

    def up() -> bool:
        try:
            return all(httpx.get(f"{base}/healthz").status_code == 200 for base in bases)
        except httpx.HTTPError:
            return False

    # One after another: each start installs the bootstrap key (a one-time write).
    for _ in range(processes):
        port = free_port()
        running.start("serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log")
        bases.append(f"http://127.0.0.1:{port}")
        try:
            wait_for(up, 90, "serve")
        except AssertionError:
            running.stop_all()
            raise AssertionError(running.logs()) from None
    return running, bases


def _prepare(base: str) -> tuple[dict[str, Any], list[str], list[str]]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as api:
        dataset = api.post(
            "/v1/datasets",
            json={"name": "digits", "source": {"kind": "builtin", "name": "sklearn-digits"}},
        ).json()
        model = api.post(
            "/v1/models",
            json={
                "name": "m",
                "dataset_id": dataset["id"],
                "architecture": {"name": "mlp", "params": {"hidden": [16]}},
            },
        ).json()
        keys = {}
        for split in ("train", "holdout"):
            page = api.get(
                f"/v1/datasets/{dataset['id']}/samples", params={"split": split, "limit": 500}
            ).json()
            keys[split] = [item["key"] for item in page["items"]]
    return model, keys["train"], keys["holdout"]


@pytest.fixture
def served(env, redis_url, tmp_path, request) -> Iterator[Served]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()  # the queued training jobs land here
    processes, wait_ms = getattr(request, "param", (2, 0))
    running, bases = _serve(env, redis_url, tmp_path, processes, wait_ms)
    try:
        yield Served(bases, *_prepare(bases[0]))
    finally:
        running.stop_all()


def _post_all(
    served: Served, calls: list[tuple[dict[str, Any], str | None]]
) -> list[httpx.Response]:
    """Send every call at once, spread over the served processes."""

    async def go() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        clients = [
            httpx.AsyncClient(base_url=base, headers=served.headers, timeout=60, limits=limits)
            for base in served.bases
        ]
        try:
            return await asyncio.gather(
                *(
                    clients[i % len(clients)].post(
                        "/v1/deletion-requests",
                        json=body,
                        headers={"Idempotency-Key": key} if key else {},
                    )
                    for i, (body, key) in enumerate(calls)
                )
            )
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(go())


def _subject_digest(env: dict[str, str], model_id: str, subject: str) -> str:
    """What the service stores for ``subject`` asked of this model (its tenant's key)."""
    engine = create_engine(env["database_url"])
    with engine.connect() as connection:
        key = connection.scalar(
            text(
                "SELECT t.subject_key FROM tenants t JOIN models m ON m.tenant_id = t.id "
                "WHERE m.id = :id"
            ),
            {"id": model_id},
        )
    engine.dispose()
    return subject_digest(key, subject)


def _stored(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str], int]:
    """(request id -> subject digest, idempotency key -> request id, request events)"""
    engine = create_engine(env["database_url"])
    with engine.connect() as connection:
        requests = {
            r[0]: r[1]
            for r in connection.execute(text("SELECT id, subject_digest FROM deletion_requests"))
        }
        keys = {
            r[0]: r[1]
            for r in connection.execute(text("SELECT key, request_id FROM idempotency_keys"))
        }
        events = connection.scalar(text("SELECT count(*) FROM request_events"))
    engine.dispose()
    return requests, keys, int(events or 0)


def test_concurrent_posts_store_each_key_once_across_processes(served, env):
    rng = random.Random(7)
    calls: list[tuple[dict[str, Any], str | None]] = []
    for n in range(80):  # 80 keys, each sent 2-4 times; every fourth also with another body
        body = served.body(rng.sample(served.train, 2), f"subject-{n}")
        calls += [(body, f"key-{n}")] * rng.randint(2, 4)
        if n % 4 == 0:
            calls.append((served.body(rng.sample(served.train, 1), f"other-{n}"), f"key-{n}"))
    calls += [(served.body([served.train[n]], f"plain-{n}"), None) for n in range(60)]
    rng.shuffle(calls)
    assert len(calls) > 250

    answers = _post_all(served, calls)

    by_key: dict[str, list[tuple[dict[str, Any], httpx.Response]]] = defaultdict(list)
    plain = []
    for (body, key), answer in zip(calls, answers, strict=True):
        assert answer.status_code in (202, 422), answer.text
        if key is None:
            assert answer.status_code == 202, answer.text
            plain.append(answer.json()["id"])
        else:
            by_key[key].append((body, answer))
    first: dict[str, str] = {}
    for key, sent in by_key.items():
        won = [(body, answer) for body, answer in sent if answer.status_code == 202]
        assert won, f"{key}: no call was accepted"
        winner = won[0][0]
        # Every 202 is the first answer, byte for byte; every 422 had another body.
        assert all(answer.json() == won[0][1].json() for _, answer in won)
        assert all(body == winner for body, _ in won)
        for body, answer in sent:
            if answer.status_code == 422:
                assert body != winner and "Idempotency-Key" in answer.json()["detail"]
        assert won[0][1].json()["subject_digest"] == _subject_digest(
            env, served.model["id"], winner["subject_id"]
        )
        first[key] = won[0][1].json()["id"]

    requests, keys, events = _stored(env)
    assert keys == first  # each key stored once, pointing at the answered request
    assert set(requests) == set(first.values()) | set(plain)  # nothing else stored
    assert len(requests) == 80 + 60 and events == len(requests)


@pytest.mark.parametrize("served", [(1, 300)], indirect=True)  # one batch for a burst
def test_a_request_is_unaffected_by_its_batch_mates(served, env, key_for):
    other_tenant = key_for(["admin"], tenant="other")
    with httpx.Client(base_url=served.bases[0], headers=other_tenant, timeout=60) as api:
        foreign_dataset = api.post(
            "/v1/datasets",
            json={"name": "d", "source": {"kind": "builtin", "name": "sklearn-digits"}},
        ).json()
        foreign = api.post(
            "/v1/models",
            json={
                "name": "f",
                "dataset_id": foreign_dataset["id"],
                "architecture": {"name": "mlp", "params": {"hidden": [16]}},
            },
        ).json()
    good = [(served.body([served.train[n]], f"good-{n}"), None) for n in range(20)]
    bad = [
        (served.body(["no/such/key"], "bad-unknown"), None),
        (served.body([served.holdout[0]], "bad-holdout"), None),
        (served.body([served.train[30], served.train[30]], "bad-duplicated"), None),
        ({**served.body([served.train[31]], "bad-foreign"), "model_id": foreign["id"]}, None),
        ({**served.body([served.train[32]], "bad-missing"), "model_id": "nope"}, None),
        ({**served.body([served.train[33]], "bad-both"), "class_labels": [1]}, None),
    ]
    calls = good + bad
    order = list(range(len(calls)))
    random.Random(3).shuffle(order)
    answers = dict(zip(order, _post_all(served, [calls[i] for i in order]), strict=True))

    statuses = [answers[i].status_code for i in range(len(calls))]
    assert statuses[:20] == [202] * 20
    assert statuses[20:] == [422, 422, 422, 404, 404, 422]
    assert answers[20].json()["unknown"] == ["no/such/key"]
    assert answers[21].json()["not_training"] == [served.holdout[0]]
    # The good ones shared one transaction (a batch stamps its requests with one time).
    assert len({answers[i].json()["created_at"] for i in range(20)}) == 1
    requests, _, _ = _stored(env)
    good_digests = [_subject_digest(env, served.model["id"], f"good-{n}") for n in range(20)]
    assert sorted(requests.values()) == sorted(good_digests)


@pytest.mark.parametrize("served", [(1, 300)], indirect=True)
def test_a_database_failure_mid_batch_answers_the_batch_503_and_stores_none(served, env):
    engine = create_engine(env["database_url"])
    # The database fails while the batch inserts one particular request (after the others
    # of the batch were written in the same transaction).
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION ingest_poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.subject_digest = '{_subject_digest(env, served.model['id'], 'poison')}' "
                "THEN RAISE EXCEPTION 'injected failure' "
                "USING ERRCODE = 'XX000'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER ingest_poison BEFORE INSERT ON deletion_requests "
                "FOR EACH ROW EXECUTE FUNCTION ingest_poison()"
            )
        )
    try:
        calls = [(served.body([served.train[n]], f"mate-{n}"), f"k-{n}") for n in range(15)]
        calls.append((served.body([served.train[40]], "poison"), "k-poison"))
        answers = _post_all(served, calls)
        assert [answer.status_code for answer in answers] == [503] * len(calls)
        assert all(answer.headers["retry-after"] for answer in answers)
        assert _stored(env) == ({}, {}, 0)
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER ingest_poison ON deletion_requests"))
            connection.execute(text("DROP FUNCTION ingest_poison()"))
        engine.dispose()
    # Retried, the same calls are stored, each once.
    again = _post_all(served, calls)
    assert [answer.status_code for answer in again] == [202] * len(calls)
    requests, keys, _ = _stored(env)
    assert len(requests) == len(keys) == len(calls)


def test_the_postgres_storage_answers_and_writes_as_the_reference_does(client, admin):
    """PostgresStorage's own SQL against BatchStorage's SQLAlchemy queries (the reference,
    which SQLite runs), on the same Postgres transaction: the same answers to every
    question, and the same rows written."""
    from datetime import timedelta

    from service.db import session_scope
    from service.deletion_requests.storage import BatchStorage, PostgresStorage
    from service.tables import IdempotencyKey, RequestEvent, Sample, Tombstone, utcnow

    dataset = create_dataset(client, admin)
    model = create_model(client, admin, dataset["id"])
    train = train_keys(client, admin, dataset["id"], 4)
    holdout = client.get(
        f"/v1/datasets/{dataset['id']}/samples",
        params={"split": "holdout", "limit": 1},
        headers=admin,
    ).json()["items"][0]["key"]
    body = {"model_id": model["id"], "subject_id": "s", "sample_keys": train[:1]}
    first = client.post(
        "/v1/deletion-requests", headers={**admin, "Idempotency-Key": "k1"}, json=body
    )
    assert first.status_code == 202, first.text
    with session_scope() as session:
        request = session.get(DeletionRequest, first.json()["id"])
        assert request is not None
        tenant = request.tenant_id
        forgotten = session.scalar(
            select(Sample.id).where(Sample.dataset_id == dataset["id"], Sample.key == train[1])
        )
        session.add(
            Tombstone(
                model_id=model["id"], sample_id=forgotten, request_id=request.id, version_number=1
            )
        )
        session.flush()
        reference, postgres = BatchStorage(session), PostgresStorage(session)

        wanted = [(model["id"], key) for key in [*train, holdout, "no/such/key"]]
        wanted.append(("no-such-model", train[0]))
        samples = postgres.samples(wanted)
        assert samples == reference.samples(wanted)
        assert len(samples) == 5 and samples[model["id"], train[1]].forgotten
        assert samples[model["id"], holdout].split == "holdout"
        ids = [model["id"], "no-such-model"]
        assert postgres.models(ids) == reference.models(ids)
        assert list(postgres.models(ids)) == [model["id"]]
        pairs = [(tenant, "k1"), (tenant, "k2"), ("other", "k1")]
        assert postgres.replays(pairs) == reference.replays(pairs)
        assert postgres.replays(pairs)[tenant, "k1"].response == first.json()

        now = utcnow()
        written = {}
        for name, store in (("reference", reference), ("postgres", postgres)):
            row = {
                "id": f"request-{name}",
                "tenant_id": tenant,
                "model_id": model["id"],
                "subject_digest": "0" * 64,
                "sample_keys": None if name == "reference" else train[2:],
                "class_labels": [3] if name == "reference" else None,
                "already_forgotten": [],
                "sample_count": 7,
                "callback_url": None,
                "status": "pending",
                "job_id": None,
                "result_version": None,
                "error": None,
                "created_at": now,
                "updated_at": now,
                "due_at": now + timedelta(days=30),
                "completed_at": None,
            }
            claim = {
                "tenant_id": tenant,
                "key": f"key-{name}",
                "body_sha256": "0" * 64,
                "request_id": row["id"],
                "response": {"status": "pending", "sample_count": 7},
                "created_at": now,
            }
            assert store.write([row], [claim])
            assert not store.write([], [{**claim, "request_id": request.id}])  # taken: a race
            stored = session.get(DeletionRequest, row["id"])
            key = session.get(IdempotencyKey, (tenant, claim["key"]))
            events = session.scalars(
                select(RequestEvent).where(RequestEvent.request_id == row["id"])
            ).all()
            assert stored is not None and key is not None and len(events) == 1
            written[name] = (
                {column: getattr(stored, column) for column in row if column != "id"},
                (key.body_sha256, key.response, key.created_at),
                (events[0].status, events[0].detail, events[0].at),
            )
        reference_row = written["reference"][0]
        assert reference_row["sample_keys"] is None and reference_row["class_labels"] == [3]
        postgres_row = written["postgres"][0]
        assert postgres_row["sample_keys"] == train[2:] and postgres_row["class_labels"] is None
        swapped = {**postgres_row, "sample_keys": None, "class_labels": [3]}
        assert swapped == reference_row
        assert written["postgres"][1:] == written["reference"][1:]
        session.rollback()


def test_the_embedded_default_ingests_through_the_same_path(sqlite_env):
    from service.app import create_app

    admin = make_key(["admin"])
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        dataset = create_dataset(client, admin)
        model = client.post(
            "/v1/models",
            headers=admin,
            json={
                "name": "m",
                "dataset_id": dataset["id"],
                "architecture": {"name": "mlp", "params": {"hidden": [16]}},
            },
        ).json()
        keys = train_keys(client, admin, dataset["id"], 3)
        body = {"model_id": model["id"], "subject_id": "s", "sample_keys": keys[:2]}
        headers = {**admin, "Idempotency-Key": "once"}
        first = client.post("/v1/deletion-requests", headers=headers, json=body)
        again = client.post("/v1/deletion-requests", headers=headers, json=body)
        other = client.post(
            "/v1/deletion-requests", headers=headers, json={**body, "subject_id": "t"}
        )
        assert (first.status_code, again.status_code, other.status_code) == (202, 202, 422)
        assert first.json() == again.json()
        assert first.headers["location"] == f"/v1/deletion-requests/{first.json()['id']}"
        bulk = client.post(
            "/v1/deletion-requests:bulk",
            headers=admin,
            json={"requests": [{**body, "sample_keys": keys[2:]}, {**body, "sample_keys": ["x"]}]},
        ).json()
        assert len(bulk["accepted"]) == 1 and bulk["rejected"][0]["index"] == 1
        listed = client.get("/v1/deletion-requests", headers=admin).json()["items"]
        assert len(listed) == 2


def test_the_benchmark_rewrites_only_its_section(tmp_path):
    from benchmarks.api_ingest import MARK_END, MARK_START, write_docs

    docs = tmp_path / "benchmarks.md"
    write_docs("| first |", docs)  # a missing file is created with the section
    assert docs.read_text().count(MARK_START) == 1 and "| first |" in docs.read_text()
    docs.write_text("# B\n\nbefore\n\n" + docs.read_text().split("\n", 1)[1] + "\nafter\n")
    write_docs("| second |", docs)
    text = docs.read_text()
    assert "| first |" not in text and "| second |" in text
    assert (
        text.index("before") < text.index(MARK_START) < text.index(MARK_END) < text.index("after")
    )
