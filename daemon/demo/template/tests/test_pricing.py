import unittest

from scheduling.pricing import format_cents, quote
from scheduling.services import Service

MASSAGE = Service(1, "acme", "Massage", 3000)


class PricingTest(unittest.TestCase):
    def test_quote_multiplies_the_price_by_the_slots(self) -> None:
        self.assertEqual(quote(MASSAGE, 2), 6000)

    def test_a_booking_takes_at_least_one_slot(self) -> None:
        with self.assertRaises(ValueError):
            quote(MASSAGE, 0)

    def test_format_cents_reads_as_money(self) -> None:
        self.assertEqual(format_cents(4505), "45.05 USD")
