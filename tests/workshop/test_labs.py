"""The labs' parts that need no stack: what a checkpoint counts between two snapshots, the
policy overrides `stack policy` writes, and the commands' answers to bad input. The pages
themselves run against a real stack in tests/e2e/test_labs.py."""

import json
import time
from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from booking.settings.base import _with_overrides
from workshop.labs.catalog import LABS, breaker_states, chaos_engineering, sigkilled_since
from workshop.labs.progress import Since, Snapshot
from workshop.stack import Stack, StackError


def snapshot(taken, pids, samples, ledger=None) -> Snapshot:
    return Snapshot(taken, pids, {"orders": samples}, ledger)


def transitions(pid_label, counts):
    return [
        (
            "resilience_circuitbreaker_transitions_total",
            {"name": "payments", "from_state": a, "to_state": b, "pid": pid_label},
            n,
        )
        for (a, b), n in counts.items()
    ]


class TestSince:
    def test_a_counter_counts_what_grew_since_the_start(self):
        start = snapshot(0, {"orders": 10}, transitions("1", {("closed", "open"): 3}))
        now = snapshot(5, {"orders": 10}, transitions("1", {("closed", "open"): 5}))
        assert Since(start, now).transitions("orders", "payments") == {"closed->open": 2}

    def test_a_restarted_service_counts_from_zero(self):
        # orders restarted (another master pid): its 2 are all new, not 2 - 3.
        start = snapshot(0, {"orders": 10}, transitions("1", {("closed", "open"): 3}))
        now = snapshot(5, {"orders": 11}, transitions("2", {("closed", "open"): 2}))
        since = Since(start, now)
        assert since.restarted("orders")
        assert since.transitions("orders", "payments") == {"closed->open": 2}
        assert since.killed() == ["orders"]

    def test_a_counter_that_went_down_without_a_new_pid_counts_from_zero(self):
        start = snapshot(0, {"orders": 10}, transitions("1", {("closed", "open"): 3}))
        now = snapshot(5, {"orders": 10}, transitions("1", {("closed", "open"): 1}))
        assert Since(start, now).transitions("orders", "payments") == {"closed->open": 1}

    def test_snapshots_survive_the_file_between_start_and_check(self, tmp_path):
        taken = snapshot(1.5, {"orders": 10}, transitions("1", {("closed", "open"): 3}))
        taken.save(tmp_path / "lab.json")
        assert Snapshot.load(tmp_path / "lab.json") == taken


