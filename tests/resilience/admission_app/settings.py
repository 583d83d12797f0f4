import os

SECRET_KEY = "admission-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["resilience"]
MIDDLEWARE = ["resilience.admission.AdmissionMiddleware"]
ROOT_URLCONF = "tests.resilience.admission_app.urls"
DATABASES = {}
USE_TZ = True
RESILIENCE_TRUST_DEADLINE_HEADER = False  # the edge: criticality comes from the rules
RESILIENCE_ADMISSION = {
    "ENABLED": os.environ.get("ADMISSION", "on") == "on",
    "MAX_QUEUE_TIME": {"critical": 2.0, "default": 0.5, "sheddable": 0.25},
    "RULES": [["POST", "/work", "critical"], ["GET", "/work", "sheddable"]],
}
