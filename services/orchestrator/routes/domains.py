"""Domains registered at runtime: `PUT /v1/domains/{name}` stores a spec (shared/domains.py) that every
orchestrator and the trainer use from then on, with no code change or restart; `GET` lists and reads them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Response
from redis.exceptions import RedisError

from services.orchestrator.deps import AppState, get_state, require_admin_key, require_api_key
from services.orchestrator.errors import APIError
from services.orchestrator.protocol import CanaryInfo, DomainInfo, DomainList, check_json_input
from shared import domains
from shared.domains import DomainSpec, SpecError

router = APIRouter(dependencies=[Depends(require_api_key)])
admin_router = APIRouter(dependencies=[Depends(require_admin_key)])  # writes: the admin key only


def _info(state: AppState, name: str) -> DomainInfo:
    active = state.aliases.get(name)
    measured = state.collaborator.modes.for_version(name, active)
    if measured is not None:
        mode, why = measured.mode, measured.reason
    elif active is not None or state.settings.draft_policy == "always":
        mode, why = "collab", "an adapter drafts for this domain (no measured default for its version)"
    else:
        mode, why = "strong", "no adapter for this domain yet (draft policy)"
    canary = state.aliases.canary(name)
    return DomainInfo(
        name=name,
        builtin=name in domains.BUILTIN,
        active_adapter=active,
        canary=CanaryInfo(adapter=canary.adapter, weight=canary.weight) if canary else None,
        spec=domains.get(name),
        default_mode=mode,
        default_mode_reason=why,
        default_mode_measured=measured,
    )


@router.get("/v1/domains", response_model=DomainList)
async def list_domains(state: AppState = Depends(get_state)) -> DomainList:
    await state.collaborator.modes.refresh()
    return DomainList(data=[_info(state, name) for name in state.known_domains()])


@router.get("/v1/domains/{name}", response_model=DomainInfo)
async def get_domain(name: str, state: AppState = Depends(get_state)) -> DomainInfo:
    if name not in state.known_domains():
        raise APIError(404, f"unknown domain {name!r}", param="name", code="domain_not_found")
    await state.collaborator.modes.refresh()
    return _info(state, name)


@admin_router.put("/v1/domains/{name}", response_model=DomainSpec, responses={201: {"model": DomainSpec}})
async def put_domain(
    name: str, response: Response, spec: dict[str, Any] = Body(...), state: AppState = Depends(get_state)
) -> DomainSpec:
    """Register (201) or replace (200) a domain's spec; 409 for a built-in name, 422 for a malformed spec."""
    if name in domains.BUILTIN:
        raise APIError(
            409,
            f"{name!r} is a built-in domain and cannot be replaced; choose another name",
            param="name",
            code="domain_builtin",
        )
    try:
        check_json_input(spec)
        parsed = domains.parse_spec(spec, name=name)
    except (SpecError, ValueError) as exc:
        raise APIError(422, str(exc), param="spec", code="invalid_domain_spec") from exc
    try:
        replaced = await domains.save(state.redis, parsed)
    except (RedisError, OSError) as exc:
        raise APIError(
            503,
            f"cannot store the domain spec: Redis is unavailable ({exc})",
            code="redis_unavailable",
            headers={"Retry-After": "5"},
        ) from exc
    response.status_code = 200 if replaced else 201
    return parsed
