from fastapi import APIRouter

from service.api.deps import CurrentCaller
from service.catalog import service
from service.catalog.schemas import ArchitectureList, UnlearnerList

router = APIRouter(tags=["catalog"])


@router.get("/v1/architectures", response_model=ArchitectureList)
def list_architectures(_: CurrentCaller) -> ArchitectureList:
    """The installed architectures (built-in and plug-ins') with their params' JSON schema
    and defaults (any valid key may ask)."""
    return service.list_architectures()


@router.get("/v1/unlearners", response_model=UnlearnerList)
def list_unlearners(_: CurrentCaller) -> UnlearnerList:
    """The installed unlearners with their params' JSON schema, defaults, needs and the
    architectures they refuse (any valid key may ask)."""
    return service.list_unlearners()
