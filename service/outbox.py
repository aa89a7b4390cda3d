"""Nudges to the background workers: task names, their queues, and the one way to send them.

A message carries only an id; the row it names is the truth (docs/architecture.md, rule 1),
and it is sent only after the transaction that wrote the row commits (``db.on_commit``).
The service decides *what* to send; *how* it travels is the runtime's business, installed
at start-up with :func:`install_sender`: Celery over the broker in production, the
in-process runner in the embedded default (``workers.runtime``). So the domain never
imports the code that executes its jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import update

from service.db import session_scope
from service.enums import JobKind
from service.tables import Job, utcnow

__all__ = [
    "RUN_JOB",
    "DISPATCH",
    "SWEEP",
    "QUEUES",
    "Sender",
    "install_sender",
    "broker_status",
    "queue_for",
    "enqueue_job",
    "enqueue_dispatch",
    "enqueue_callback",
]

log = logging.getLogger(__name__)

RUN_JOB, DISPATCH, SWEEP = "unlearnd.run_job", "unlearnd.dispatch", "unlearnd.sweep"
DELIVER_CALLBACK = "unlearnd.deliver_callback"
GPU, AUDIT, CONTROL, CALLBACKS = "gpu", "audit", "control", "callbacks"
# Callbacks have their own queue: a slow receiver never holds up a job or the dispatcher.
QUEUES = (GPU, AUDIT, CONTROL, CALLBACKS)
# Audits have their own queue so that they never hold up the next deletion batch; a
# dataset's registration (files read, no GPU) runs there too, off the GPU queue and off
# the control queue, whose dispatches and sweeps must not wait a minute behind it.
JOB_QUEUES: dict[JobKind, str] = {JobKind.AUDIT: AUDIT, JobKind.REGISTER: AUDIT}

# (task name, args, queue) -> the transport's message id, if it has one.
Sender = Callable[[str, list[str], str], str | None]


def _no_sender(task: str, args: list[str], queue: str) -> str | None:
    raise RuntimeError(f"no task sender is installed; {task}{tuple(args)} was not sent")


_sender: Sender = _no_sender
_probe: Callable[[], None] | None = None


def install_sender(sender: Sender, *, probe: Callable[[], None] | None = None) -> None:
    """Route every later message through ``sender`` (called once at process start).
    ``probe`` raises when the broker behind it is unreachable; None: no broker."""
    global _sender, _probe
    _sender, _probe = sender, probe


def broker_status() -> str:
    """``ok`` or ``down`` for the broker messages cross; ``embedded`` when they stay in
    this process."""
    if _probe is None:
        return "embedded"
    try:
        _probe()
    except Exception:
        return "down"
    return "ok"


def queue_for(kind: str) -> str:
    return JOB_QUEUES.get(JobKind(kind), GPU)


def enqueue_job(job_id: str, kind: str) -> None:
    """Send a job to its queue and note the message id on the row. Never raises: a job
    whose message is lost stays ``queued`` and the sweeper sends it again."""
    try:
        message_id = _sender(RUN_JOB, [job_id], queue_for(kind))
        with session_scope() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(celery_task_id=message_id, enqueued_at=utcnow())
            )
    except Exception:
        log.exception("could not enqueue job %s; the sweeper will retry", job_id)


def enqueue_dispatch(model_id: str | None = None) -> None:
    """Ask for the batching policy to run now (one model, or all). Never raises: beat
    dispatches on its next tick anyway."""
    try:
        _sender(DISPATCH, [model_id] if model_id else [], CONTROL)
    except Exception:
        log.exception("could not enqueue a dispatch; beat will dispatch on its next tick")


def enqueue_callback(delivery_id: str) -> None:
    """Ask for a callback delivery attempt. Never raises: the sweeper re-sends due ones."""
    try:
        _sender(DELIVER_CALLBACK, [delivery_id], CALLBACKS)
    except Exception:
        log.exception("could not enqueue callback delivery %s; the sweeper will", delivery_id)
