import datetime
import unittest

from scheduling.bookings import BookingStore

DAY = datetime.date(2026, 12, 1)


class BookingStoreTest(unittest.TestCase):
    def test_bookings_of_a_day_come_in_start_order(self) -> None:
        store = BookingStore()
        store.create("acme", 1, DAY, 600, 30)
        store.create("acme", 1, DAY, 540, 30)
        self.assertEqual([b.start_minute for b in store.on_day(DAY)], [540, 600])

    def test_other_days_are_not_listed(self) -> None:
        store = BookingStore()
        store.create("acme", 1, DAY + datetime.timedelta(days=1), 540, 30)
        self.assertEqual(store.on_day(DAY), [])

    def test_cancelled_booking_is_not_listed(self) -> None:
        store = BookingStore()
        kept = store.create("acme", 1, DAY, 540, 30)
        dropped = store.create("acme", 1, DAY, 600, 30)
        store.cancel(dropped.id)
        self.assertEqual(store.on_day(DAY), [kept])

    def test_cancelling_an_unknown_booking_raises(self) -> None:
        with self.assertRaises(KeyError):
            BookingStore().cancel(42)

    def test_end_minute_adds_the_length(self) -> None:
        booking = BookingStore().create("acme", 1, DAY, 540, 45)
        self.assertEqual(booking.end_minute, 585)
