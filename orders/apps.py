from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders: the booking flow"

    def ready(self) -> None:
        from orders import metrics

        metrics.register()
