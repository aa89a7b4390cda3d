"""The machine-learning side: torch and NumPy only, no database, no HTTP, no Celery.

Registries of architectures, dataset adapters, unlearners and attacks; training and
evaluation loops; the audit's maths. ``service`` validates configuration against these
registries; ``workers`` runs them on a job's data.
"""
