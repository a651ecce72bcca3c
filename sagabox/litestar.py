"""Litestar integration: a plugin that gives route handlers their request's transaction and an
App's async face as dependencies.

    loans = App("loans", sagas=[LoanSaga], database="postgresql://...")

    @post("/loans")
    async def request_loan(data: JSONBody[LoanIn], transaction: Transaction, sagas: Sagas) -> dict:
        transaction.add(Loan(id=data.loan_id, amount=data.amount))
        saga = await sagas.start(transaction, LoanSaga, LoanRequested(**data.model_dump()))
        return {"state": saga.state_name}

    api = Litestar([request_loan], plugins=[SagaboxPlugin(loans)])

The `transaction` session commits after the handler returns and before the response is sent,
and rolls back when the handler raises (Litestar throws the exception into the dependency).
Services on advanced-alchemy's SQLAlchemy plugin can skip `transaction` and hand its
`db_session` to `sagas.start` instead. The dependency names are configurable; `Transaction`
and `Sagas` are `NamedDependency` annotations, as Litestar 2.23+ asks. Needs
`pip install 'sagabox[litestar]'`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

try:
    from litestar import Litestar
    from litestar.config.app import AppConfig
    from litestar.di import NamedDependency, Provide
    from litestar.plugins import InitPluginProtocol
    from sqlalchemy.ext.asyncio import AsyncSession
except ImportError as exc:  # an optional extra: say which install line brings it
    raise ImportError(
        f"sagabox.litestar needs Litestar ({exc}): pip install 'sagabox[litestar]'"
    ) from exc

from sagabox.aio import AsyncApp
from sagabox.aio_web import request_transaction, serving

if TYPE_CHECKING:
    from sagabox.app import App

#: The request's session, in its transaction: a handler's `transaction: Transaction`.
Transaction = NamedDependency[AsyncSession]
#: The App's async face: `sagas: Sagas`, then `await sagas.start(transaction, SagaType, msg)`.
Sagas = NamedDependency[AsyncApp]


class SagaboxPlugin(InitPluginProtocol):
    """Registers the `transaction` and `sagas` dependencies (names configurable) and closes
    the App's async engine at shutdown."""

    def __init__(
        self, app: App, *, transaction_key: str = "transaction", sagas_key: str = "sagas"
    ) -> None:
        self.app = app
        self.transaction_key = transaction_key
        self.sagas_key = sagas_key

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the dependencies, the names handlers' annotations use, and the lifespan that
        closes the App's async engine."""
        for key, option in (
            (self.transaction_key, "transaction_key"),
            (self.sagas_key, "sagas_key"),
        ):
            if key in app_config.dependencies:
                # Replacing it would hand every handler the last plugin's App, silently.
                raise ValueError(
                    f"SagaboxPlugin({self.app.name!r}): the dependency {key!r} is registered "
                    f"already (another SagaboxPlugin?): give this one other names, e.g. "
                    f"SagaboxPlugin(app, {option}={self.app.name + '_' + key!r})"
                )
        app_config.dependencies[self.transaction_key] = Provide(self._transaction)
        app_config.dependencies[self.sagas_key] = Provide(self._sagas, sync_to_thread=False)
        app_config.signature_namespace.update(
            {"AsyncSession": AsyncSession, "AsyncApp": AsyncApp, "Transaction": Transaction}
            | {"Sagas": Sagas}
        )
        app_config.lifespan.append(self._serving)
        return app_config

    def _serving(self, _api: Litestar) -> AbstractAsyncContextManager[AsyncApp]:
        return serving(self.app)

    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async with request_transaction(self.app.aio) as session:
            yield session

    def _sagas(self) -> AsyncApp:
        return self.app.aio
