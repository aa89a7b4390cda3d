"""Background side: the Celery app, the job pipeline, and the torch code it runs."""
