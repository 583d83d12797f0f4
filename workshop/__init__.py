"""The workshop layer: tooling around the services, never one of them.

The local stack (``manage.py stack``), the failure scenarios and the Chaos Monkey
(``manage.py scenario``), the control room (``workshop.console``, its own service on :8080)
and the labs' checkpoints (``manage.py lab``). It may import the services' ledgers over
``manage.py``; no service imports it.
"""
