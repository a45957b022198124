"""The runner and the demo around the claims: the embedded broker, a non-guest administrator, one line and its own
exit code for each broker that cannot be used, every run stopped, and local nodes that fail to start or stop."""
from __future__ import annotations

import dataclasses
import subprocess
import threading
import urllib.error

import pika
import port_for
import pytest

from labs.brokers import local_node as local_node_module
from labs.brokers.broker import local_broker
from labs.amqp.admin import AdminAPI
from labs.drive.processes import Run, wait_for_consumers
from labs.exit_codes import EXIT_MANAGEMENT_REFUSED, EXIT_MANAGEMENT_UNREACHABLE, EXIT_NO_BROKER, EXIT_OK, EXIT_USAGE
from labs.scenarios.demo import demo
from labs.scenarios.registry import LABS, Lab
from labs.scenarios.runner import run_lab
from labs.settings import child_environment
from tests.helpers import IN_THE_310_SUITE, assert_one_line_error, wait_until
from tests.labs.runs import claims, given_broker_env, labs_command


@IN_THE_310_SUITE
def test_a_lab_runs_on_the_embedded_broker_when_no_amqp_url_is_given():
    result = labs_command("run", "3", env=child_environment(), timeout=300)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert "PASS: auto-ack with --lose-every 3 loses 4 of 12" in result.stdout


def test_a_lab_runs_for_a_non_guest_administrator(broker, administrator):
    """AMQP_URL's own user is used throughout, never guest:guest."""
    username, password = administrator
    env = child_environment(AMQP_URL=broker.url("/", username, password),
                            RABBITMQ_MANAGEMENT_URL=broker.admin.base_url)
    result = labs_command("run", "1", env=env, timeout=300)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert set(claims(result.stdout)) == {"PASS"}, result.stdout


def test_no_broker_is_its_own_exit_code_in_one_line(tmp_path):
    env = child_environment(RABBITMQ_BIN=str(tmp_path / "nowhere"))
    result = labs_command("run", "1", env=env, timeout=60)
    assert_one_line_error(result, EXIT_NO_BROKER, "rabbitmq-server is not installed", "AMQP_URL")


def test_an_unreachable_management_api_is_its_own_exit_code_in_one_line(broker):
    nowhere = f"http://127.0.0.1:{port_for.select_random()}"
    result = labs_command("run", "1", env=given_broker_env(broker, RABBITMQ_MANAGEMENT_URL=nowhere), timeout=120)
    assert_one_line_error(result, EXIT_MANAGEMENT_UNREACHABLE, nowhere, "RABBITMQ_MANAGEMENT_URL",
                          "management plugin")
    assert "PASS" not in result.stdout and "FAIL" not in result.stdout


def test_a_user_the_management_api_refuses_is_its_own_exit_code_in_one_line(broker, space):
    """A user without the management tag: 401 on the first call."""
    result = labs_command("run", "1", env=given_broker_env(broker, AMQP_URL=space.url), timeout=120)
    assert_one_line_error(result, EXIT_MANAGEMENT_REFUSED, f"refuses user {space.username!r}", "administrator")


def test_a_lab_never_falls_back_to_the_given_vhost_when_it_may_not_create_one(broker, space):
    """A user with the management tag but not administrator may read the API but not create vhosts."""
    broker.admin.add_user(space.username, space.password, tags="management")
    result = labs_command("run", "1", env=given_broker_env(broker, AMQP_URL=space.url), timeout=120)
    assert_one_line_error(result, EXIT_MANAGEMENT_REFUSED, "would not create vhost", "administrator")
    assert "PASS" not in result.stdout


def test_unknown_lab_is_a_usage_error():
    result = labs_command("run", "99", env=child_environment(), timeout=60)
    numbers = ", ".join(str(lab.number) for lab in LABS)  # every lab the registry holds, however many there are
    assert result.returncode == EXIT_USAGE and f"'99': give lab numbers ({numbers})" in result.stderr


def test_list_names_every_handout_and_each_exists():
    result = labs_command("list", env=child_environment(), timeout=60)
    for lab in LABS:
        assert lab.handout.exists(), lab.handout
        assert lab.handout.name in result.stdout


