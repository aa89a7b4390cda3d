"""The runtime: the processes that run the service and its background work (the CLI, the
Celery app and tasks, the embedded runner), and what a worker does with a job (claim and
lease, inputs, one runner per job kind). It builds on ``service`` and ``ml``; neither of
them imports it (docs/architecture.md)."""
