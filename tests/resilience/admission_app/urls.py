import time

from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def work(request):
    time.sleep(0.1)  # one thread busy for 100 ms: 2 threads serve 20 requests a second
    return JsonResponse({"criticality": getattr(request, "criticality", None)})


def health(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [path("work", work), path("health/", health)]
