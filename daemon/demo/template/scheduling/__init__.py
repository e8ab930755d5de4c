"""A small multi-tenant scheduling backend: the sample project of `batchd demo`.

Tenants (businesses) offer services; customers book slots of those services. The
todos in `todos/` are the work items that batchd runs agents on.
"""
