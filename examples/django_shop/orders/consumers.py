"""kbridge routes of the orders app, found by kbridge.contrib.django's autodiscovery.

Orders are written by celery workers; payments are light and run inline, in the
listener. Both consumers are idempotent (get_or_create on a unique key), since a
message may be delivered more than once.
"""

from django.conf import settings

from kbridge import BaseConsumer, before_enqueue
from kbridge.contrib.django import kbridge_app

from .models import Order, Payment


class OrderConsumer(BaseConsumer):
    @before_enqueue
    def not_a_test_order(self) -> bool:
        """The storefront's smoke tests place test orders; they never reach the database."""
        return not self.params.payload.get("test", False)

    def perform(self) -> None:
        order = self.params.payload
        Order.objects.get_or_create(
            number=order["number"],
            defaults={"customer": order["customer"], "total_cents": order["total_cents"]},
        )


class PaymentConsumer(BaseConsumer):
    def perform(self) -> None:
        payment = self.params.payload
        Payment.objects.get_or_create(
            reference=payment["reference"],
            defaults={"order_number": payment["order_number"], "amount_cents": payment["amount_cents"]},
        )


with kbridge_app.consumer_group("shop") as group:
    group.topic(f"{settings.SHOP_TOPIC_PREFIX}orders", consumer=OrderConsumer)
    group.topic(f"{settings.SHOP_TOPIC_PREFIX}payments", consumer=PaymentConsumer, backend="inline")
