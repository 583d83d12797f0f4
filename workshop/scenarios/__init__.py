"""The failure scenarios of docs/scenarios.md (the cascade of docs/design.md, and the rest), runnable by hand and by the tests.

``manage.py scenario run NAME [--compare]`` starts a fresh stack on free ports, drives a
bounded load through the gateway, injects the scenario's fault through the real chaos API
(or kills the service), lifts it, waits for queued work to drain, and audits what was left
behind. The end-to-end tests call the same :func:`workshop.scenarios.runner.run`.
"""
