"""A product backend knows a user id, not sample keys: a request may name the subject
alone, and the service forgets every active training sample of that subject in the
model's dataset (a manifest with a ``subject`` column), found by its keyed digest. A
subject with no samples completes at once as "nothing to forget"; a dataset without
subjects answers 422."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from service.db import session_scope
from service.jobs import dispatch
from service.tables import DeletionRequest, Sample
from tests.helpers.app import configure, create_model, run_queued_jobs
from tests.helpers.own_data import write_csv, write_pngs

PEOPLE = 7


def _people_model(client, admin, root: Path) -> tuple[dict, dict]:
    rows = [row | {"subject": f"person-{i % PEOPLE}"} for i, row in enumerate(write_pngs(root))]
    write_csv(root / "people.csv", rows)
    response = client.post(
        "/v1/datasets",
        headers=admin,
        json={
            "name": "people",
            "source": {"kind": "manifest", "path": "people.csv"},
            "holdout_fraction": 0.25,
        },
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    return dataset, model


def _training_keys_of(dataset_id: str, person: int) -> list[str]:
    with session_scope() as session:
        rows = session.execute(
            select(Sample.key, Sample.split)
            .where(Sample.dataset_id == dataset_id)
            .order_by(Sample.position)
        ).all()
    own = {f"digit-{i:03d}" for i in range(person, 80, PEOPLE)}
    return [key for key, split in rows if key in own and split == "train"]


def _by_subject(client, admin, model_id: str, subject: str):
    return client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={"model_id": model_id, "subject_id": subject},
    )


def test_a_subject_alone_forgets_every_training_sample_of_theirs(client, admin, env):
    dataset, model = _people_model(client, admin, Path(env["data_root"]))
    expected = _training_keys_of(dataset["id"], 3)
    assert 5 <= len(expected) < 12  # holdout samples of person-3 are not in the model

    answer = _by_subject(client, admin, model["id"], "person-3")
    assert answer.status_code == 202, answer.text
    request = answer.json()
    assert request["sample_count"] == len(expected) and request["sample_keys"] == expected
    client.post(f"/v1/models/{model['id']}/flush", headers=admin)
    assert dispatch.dispatch_model(model["id"]) is not None
    run_queued_jobs(model["id"])
    done = client.get(f"/v1/deletion-requests/{request['id']}", headers=admin).json()
    assert done["status"] == "completed" and done["result_version"] == 2
    forgotten = client.get(
        f"/v1/datasets/{dataset['id']}/samples", headers=admin, params={"state": "forgotten"}
    ).json()
    assert sorted(s["key"] for s in forgotten["items"]) == sorted(expected)

    # Asked again (spaces around an id are not part of it), every sample is gone already:
    # completed at once, no new version.
    again = _by_subject(client, admin, model["id"], " person-3 ").json()
    assert again["status"] == "completed" and again["already_forgotten"] == expected


def test_a_subject_without_samples_has_nothing_to_forget_and_says_so(client, admin, env):
    _, model = _people_model(client, admin, Path(env["data_root"]))
    answer = _by_subject(client, admin, model["id"], "nobody")
    assert answer.status_code == 202, answer.text
    request = answer.json()
    assert request["status"] == "completed" and request["sample_count"] == 0
    assert request["history"][-1]["detail"].startswith("nothing to forget")
    certificate = client.get(
        f"/v1/deletion-requests/{request['id']}/certificate", headers=admin
    ).json()
    assert certificate["evidence"].startswith("nothing to forget")
    # The model did not change: no job, and the version it stayed at before and after.
    assert certificate["job"] is None
    assert certificate["version_before"]["number"] == certificate["version_after"]["number"] == 1


def test_a_subject_with_more_samples_than_a_request_may_name_is_413(
    client, admin, env, monkeypatch
):
    _, model = _people_model(client, admin, Path(env["data_root"]))
    configure(monkeypatch, max_keys_per_request=3)
    answer = _by_subject(client, admin, model["id"], "person-3")
    assert answer.status_code == 413, answer.text
    assert "the subject has" in answer.json()["detail"] and "at most 3" in answer.json()["detail"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(DeletionRequest)) == 0


def test_a_dataset_without_subjects_refuses_a_subject_alone(client, admin, ready_model):
    answer = _by_subject(client, admin, ready_model["id"], "person-3")
    assert answer.status_code == 422, answer.text
    assert "records no subjects" in answer.json()["detail"]
    both = client.post(
        "/v1/deletion-requests",
        headers=admin,
        json={
            "model_id": ready_model["id"],
            "subject_id": "s",
            "sample_keys": ["x"],
            "class_labels": [1],
        },
    )
    assert both.status_code == 422 and "at most one" in both.text
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(DeletionRequest)) == 0


def test_a_bulk_of_subjects_is_resolved_with_a_fixed_number_of_queries(client, admin, env):
    # Every subject's samples are read together: seven subjects, or two, cost the same
    # queries on the samples table (they were two each). Both batches hold one subject
    # without samples (completed at once, which reads samples of its own).
    dataset, model = _people_model(client, admin, Path(env["data_root"]))
    engine = Engine  # every engine: the API's async one included

    def sample_queries(subjects: list[str]) -> tuple[int, list[dict]]:
        seen: list[str] = []

        def count(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
            if "FROM samples" in statement or "JOIN samples" in statement:
                seen.append(statement)

        event.listen(engine, "before_cursor_execute", count)
        try:
            requests = [{"model_id": model["id"], "subject_id": s} for s in subjects]
            answer = client.post(
                "/v1/deletion-requests:bulk", headers=admin, json={"requests": requests}
            )
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert answer.status_code == 200, answer.text
        assert answer.json()["rejected"] == []
        return len(seen), answer.json()["accepted"]

    two, _ = sample_queries(["person-0", "no-one"])
    seven, accepted = sample_queries([f"person-{i}" for i in range(1, PEOPLE)] + ["nobody"])
    assert 0 < seven == two
    assert len(accepted) == PEOPLE and min(r["sample_count"] for r in accepted) == 0  # nobody
    for person in range(1, PEOPLE):
        keys = _training_keys_of(dataset["id"], person)
        assert any(r["sample_keys"] == keys for r in accepted), person
