"""The loan service on Litestar, through `sagabox.litestar.SagaboxPlugin`."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody

from sagabox import App
from sagabox.litestar import SagaboxPlugin, Sagas, Transaction
from tests.aio_service import LoanIn, RequestFailed, apply, status


@post("/loans")
async def request_loan(
    data: JSONBody[LoanIn], transaction: Transaction, sagas: Sagas
) -> dict[str, Any]:
    return await apply(transaction, sagas, data)


@get("/loans/{loan_id:str}")
async def loan_status(
    loan_id: FromPath[str], transaction: Transaction, sagas: Sagas
) -> dict[str, Any]:
    found = await status(transaction, sagas, loan_id)
    if found is None:
        raise NotFoundException(f"no loan {loan_id}")
    return found


def _failed(request: Request[Any, Any, Any], exc: RequestFailed) -> Response[dict[str, str]]:
    return Response({"error": str(exc)}, status_code=500)


def make_api(app: App) -> Litestar:
    return Litestar(
        [request_loan, loan_status],
        plugins=[SagaboxPlugin(app)],
        exception_handlers={RequestFailed: _failed},
        # Litestar's default sets the root logger to INFO for the whole process: not in tests.
        logging_config=None,
    )
