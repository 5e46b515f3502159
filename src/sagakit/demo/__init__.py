"""The order saga from the source document, with fake services and a demo.

``build_order_saga(open_services())`` gives a ready saga over in-memory services; see
:mod:`.saga` for its steps and input, :mod:`.services` for the services' awkward cases, and
:mod:`.demo` for the scenarios ``sagakit demo`` runs.
"""

from sagakit.demo._saga import build_order_saga, from_environment, order_input
from sagakit.demo._services import (
    CardDeclined,
    EmailService,
    InsufficientPoints,
    InventoryService,
    LoyaltyService,
    MailServerUnavailable,
    OrderRejected,
    OrderService,
    OrderServices,
    PartialReservation,
    PaymentService,
    ShippingService,
    open_services,
)

__all__ = [
    "CardDeclined",
    "EmailService",
    "InsufficientPoints",
    "InventoryService",
    "LoyaltyService",
    "MailServerUnavailable",
    "OrderRejected",
    "OrderService",
    "OrderServices",
    "PartialReservation",
    "PaymentService",
    "ShippingService",
    "build_order_saga",
    "from_environment",
    "open_services",
    "order_input",
]
