from fastapi import APIRouter

from service.api.deps import CurrentCaller, SessionDep, require
from service.callbacks import service
from service.callbacks.schemas import SecretRead
from service.enums import Scope

router = APIRouter(
    prefix="/v1/callback-secret", tags=["callbacks"], dependencies=[require(Scope.ADMIN)]
)


@router.get("", response_model=SecretRead)
def get_callback_secret(session: SessionDep, caller: CurrentCaller) -> SecretRead:
    return service.secret_of(session, tenant_id=caller.tenant_id)


@router.post("/rotate", response_model=SecretRead)
def rotate_callback_secret(session: SessionDep, caller: CurrentCaller) -> SecretRead:
    return service.rotate_secret(session, tenant_id=caller.tenant_id)
