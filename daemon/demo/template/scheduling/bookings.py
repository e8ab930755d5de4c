"""Bookings: appointments taken on a tenant's service."""

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class Booking:
    id: int
    tenant_id: str
    service_id: int
    day: datetime.date
    start_minute: int
    length_minutes: int

    @property
    def end_minute(self) -> int:
        return self.start_minute + self.length_minutes


class BookingStore:
    """An in-memory booking table."""

    def __init__(self) -> None:
        self._bookings: dict[int, Booking] = {}
        self._next_id = 1

    def create(
        self, tenant_id: str, service_id: int, day: datetime.date, start_minute: int, length_minutes: int
    ) -> Booking:
        booking = Booking(self._next_id, tenant_id, service_id, day, start_minute, length_minutes)
        self._bookings[booking.id] = booking
        self._next_id += 1
        return booking

    def get(self, booking_id: int) -> Booking:
        return self._bookings[booking_id]

    def cancel(self, booking_id: int) -> None:
        del self._bookings[booking_id]

    def on_day(self, day: datetime.date) -> list[Booking]:
        """Every booking on `day`, all tenants, in start order."""
        return sorted(
            (b for b in self._bookings.values() if b.day == day),
            key=lambda b: (b.start_minute, b.id),
        )
