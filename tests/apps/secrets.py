"""An app with SASL credentials, for checking that no command prints them."""

from celery import Celery

from kbridge import BaseConsumer, KBridge


class Noop(BaseConsumer):
    def perform(self) -> None:
        pass


app = KBridge(
    client_id="vault",
    kafka={
        "bootstrap_servers": "127.0.0.1:1",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "hunter2-do-not-print",
    },
    celery=Celery("vault", broker="redis://:broker-secret@127.0.0.1:1/0"),
)
with app.consumer_group("payments") as group:
    group.topic("charges", consumer=Noop, timeout=5, max_retries=1)
app.topic("audit", consumer=Noop, backend="inline")
