"""Categories (annotations create theirs on first use; a page can list and add them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..deps import ServiceDep, require_token
from ..schemas import CategoryCreate, CategoryList, CategoryOut

router = APIRouter(prefix="/v1/categories", tags=["categories"], dependencies=[Depends(require_token)])


@router.get("", response_model=CategoryList)
def list_categories(service: ServiceDep) -> CategoryList:
    return CategoryList(categories=[CategoryOut(id=c.id, name=c.name) for c in service.storage.list_categories()])


@router.post("", response_model=CategoryOut)
def add_category(service: ServiceDep, body: CategoryCreate) -> CategoryOut:
    row = service.storage.add_category(body.name)
    return CategoryOut(id=row.id, name=row.name)