def test_waiting_for_consumers_raises_a_refusal_at_once(broker, space):
    """Only 404 means the queue is not declared yet; anything else (here 405: another connection's exclusive queue)
    is raised at once, not waited out."""
    space.channel().queue_declare("guarded", exclusive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        wait_for_consumers(space.url, "guarded", 1, timeout=20)
    assert refused.value.reply_code == 405


def test_the_demos_cleanup_cannot_replace_its_outcome(broker, space, monkeypatch, capsys):
    def refuse(*args):
        raise OSError("injected: the management API went away")

    monkeypatch.setattr(AdminAPI, "delete_queue", refuse)
    mine = dataclasses.replace(broker, vhost=space.vhost, username=space.username, password=space.password)
    assert demo(mine) is True
    captured = capsys.readouterr()
    assert "PASS: with --acknowledge, 0 of 18 messages lost" in captured.out
    assert "could not remove the demo's queue" in captured.err and "injected" in captured.err


def test_every_run_is_stopped_and_the_vhost_removed_even_when_one_stop_fails(broker):
    """One run's stop() raising must not leave the next run's worker running nor the lab's vhost behind; the failure
    is reported as a failed claim, after the rest is cleaned up."""
    workers: list[subprocess.Popen] = []

    def scenario(lab) -> None:
        first, second = lab.run("first"), lab.run("second")
        for run in (first, second):
            workers.append(run.worker("w1", "--acknowledge"))  # no idle exit: it runs until it is stopped
            run.wait_for_consumers(1)
        stop = first.stop

        def failing_stop() -> None:
            stop()
            raise RuntimeError("injected: the first run's stop failed")

        first.stop = failing_stop

    try:
        context = run_lab(Lab(99, "stop-check", "Stop every run", scenario), broker)
        assert [process.poll() is not None for process in workers] == [True, True], "a worker was left running"
        failed = [claim for claim in context.claims if claim.ok is False]
        assert [claim.text for claim in failed] == ["lab 99 stopped every process it started"], context.claims
        assert "injected: the first run's stop failed" in failed[0].detail
        with pytest.raises(urllib.error.HTTPError) as gone:
            broker.admin.request("GET", f"/vhosts/{broker.admin.quote(context.vhost)}")
        assert gone.value.code == 404, "the lab's vhost was left behind"
    finally:
        for process in workers:
            process.kill()
            process.wait()


def test_a_supervised_worker_is_not_restarted_once_its_run_is_stopped(broker, space):
    """The demo's w3 (and lab 4's) runs under a supervisor that restarts it after each crash. When the demo gives up
    waiting and cleans up, the clean-up's kill looks like a crash: nothing may start again after it."""
    run = Run(space.url, "supervised", echo=False)
    supervisor = threading.Thread(target=run.supervise, args=("w3", "--acknowledge"), daemon=True)
    try:
        supervisor.start()
        run.wait_for_consumers(1)
        run.stop()  # the demo's clean_up, as after its join of the supervisor timed out
        supervisor.join(30)
        assert not supervisor.is_alive() and len(run.processes) == 1, f"started again: {run.processes}"
        assert space.consumers("supervised") == 0
    finally:
        for process in run.processes:
            process.kill()
            process.wait()


@IN_THE_310_SUITE
def test_a_local_node_that_fails_to_start_is_stopped_and_its_error_raised(tmp_path, monkeypatch):
    started: list = []

    def never_ready(node, timeout: float = 0) -> None:
        started.append(node)
        wait_until(lambda: node.running(), 60, "the node's process")
        raise RuntimeError("injected: the node never got ready")

    monkeypatch.setattr(local_node_module.LocalNode, "wait_until_ready", never_ready)
    try:
        with pytest.raises(RuntimeError, match="injected: the node never got ready"):
            with local_broker(tmp_path / "node"):
                pass
        assert started and not started[0].running(), "the node that failed to start was left running"
    finally:
        for node in started:
            node.stop()


def test_a_local_node_that_fails_to_stop_says_so(tmp_path, monkeypatch):
    def fail(node) -> None:
        raise RuntimeError("injected: stop failed")

    monkeypatch.setattr(local_node_module.LocalNode, "start", lambda node: node)
    monkeypatch.setattr(local_node_module.LocalNode, "stop", fail)
    with pytest.raises(RuntimeError, match="injected: stop failed"):
        with local_broker(tmp_path / "node"):
            pass
