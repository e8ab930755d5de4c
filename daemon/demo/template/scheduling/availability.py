"""Which slots of a day can still be booked."""

import datetime

from scheduling.bookings import BookingStore
from scheduling.services import Service
from scheduling.tenants import Tenant

SLOT_MINUTES = 30


def slot_plan(service: Service) -> tuple[int, int]:
    """Length and step, in minutes, of the slots offered for a service."""
    length = SLOT_MINUTES
    step = SLOT_MINUTES
    return length, step


def available_slots(store: BookingStore, tenant: Tenant, service: Service, day: datetime.date) -> list[int]:
    """Start minutes of the free slots of `service` on `day`, within the tenant's opening hours."""
    length, step = slot_plan(service)
    taken = [b for b in store.on_day(day) if b.service_id == service.id]
    free = []
    for start in range(tenant.open_minute, tenant.close_minute - length + 1, step):
        if not any(start < b.end_minute and b.start_minute < start + length for b in taken):
            free.append(start)
    return free
