"""Billing: periods and the monthly close's state (`periods`), the carbon-credit inventory (`credits`),
signed monthly receipts (`receipts`) and Stripe (`stripe`). The public names of the four modules are
importable from here."""

from controlplane.billing.credits import (
    CSV_COLUMNS,
    KG_PER_TONNE,
    Allocation,
    BlockSpec,
    CreditBlock,
    Credits,
    parse_block,
    tonnes_needed,
)
from controlplane.billing.periods import (
    PAID_PLANS,
    BillingPeriods,
    Period,
    PeriodStatus,
    is_paid,
    parse_month,
)
from controlplane.billing.receipts import SERIAL_RE, Receipt, Receipts, format_serial, verify_url
from controlplane.billing.stripe import StripePlans, handle_stripe_event, stripe_client

__all__ = [
    "CSV_COLUMNS",
    "KG_PER_TONNE",
    "PAID_PLANS",
    "SERIAL_RE",
    "Allocation",
    "BillingPeriods",
    "BlockSpec",
    "CreditBlock",
    "Credits",
    "Period",
    "PeriodStatus",
    "Receipt",
    "Receipts",
    "StripePlans",
    "format_serial",
    "handle_stripe_event",
    "is_paid",
    "parse_block",
    "parse_month",
    "stripe_client",
    "tonnes_needed",
    "verify_url",
]
