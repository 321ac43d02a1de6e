"""What anyone may ask: the order page, the menu, and whether the service is up."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from pizzeria import menu
from pizzeria.api.problems import ApiProblem, problem_responses
from pizzeria.api.schemas import Health, Menu, MenuSize, Readiness

STATIC = Path(__file__).parent / "static"
CHECK_SECONDS = 3.0

router = APIRouter()


@router.get("/", response_class=HTMLResponse, tags=["page"], operation_id="order_page")
async def page() -> FileResponse:
    """The order page."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


def toppings() -> list[str]:
    """One name per ingredient ("extra cheese", not also "cheese"), as the menu lists them."""
    first: dict[str, str] = {}
    for name, ingredient in menu.TOPPINGS.items():
        first.setdefault(ingredient, name)
    return list(first.values())


@router.get(
    "/menu", operation_id="get_menu", summary="Sizes, prices and toppings", tags=["service"]
)
async def get_menu() -> Menu:
    return Menu(
        sizes=[
            MenuSize(size=size, price=price, portions=menu.PORTIONS_BY_SIZE[size])
            for size, price in menu.PRICE_BY_SIZE.items()
        ],
        toppings=toppings(),
        base=list(menu.BASE),
        discount_over=menu.DISCOUNT_THRESHOLD,
        discount=menu.DISCOUNT,
        max_items=menu.MAX_ITEMS,
    )


@router.get("/healthz", operation_id="healthz", summary="The process is up", tags=["service"])
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="Temporal and the ledger answer",
    responses=problem_responses(503),
    tags=["service"],
)
async def readyz(request: Request) -> Readiness:
    temporal, ledger = await asyncio.gather(temporal_answer(request), ledger_answer(request))
    if temporal != "ok" or ledger != "ok":
        raise ApiProblem(503, f"not ready: Temporal {temporal}, ledger {ledger}", slug="not-ready")
    return Readiness(status="ready", temporal=temporal, ledger=ledger)


async def temporal_answer(request: Request) -> str:
    try:
        await request.app.state.client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=CHECK_SECONDS)
        )
    except Exception as error:  # any way of not answering counts as not ready
        return f"does not answer ({type(error).__name__})"
    return "ok"


async def ledger_answer(request: Request) -> str:
    try:
        await asyncio.wait_for(
            asyncio.to_thread(lambda: request.app.state.ledger.get().stock()), timeout=CHECK_SECONDS
        )
    except Exception as error:  # locked, gone, unreadable: all mean not ready
        return f"does not answer ({type(error).__name__})"
    return "ok"
