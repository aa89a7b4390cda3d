from fastapi import APIRouter

from service import audit_log
from service.api.conditional import polled
from service.api.deps import CurrentCaller, Limit, SessionDep, VersionNumber, require
from service.api.openapi import conflict
from service.audits import service
from service.audits.schemas import (
    AuditCreate,
    AuditRead,
    Certificate,
    ChainVerification,
    LogEntry,
    SigningKey,
)
from service.changes import Topic
from service.enums import Scope
from service.errors import NotFound
from service.jobs import service as jobs
from service.jobs.schemas import JobRead
from service.schemas import Page

router = APIRouter(tags=["audit"])


@router.get(
    "/v1/models/{model_id}/versions/{number}/audit",
    response_model=AuditRead,
    **polled(Topic.AUDITS, scope=Scope.AUDIT_READ),
)
def get_audit(
    model_id: str, number: VersionNumber, session: SessionDep, caller: CurrentCaller
) -> AuditRead:
    return service.latest_or_raise(
        session, tenant_id=caller.tenant_id, model_id=model_id, number=number
    )


@router.post(
    "/v1/models/{model_id}/versions/{number}/audit",
    status_code=202,
    response_model=JobRead,
    dependencies=[require(Scope.ADMIN)],
    responses=conflict(
        "the version forgot nothing, retrained references were asked of a model without "
        "a training recipe, or the samples it forgot are erased from the dataset's source"
    ),
)
def request_audit(
    model_id: str,
    number: VersionNumber,
    spec: AuditCreate,
    session: SessionDep,
    caller: CurrentCaller,
) -> JobRead:
    job = service.request_audit(
        session,
        tenant_id=caller.tenant_id,
        model_id=model_id,
        number=number,
        reference=spec.reference,
    )
    return jobs.to_read(job)


@router.get(
    "/v1/deletion-requests/{request_id}/certificate",
    response_model=Certificate,
    dependencies=[require(Scope.REQUESTS_READ)],
    responses=conflict("the request is not completed"),
)
def get_certificate(request_id: str, session: SessionDep, caller: CurrentCaller) -> Certificate:
    return service.certificate(session, tenant_id=caller.tenant_id, request_id=request_id)


@router.get(
    "/v1/audit-log/public-key",
    response_model=SigningKey,
    dependencies=[require(Scope.AUDIT_READ)],
)
def get_audit_log_public_key() -> SigningKey:
    """The key that verifies the audit log's signatures and a certificate's entries."""
    key = audit_log.public_key()
    if key is None:
        raise NotFound("audit signing key", "configured")
    return SigningKey(algorithm="Ed25519", public_key=key.text, key_id=key.key_id)


@router.get(
    "/v1/audit-log", response_model=Page[LogEntry], dependencies=[require(Scope.AUDIT_READ)]
)
def list_log(
    session: SessionDep, caller: CurrentCaller, limit: Limit = 50, cursor: str | None = None
) -> Page[LogEntry]:
    """This tenant's audit-log entries, newest first, each with its hash's inputs."""
    items, next_cursor = service.log_page(
        session, tenant_id=caller.tenant_id, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(
    "/v1/audit-log/verification",
    response_model=ChainVerification,
    dependencies=[require(Scope.ADMIN)],
)
def verify_log(session: SessionDep, caller: CurrentCaller) -> ChainVerification:
    """Whether the audit log's chain is intact, and where it breaks if that is one of this
    tenant's entries (the chain is walked at most once a minute)."""
    return service.verify_chain(session, tenant_id=caller.tenant_id)
