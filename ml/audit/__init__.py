"""The audit of a model version: attacks, scores against the retrained reference, the report.

Importing this package registers every attack (``ml.audit.attacks``).
"""

from ml.audit.attacks import Attack, AttackInputs, get_attack, list_attacks, register_attack
from ml.audit.outputs import Outputs, outputs_of
from ml.audit.report import audit_version, evidence_statement, train_references
from ml.audit.scores import AuditTolerances, average_disparity, frm, verdict

__all__ = [
    "Attack",
    "AttackInputs",
    "AuditTolerances",
    "Outputs",
    "audit_version",
    "average_disparity",
    "evidence_statement",
    "frm",
    "get_attack",
    "list_attacks",
    "outputs_of",
    "register_attack",
    "train_references",
    "verdict",
]
