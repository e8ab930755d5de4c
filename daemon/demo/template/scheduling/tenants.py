"""Tenants: the businesses that take bookings, each with its own opening hours."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    open_minute: int = 9 * 60
    close_minute: int = 17 * 60
    utc_offset_minutes: int = 0


class TenantRegistry:
    """The tenants known to this backend, by id."""

    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}

    def add(self, tenant: Tenant) -> None:
        if tenant.id in self._tenants:
            raise ValueError(f"tenant {tenant.id!r} already exists")
        self._tenants[tenant.id] = tenant

    def get(self, tenant_id: str) -> Tenant:
        return self._tenants[tenant_id]

    def ids(self) -> list[str]:
        return sorted(self._tenants)
