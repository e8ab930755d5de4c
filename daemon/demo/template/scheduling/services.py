"""Services a tenant offers: what is booked, for how long, at what price."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    id: int
    tenant_id: str
    name: str
    price_cents: int
    duration_minutes: int = 0  # 0: the default slot length
    buffer_minutes: int = 0  # rest time the provider needs after each appointment
