from fastapi import APIRouter

from service.api.deps import CurrentCaller, SessionDep
from service.keys import service as keys
from service.schemas import CallerRead

router = APIRouter(tags=["keys"])


@router.get("/v1/me", response_model=CallerRead)
def get_caller(session: SessionDep, caller: CurrentCaller) -> CallerRead:
    """The calling key's tenant and scopes (any valid key may ask)."""
    return keys.describe(session, caller)
