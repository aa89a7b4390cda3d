from fastapi import APIRouter

from service.api.deps import CurrentKey, SessionDep
from service.keys import service as keys
from service.schemas import Caller

router = APIRouter(tags=["keys"])


@router.get("/v1/me", response_model=Caller)
def who_am_i(session: SessionDep, key: CurrentKey) -> Caller:
    """The calling key's tenant and scopes (any valid key may ask)."""
    return keys.describe(session, key)
