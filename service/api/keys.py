from datetime import timedelta

from fastapi import APIRouter

from service.api.deps import CurrentCaller, Limit, SessionDep, require
from service.api.openapi import conflict
from service.enums import Scope
from service.keys import service
from service.keys.schemas import KeyCreate, KeyCreated, KeyRead, KeyRotate
from service.schemas import Page
from service.tables import ApiKey

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[require(Scope.ADMIN)])


def _read(key: ApiKey) -> KeyRead:
    return service.to_read(key)


def _created(key: ApiKey, plaintext: str) -> KeyCreated:
    return KeyCreated(**service.to_read(key).model_dump(), key=plaintext)


@router.get("", response_model=Page[KeyRead])
def list_keys(
    session: SessionDep, caller: CurrentCaller, limit: Limit = 50, cursor: str | None = None
) -> Page[KeyRead]:
    rows, next_cursor = service.list_page(
        session, tenant_id=caller.tenant_id, limit=limit, cursor=cursor
    )
    return Page(items=[_read(r) for r in rows], next_cursor=next_cursor)


@router.post("", status_code=201, response_model=KeyCreated)
def create_key(spec: KeyCreate, session: SessionDep, caller: CurrentCaller) -> KeyCreated:
    new, plaintext = service.create_key(
        session,
        tenant_id=caller.tenant_id,
        scopes=list(spec.scopes),
        name=spec.name,
        expires_at=spec.expires_at,
    )
    return _created(new, plaintext)


@router.get("/{key_id}", response_model=KeyRead)
def get_key(key_id: str, session: SessionDep, caller: CurrentCaller) -> KeyRead:
    return _read(service.get_or_raise(session, key_id=key_id, tenant_id=caller.tenant_id))


@router.post(
    "/{key_id}/revoke",
    response_model=KeyRead,
    responses=conflict("the key is the tenant's last active admin key"),
)
def revoke_key(key_id: str, session: SessionDep, caller: CurrentCaller) -> KeyRead:
    return _read(service.revoke(session, key_id=key_id, tenant_id=caller.tenant_id))


@router.post(
    "/{key_id}/rotate",
    status_code=201,
    response_model=KeyCreated,
    responses=conflict("the key is revoked, expired or already rotated"),
)
def rotate_key(
    key_id: str, spec: KeyRotate, session: SessionDep, caller: CurrentCaller
) -> KeyCreated:
    grace = timedelta(seconds=spec.grace_seconds)
    new, plaintext = service.rotate(session, key_id=key_id, grace=grace, tenant_id=caller.tenant_id)
    return _created(new, plaintext)
