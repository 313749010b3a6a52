"""Safe trading: preview, confirm, place once, and reconcile every unknown outcome.

The flows run on the clients (``client.preview_order(...)``, ``client.place_order(...)``...);
this package holds their types, the confirmation tokens and the order-intent journal.
See ``docs/trading.md``.
"""

from aims_snaptrade.trading.confirmation import ConfirmationSigner
from aims_snaptrade.trading.factory import open_order_intent_store
from aims_snaptrade.trading.intents import (
    MemoryOrderIntentStore,
    OrderIntentStore,
    PostgresOrderIntentStore,
    SQLiteOrderIntentStore,
    SQLOrderIntentStore,
)
from aims_snaptrade.trading.models import (
    Order,
    OrderAction,
    OrderIntent,
    OrderPreview,
    OrderRequest,
    OrderStatus,
    OrderType,
    Reconciliation,
    TimeInForce,
)

__all__ = [
    "ConfirmationSigner",
    "MemoryOrderIntentStore",
    "Order",
    "OrderAction",
    "OrderIntent",
    "OrderIntentStore",
    "OrderPreview",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "PostgresOrderIntentStore",
    "Reconciliation",
    "SQLOrderIntentStore",
    "SQLiteOrderIntentStore",
    "TimeInForce",
    "open_order_intent_store",
]
