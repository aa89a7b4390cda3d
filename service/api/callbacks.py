from fastapi import APIRouter

from service.api.deps import CurrentKey, SessionDep, require
from service.callbacks import service
from service.callbacks.schemas import SecretRead
from service.enums import Scope

router = APIRouter(
    prefix="/v1/callback-secret", tags=["callbacks"], dependencies=[require(Scope.ADMIN)]
)


@router.get("", response_model=SecretRead)
def get_secret(session: SessionDep, key: CurrentKey) -> SecretRead:
    return service.secret_of(session, tenant_id=key.tenant_id)


@router.post("/rotate", response_model=SecretRead)
def rotate_secret(session: SessionDep, key: CurrentKey) -> SecretRead:
    return service.rotate_secret(session, tenant_id=key.tenant_id)
