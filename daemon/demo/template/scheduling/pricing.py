"""What a booking costs."""

from scheduling.services import Service


def quote(service: Service, slots: int = 1) -> int:
    """Price in cents of `slots` consecutive slots of a service."""
    if slots < 1:
        raise ValueError("a booking takes at least one slot")
    return service.price_cents * slots


def format_cents(cents: int, currency: str = "USD") -> str:
    """A price as people read it: `45.00 USD`."""
    return f"{cents // 100}.{cents % 100:02d} {currency}"
