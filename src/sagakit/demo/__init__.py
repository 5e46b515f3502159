"""The order saga from the source document, with fake services and a demo.

``build_order_saga(open_services())`` gives a ready saga over in-memory services; see
:mod:`._saga` for its steps and input, :mod:`._services` for the services' awkward cases, and
:mod:`._orchestrated` for the scenarios ``sagakit demo`` runs. The choreographed flavour is
:mod:`._choreography` (its four services), :mod:`._choreographed` (``sagakit demo --flavor
choreography``) and :mod:`.processes` (a service as a process of its own).

Everything here runs on the core install (``pip install sagakit``): the memory broker and
SQLite, nothing from the ``dev`` or broker extras.
"""

from sagakit.demo._choreographed import run_choreography_demo
from sagakit.demo._orchestrated import run_demo
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
    "run_choreography_demo",
    "run_demo",
]
