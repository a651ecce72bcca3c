"""The loan service on FastAPI, through `sagabox.fastapi`'s lifespan and dependencies."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from sagabox import App
from sagabox.fastapi import Sagas, Transaction, lifespan
from tests.aio_service import LoanIn, RequestFailed, apply, status


def make_api(app: App) -> FastAPI:
    api = FastAPI(lifespan=lifespan(app))

    @api.exception_handler(RequestFailed)
    async def failed(request: Request, exc: RequestFailed) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=500)

    @api.post("/loans", status_code=201)
    async def request_loan(body: LoanIn, session: Transaction, sagas: Sagas) -> dict[str, Any]:
        return await apply(session, sagas, body)

    @api.get("/loans/{loan_id}")
    async def loan_status(loan_id: str, session: Transaction, sagas: Sagas) -> dict[str, Any]:
        found = await status(session, sagas, loan_id)
        if found is None:
            raise HTTPException(404, f"no loan {loan_id}")
        return found

    return api
