from fastapi import APIRouter

from service.api.conditional import polled
from service.api.deps import CurrentCaller, SessionDep
from service.changes import Topic
from service.enums import Scope
from service.overview import service
from service.overview.schemas import Overview

router = APIRouter(prefix="/v1/overview", tags=["overview"])


@router.get(
    "",
    response_model=Overview,
    **polled(Topic.REQUESTS, Topic.JOBS, Topic.MODELS, scope=Scope.MODELS_READ),
)
def get_overview(session: SessionDep, caller: CurrentCaller) -> Overview:
    return service.overview(session, tenant_id=caller.tenant_id)
