"""Deadlines and attempt timeouts: bounded calls even against slow, hanging and trickling servers."""

import time

import pytest
from django.http import JsonResponse
from django.test import RequestFactory

from resilience import deadline as deadlines
from resilience import testing
from resilience.exceptions import DeadlineExceededError, UpstreamTimeoutError
from resilience.http import ServiceClient
from resilience.middleware import DeadlineMiddleware


def test_a_slow_answer_under_a_short_deadline_gives_up_at_the_deadline(make_policy, upstream):
    """A 3 s answer under a 1 s deadline: the call ends after about 1 s."""
    make_policy(DEADLINE=1.0, TIMEOUT={"CONNECT": 0.2, "READ": 0.8})
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        ServiceClient("upstream").get("/delay/3")
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 1.4, elapsed


def test_the_attempt_timeout_bounds_each_attempt(make_policy, upstream):
    make_policy(DEADLINE=5.0, TIMEOUT={"CONNECT": 0.2, "READ": 0.3}, RETRY={"MAX_ATTEMPTS": 2})
    start = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        ServiceClient("upstream").get("/hang")
    elapsed = time.monotonic() - start
    assert upstream.count("/hang") == 2
    assert 0.55 <= elapsed < 1.1, elapsed  # a silent server: READ (0.3 s) per attempt, twice
    assert testing.metric("resilience_timeout_calls_total", name="upstream", kind="attempt") == 2


def test_a_trickling_server_cannot_stretch_an_attempt(make_policy, upstream):
    """One byte every 0.2 s for 4 s: each socket read is quick, the whole answer is not."""
    make_policy(DEADLINE=5.0, TIMEOUT={"CONNECT": 0.2, "READ": 1.0}, RETRY={"MAX_ATTEMPTS": 1})
    start = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        ServiceClient("upstream").get("/trickle?every=0.2&n=20")
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 1.5, elapsed


def test_a_trickling_server_cannot_outlast_the_deadline(make_policy, upstream):
    make_policy(DEADLINE=1.0, TIMEOUT={"CONNECT": 0.2, "READ": 0.8}, RETRY={"MAX_ATTEMPTS": 3})
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        ServiceClient("upstream").get("/trickle?every=0.1&n=50")
    assert time.monotonic() - start < 1.4


def test_a_complete_trickled_answer_within_time_is_read_whole(make_policy, upstream):
    make_policy(TIMEOUT={"CONNECT": 0.2, "READ": 1.0})
    response = ServiceClient("upstream").get("/trickle?every=0.02&n=10")
    assert response.content == b"x" * 10


def test_the_remaining_budget_travels_in_a_header(make_policy, upstream):
    """Under a 2 s deadline, one attempt may take CONNECT + READ = 1.5 s: that is the callee's budget."""
    make_policy(DEADLINE=2.0)
    body = ServiceClient("upstream").get("/echo").json()
    sent = int(body["headers"][deadlines.HEADER])
    assert 1400 < sent <= 1500


def test_an_outer_deadline_narrows_the_policy_deadline(make_policy, upstream):
    make_policy(DEADLINE=3.0)
    with deadlines.scope(0.5):
        body = ServiceClient("upstream").get("/echo").json()
    assert int(body["headers"][deadlines.HEADER]) <= 500


def test_the_deadline_is_visible_inside_the_policy(make_policy):
    policy = make_policy(DEADLINE=2.0)
    seen = policy.call(deadlines.remaining, idempotent=True)
    assert 1.9 < seen <= 2.0
    assert deadlines.remaining() is None


def middleware_response(header_value, view=None):
    def default_view(request):
        return JsonResponse({"remaining": deadlines.remaining()})

    request = RequestFactory().get(
        "/", **({deadlines.META_KEY: header_value} if header_value else {})
    )
    return DeadlineMiddleware(view or default_view)(request)


def test_middleware_drops_work_whose_deadline_has_passed():
    calls = []
    response = middleware_response("0", view=lambda r: calls.append(r))
    assert response.status_code == 504
    assert b'"code": "deadline_exceeded"' in response.content
    assert calls == []


def test_middleware_puts_the_request_under_the_callers_deadline():
    import json

    response = middleware_response("800")
    remaining = json.loads(response.content)["remaining"]
    assert 0.7 < remaining <= 0.8


@pytest.mark.parametrize("value", ["soon", "1.5", "99999999999"])
def test_middleware_rejects_a_malformed_deadline(value):
    response = middleware_response(value)
    assert response.status_code == 400
    assert b"invalid_deadline" in response.content


def test_no_header_means_no_deadline():
    import json

    assert json.loads(middleware_response(None).content) == {"remaining": None}


def test_a_chunked_body_trickling_its_size_line_cannot_outlast_the_deadline(make_policy, upstream):
    """http.client reads a chunk-size line with a loop of recv calls; the watchdog ends it."""
    make_policy(DEADLINE=1.0, TIMEOUT={"CONNECT": 0.2, "READ": 0.5}, RETRY={"MAX_ATTEMPTS": 1})
    start = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        ServiceClient("upstream").get("/chunked?every=0.1&n=50")
    assert time.monotonic() - start < 0.9


def test_a_complete_chunked_answer_is_read_whole(make_policy, upstream):
    make_policy()
    assert ServiceClient("upstream").get("/chunked?every=0.01&n=3").content == b"x"


def test_a_deadline_that_runs_out_just_before_an_attempt_is_a_deadline_error(make_policy, upstream):
    """Not a ValueError from requests for a negative timeout."""
    policy = make_policy()
    client = ServiceClient("upstream")
    with deadlines.scope(0.001):
        time.sleep(0.005)
        with pytest.raises(DeadlineExceededError):
            client._attempt(policy, "GET", client.url("/ok"), {}, None, None)
    assert upstream.count("/ok") == 0


def test_the_callee_is_told_when_this_attempt_gives_up_not_the_whole_deadline(
    make_policy, upstream
):
    """A 1.2 s attempt under a 3 s deadline: the callee must stop after 1.2 s, not 3 s."""
    make_policy(DEADLINE=3.0, TIMEOUT={"CONNECT": 0.2, "READ": 1.0})
    sent = int(ServiceClient("upstream").get("/echo").json()["headers"][deadlines.HEADER])
    assert 1000 < sent <= 1200
