import unittest

from scheduling.tenants import Tenant, TenantRegistry


class TenantRegistryTest(unittest.TestCase):
    def test_added_tenant_can_be_read_back(self) -> None:
        registry = TenantRegistry()
        registry.add(Tenant("acme", "Acme Physio"))
        self.assertEqual(registry.get("acme").name, "Acme Physio")

    def test_duplicate_tenant_is_refused(self) -> None:
        registry = TenantRegistry()
        registry.add(Tenant("acme", "Acme Physio"))
        with self.assertRaises(ValueError):
            registry.add(Tenant("acme", "Other"))

    def test_ids_are_sorted(self) -> None:
        registry = TenantRegistry()
        registry.add(Tenant("globex", "Globex Yoga"))
        registry.add(Tenant("acme", "Acme Physio"))
        self.assertEqual(registry.ids(), ["acme", "globex"])
