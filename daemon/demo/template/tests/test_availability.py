import datetime
import unittest

from scheduling.availability import available_slots
from scheduling.bookings import BookingStore
from scheduling.services import Service
from scheduling.tenants import Tenant

DAY = datetime.date(2026, 12, 1)
ACME = Tenant("acme", "Acme Physio")
MASSAGE = Service(1, "acme", "Massage", 4500)


class AvailabilityTest(unittest.TestCase):
    def test_an_empty_day_offers_every_half_hour(self) -> None:
        slots = available_slots(BookingStore(), ACME, MASSAGE, DAY)
        self.assertEqual(len(slots), 16)
        self.assertEqual((slots[0], slots[-1]), (540, 990))

    def test_a_booking_takes_its_slot(self) -> None:
        store = BookingStore()
        store.create("acme", 1, DAY, 600, 30)
        self.assertNotIn(600, available_slots(store, ACME, MASSAGE, DAY))
        self.assertIn(630, available_slots(store, ACME, MASSAGE, DAY))

    def test_a_long_booking_takes_every_slot_it_overlaps(self) -> None:
        store = BookingStore()
        store.create("acme", 1, DAY, 600, 90)
        free = available_slots(store, ACME, MASSAGE, DAY)
        self.assertFalse({600, 630, 660} & set(free))

    def test_a_booking_of_another_service_does_not_block(self) -> None:
        store = BookingStore()
        store.create("acme", 2, DAY, 600, 30)
        self.assertIn(600, available_slots(store, ACME, MASSAGE, DAY))