class TestCheckpoints:
    def test_breaker_states_wants_every_transition_and_the_state_closed_again(self):
        counts = {("closed", "open"): 1, ("open", "half-open"): 1, ("half-open", "closed"): 1}
        start = snapshot(0, {"orders": 10}, [])

        def state(now_state):
            return [
                ("resilience_circuitbreaker_state", {"name": "payments", "state": each}, 1.0)
                for each in (now_state,)
            ]

        done = snapshot(5, {"orders": 10}, transitions("1", counts) + state("closed"))
        assert all(item.passed for item in breaker_states(Since(start, done)))
        still_open = snapshot(5, {"orders": 10}, transitions("1", counts) + state("open"))
        items = breaker_states(Since(start, still_open))
        assert [item.passed for item in items] == [True, True, True, False]
        half_way = snapshot(5, {"orders": 10}, transitions("1", {("closed", "open"): 1}))
        assert [item.passed for item in breaker_states(Since(start, half_way))] == [True] + [
            False
        ] * 3

    def test_chaos_engineering_fails_on_a_double_charge(self):
        def ledger(orders, charges):
            return {
                "orders": {"orders": orders, "stuck": [], "orphaned_running_tasks": []},
                "payments": charges,
                "inventory": {"holds": [], "shows": []},
                "notifications": {"mail": [], "rows": []},
            }

        order = {
            "id": "o1",
            "status": "failed",
            "settled": True,
            "refunded": False,
            "show_id": 1,
            "quantity": 1,
        }
        charge = {"order_id": "o1", "status": "succeeded", "refunded": True}
        before = Snapshot(0, {"orders": 1}, {}, ledger([], []))
        once = Snapshot(5, {"orders": 2}, {}, ledger([order], [{**charge, "id": 1}]))
        twice = Snapshot(
            5, {"orders": 2}, {}, ledger([order], [{**charge, "id": 1}, {**charge, "id": 2}])
        )
        assert chaos_engineering(Since(before, once))[-1].passed
        audit = chaos_engineering(Since(before, twice))[-1]
        assert not audit.passed and audit.measured == "double_charged: 1"

    def test_chaos_engineering_counts_crashes_not_restarts(self, settings, tmp_path):
        """supervisord's own log lines: a restart ends with SIGTERM, expected; a crash with
        SIGKILL, not expected. Only crashes since the lab started count."""
        settings.VAR_DIR = tmp_path
        (tmp_path / "log").mkdir()
        started = time.mktime(time.strptime("2026-11-23 15:30:00", "%Y-%m-%d %H:%M:%S"))
        (tmp_path / "log" / "supervisord.log").write_text(
            "2026-11-23 15:29:00,001 WARN exited: gateway (terminated by SIGKILL; not expected)\n"
            "2026-11-23 15:30:05,001 WARN stopped: orders (terminated by SIGTERM)\n"
            "2026-11-23 15:30:06,001 WARN exited: payments (terminated by SIGKILL; not expected)\n"
            "2026-11-23 15:30:07,001 WARN exited: orders-worker (terminated by SIGKILL; not "
            "expected)\n"
        )
        assert sigkilled_since(started) == ["payments", "orders-worker"]

    @pytest.mark.parametrize("storage", [None, "redis://127.0.0.1:6379/15"])
    def test_breaker_states_counts_the_task_worker_when_the_breaker_is_shared(
        self, settings, tmp_path, storage
    ):
        """In Redis the breaker is the task worker's too: the trial it made, in its log, counts
        (and only then: with memory storage the worker's breaker is its own)."""
        settings.VAR_DIR, settings.RESILIENCE_STORAGE = tmp_path, storage
        (tmp_path / "log").mkdir()
        started = time.mktime(time.strptime("2026-12-03 18:08:00", "%Y-%m-%d %H:%M:%S"))
        (tmp_path / "log" / "orders-worker.log").write_text(
            "2026-12-03 18:07:59,900 WARNING resilience.breaker circuit breaker 'payments': "
            "closed -> open (failure rate 100% of 5 calls)\n"
            "2026-12-03 18:08:37,855 WARNING resilience.breaker circuit breaker 'payments': "
            "open -> half-open (open wait over)\n"
            "2026-12-03 18:08:38,219 WARNING resilience.breaker circuit breaker 'inventory': "
            "open -> half-open (open wait over)\n"
            "2026-12-03 18:08:38,219 WARNING resilience.breaker circuit breaker 'payments': "
            "half-open -> closed (3 of 3 trial calls succeeded)\n"
        )
        start = snapshot(started, {"orders": 10}, [])
        now = snapshot(
            started + 60,
            {"orders": 10},
            [
                *transitions("1", {("closed", "open"): 1}),
                ("resilience_circuitbreaker_state", {"name": "payments", "state": "closed"}, 1.0),
            ],
        )
        items = breaker_states(Since(start, now))
        assert [item.passed for item in items] == [True, bool(storage), bool(storage), True]
        assert items[0].measured == "1 time(s)"  # the worker's closed -> open came before


