"""Rows written by the kbridge consumers in orders/consumers.py."""

from django.db import models


class Order(models.Model):
    """One order placed in the storefront, as read from the orders topic."""

    # The storefront's order number; unique, so a redelivered message (at least once) adds no row.
    number = models.PositiveIntegerField(unique=True)
    customer = models.CharField(max_length=64)
    total_cents = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"order #{self.number}"


class Payment(models.Model):
    """A payment for an order, from the payments topic."""

    reference = models.CharField(max_length=64, unique=True)
    order_number = models.PositiveIntegerField()
    amount_cents = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"payment {self.reference}"
