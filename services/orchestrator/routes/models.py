"""GET /v1/models: the collaboration pipelines (one per domain, with its active adapter) and the
models behind them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.orchestrator.deps import AppState, get_state, require_api_key
from services.orchestrator.protocol import ModelCard, ModelList
from shared.adapters import version_of
from shared.prompts import DEFAULT_DOMAIN

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: AppState = Depends(get_state)) -> ModelList:
    cards = []
    for domain in state.known_domains():
        adapter = state.aliases.get(domain)
        ids = ["cowest", f"cowest/{domain}"] if domain == DEFAULT_DOMAIN else [f"cowest/{domain}"]
        for model_id in ids:
            cards.append(
                ModelCard(
                    id=model_id,
                    kind="pipeline",
                    domain=domain,
                    active_adapter=adapter,
                    adapter_version=version_of(adapter),
                )
            )
    for role in ("weak", "strong"):
        upstream = await state.directory.cards(role)
        ends = state.settings.endpoints
        default = ends.weak_model if role == "weak" else ends.strong_model
        for card in upstream or [{"id": default}]:
            is_adapter = bool(card.get("parent"))
            cards.append(
                ModelCard(
                    id=card["id"],
                    kind="adapter" if is_adapter else role,
                    root=card.get("root"),
                    parent=card.get("parent"),
                    owned_by=card.get("owned_by") or "cowest",
                    adapter_version=version_of(card["id"]) if is_adapter else None,
                )
            )
    return ModelList(data=cards)