class TestPolicyOverrides:
    def test_overrides_merge_section_by_section(self, tmp_path):
        shipped = {"payments": {"TIMEOUT": {"CONNECT": 1.0, "READ": 1.5}, "DEADLINE": 4.0}}
        path = tmp_path / "policies.json"
        path.write_text(json.dumps({"payments": {"TIMEOUT": {"READ": 0.4}, "DEADLINE": 2.0}}))
        assert _with_overrides(shipped, str(path)) == {
            "payments": {"TIMEOUT": {"CONNECT": 1.0, "READ": 0.4}, "DEADLINE": 2.0}
        }
        assert shipped["payments"]["TIMEOUT"]["READ"] == 1.5  # the settings are not touched
        assert _with_overrides(shipped, None) is shipped
        assert _with_overrides(shipped, str(tmp_path / "none.json")) is shipped

    @pytest.fixture
    def stack(self, settings, tmp_path, monkeypatch):
        settings.VAR_DIR = tmp_path
        stack = Stack(out=lambda line: None)
        stack.dir.mkdir(parents=True)
        restarted = []
        monkeypatch.setattr(stack, "restart_services", lambda programs: restarted.append(programs))
        stack.restarted = restarted
        return stack

    def test_a_change_restarts_only_the_services_that_use_the_policy(self, stack):
        stack.set_policy({"payments": {"TIMEOUT": {"READ": 0.4}}})
        stack.set_policy({"payments": {"RETRY": {"MAX_ATTEMPTS": 2}}})
        assert json.loads(stack.policy_overrides.read_text()) == {
            "payments": {"TIMEOUT": {"READ": 0.4}, "RETRY": {"MAX_ATTEMPTS": 2}}
        }
        assert stack.restarted == [["orders", "orders-worker"]] * 2
        stack.set_policy({"inventory": {"DEADLINE": 3.0}})
        assert stack.restarted[-1] == ["gateway", "orders", "orders-worker"]

    def test_reset_forgets_every_change_and_restarts_their_users(self, stack):
        stack.set_policy({"recommendations": {"DEADLINE": 1.2}})
        stack.set_policy({})
        assert not stack.policy_overrides.exists()
        assert stack.restarted[-1] == ["gateway", "orders", "orders-worker"]
        stack.set_policy({})  # nothing changed: nothing to restart
        assert stack.restarted[-1] == []

    def test_a_file_broken_by_hand_is_named_and_reset_still_works(self, stack, tmp_path):
        stack.policy_overrides.write_text('{"payments": {"DEADLINE": 3')
        with pytest.raises(ImproperlyConfigured, match=r"is not JSON.*stack policy reset"):
            _with_overrides({}, str(stack.policy_overrides))
        with pytest.raises(StackError, match=r"is not JSON: `manage.py stack policy reset`"):
            stack.set_policy({"payments": {"DEADLINE": 2.0}})
        stack.set_policy({})
        assert not stack.policy_overrides.exists()
        assert stack.restarted[-1] == [  # whatever it changed: every service restarts
            "gateway",
            "orders",
            "orders-worker",
            "payments",
            "inventory",
            "notifications",
            "recommendations",
        ]

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"paymens": {"DEADLINE": 1}}, "no policy 'paymens': one of default, inventory"),
            ({"payments": {"TIMEOUT": {"READ": -1}}}, "must be a number > 0, got -1"),
            ({"payments": {"RETRYS": {}}}, "unknown key 'RETRYS'. Did you mean 'RETRY'?"),
        ],
    )
    def test_a_bad_change_is_refused_and_nothing_restarts(self, stack, changes, message):
        stack.set_policy({"payments": {"DEADLINE": 3.0}})
        with pytest.raises(StackError, match=message):
            stack.set_policy(changes)
        assert json.loads(stack.policy_overrides.read_text()) == {"payments": {"DEADLINE": 3.0}}
        assert len(stack.restarted) == 1


class TestCommands:
    def test_list_names_every_lab_and_its_page(self):
        out = StringIO()
        call_command("lab", "list", stdout=out)
        for lab in LABS.values():
            assert lab.slug in out.getvalue() and str(lab.page) in out.getvalue()

    def test_every_page_exists(self, settings):
        from pathlib import Path

        for lab in LABS.values():
            assert (Path(settings.BASE_DIR) / lab.page).exists(), lab.page

    def test_an_unknown_lab_is_named(self):
        with pytest.raises(CommandError, match="no lab 'breakers': one of timeouts-from-p99"):
            call_command("lab", "check", "breakers")

    def test_a_check_before_the_start_says_how_to_start(self, settings, tmp_path):
        settings.VAR_DIR = tmp_path
        with pytest.raises(CommandError, match=r"`manage.py lab start bulkheads`"):
            call_command("lab", "check", "bulkheads")

    def test_without_a_stack_the_commands_say_to_start_it(self, settings, tmp_path):
        settings.VAR_DIR = tmp_path
        with pytest.raises(CommandError, match="the stack is not running: start it with `make up`"):
            call_command("lab", "start", "bulkheads", stdout=StringIO())
        with pytest.raises(CommandError, match="the stack is not running"):
            call_command("lab", "traffic", "--seconds", "2", stdout=StringIO())

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--seconds", "0"], "--seconds must be between 1 and 120"),
            (["--browsers", "0", "--buyers", "0"], "no users"),
            (["--buyers", "51"], "between 0 and 50"),
        ],
    )
    def test_traffic_refuses_unbounded_or_empty_loads(self, args, message):
        with pytest.raises(CommandError, match=message):
            call_command("lab", "traffic", *args, stdout=StringIO())
