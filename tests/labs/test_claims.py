"""The lab runner proves every claim of every handout on the suite's broker, gives back the settings a lab changes,
and reports counts that match the event logs."""
from __future__ import annotations

import inspect
import re

import pytest

from labs.amqp.connection import Event
from labs.brokers.rabbitmqctl import RabbitmqctlFailed, read_rabbit_env, restore_rabbit_env
from labs.exit_codes import EXIT_OK
from labs.scenarios.registry import LABS, Lab
from labs.scenarios.runner import report, run_lab
from tests.helpers import require
from tests.labs.runs import claims, given_broker_env, labs_command

SETTINGS_A_LAB_GIVES_BACK = ("channel_tick_interval", "consumer_timeout")  # those lab 4 shortens on 3.x


ONE_BROKER_LABS = [lab for lab in LABS if not lab.on_cluster]  # a cluster lab: tests/brokers/test_cluster.py
# Labs that wait on the broker's clocks (lab 4 the consumer timeout, lab 8 two heartbeat timeouts) or run many short
# runs (lab 12: five runs and the memory alarm, 14 s alone): about 16 s each, handed out among the first tests
# (tests/conftest.py) so none of them starts last and runs on alone.
LONG_LABS = {4: 16, 8: 16, 12: 16}


def lab_param(lab: Lab):
    long = [pytest.mark.slow(seconds=LONG_LABS[lab.number])] if lab.number in LONG_LABS else []
    return pytest.param(lab, id=f"{lab.number}-quorum-vhost", marks=long)


@pytest.mark.restart
@pytest.mark.parametrize("lab", [lab_param(lab) for lab in ONE_BROKER_LABS])
def test_lab_claims(broker, lab, tmp_path):
    """Every claim of the lab passes, none skipped, run as `labs run N` runs it, in a fresh vhost of its own made by
    the administrator, here one whose default queue type is quorum (as `labs provision --default-queue-type quorum`
    makes), on a broker given as AMQP_URL + management URL + rabbitmqctl; a lab that changes the broker's settings
    gives it back exactly what it had; and the run leaves nothing in the temporary folder (event logs, the Jobs
    API's output): a class runs the labs again and again.

    The same labs on a classic vhost, the default, are the student mode's (tests/labs/test_student_mode.py): every
    lab in order in one class-provisioned student's vhost, which proves each claim there once, not twice."""
    require(broker.controllable, "the labs restart the broker: give LABKIT_RABBITMQCTL with AMQP_URL")
    typed = ("--default-queue-type", "quorum")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = given_broker_env(broker, TMPDIR=str(scratch))
    if lab.sets_broker_settings:
        # An odd value, not the default, so that putting back a fixed default is caught. Read, set, read again and
        # put back in two rabbitmqctl calls: each boots an Erlang VM, about a second of each lab's test.
        original = read_rabbit_env(broker.ctl, SETTINGS_A_LAB_GIVES_BACK,
                                   then="application:set_env(rabbit, channel_tick_interval, 59000)")
        try:
            result = labs_command("run", str(lab.number), *typed, env=env)
        finally:
            after = read_rabbit_env(broker.ctl, SETTINGS_A_LAB_GIVES_BACK, then=restore_rabbit_env(original))
        assert after == {"channel_tick_interval": "{ok,59000}", "consumer_timeout": original["consumer_timeout"]}
    else:
        result = labs_command("run", str(lab.number), *typed, env=env)
    print(result.stdout)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    found = claims(result.stdout)
    assert len(found) >= 2 and set(found) == {"PASS"}, result.stdout
    assert f"Lab {lab.number}: {lab.title}" in result.stdout
    assert not list(scratch.iterdir()), "left behind in the temporary folder"
    assert "PASS: the lab's vhost has default queue type quorum" in result.stdout
    if lab.number == 2:
        assert re.search(r"w1 +processed +3 +busy", result.stdout)  # per-worker counts in the report
    if lab.number == 4:
        assert "makespan" in result.stdout and re.search(r"redelivered [1-9]", result.stdout)
    if lab.number == 8:  # the detail is what was measured, not a fixed sentence
        assert "processed ['slow work'], redelivered 1 time(s)" in result.stdout


def test_read_rabbit_env_gives_the_settings_back_when_its_call_goes_wrong(restartable):
    """read_rabbit_env changes settings in the call that reads them (`then`): when that call's printout does not parse
    (here a setting whose value is a list of tuples, which the parser does not take), or the call fails after `then`
    changed a setting, it raises without the values the caller would restore; so it gives them back itself."""
    read = ("channel_tick_interval",)
    before = read_rabbit_env(restartable.ctl, read)
    change = "application:set_env(rabbit, channel_tick_interval, 59000)"
    try:
        with pytest.raises(RabbitmqctlFailed, match="not one setting per key.*given back what they had"):
            read_rabbit_env(restartable.ctl, (*read, "tcp_listen_options"), then=change)
        assert read_rabbit_env(restartable.ctl, read) == before
        with pytest.raises(RabbitmqctlFailed, match="given back what they had"):
            read_rabbit_env(restartable.ctl, read, then=change + ", erlang:error(a_later_step_fails)")
        assert read_rabbit_env(restartable.ctl, read) == before
    finally:  # never leave the suite's broker with the changed setting, whatever failed above
        restartable.ctl("eval", restore_rabbit_env(before) + ".")


def scenario_code_of(function) -> str:
    """A scenario's source with that of every function of labs/scenarios/ it calls, however deep (its own module's,
    the shared helpers')."""
    seen, sources, todo = set(), [], [function]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        sources.append(inspect.getsource(current))
        todo += [value for name in current.__code__.co_names
                 if inspect.isfunction(value := current.__globals__.get(name))
                 and value.__module__.startswith("labs.scenarios.")]
    return "\n".join(sources)


def test_a_lab_that_changes_the_brokers_settings_says_so():
    """test_lab_claims checks that such a lab gives the settings back; only the labs marked are checked."""
    for lab in LABS:
        assert ("set_env" in scenario_code_of(lab.scenario)) == lab.sets_broker_settings, lab.number


REPORT_COUNTS = re.compile(r"sent (?P<sent>\d+), processed (?P<processed>\d+), lost by workers (?P<lost>\d+), "
                           r"requeued (?P<requeued>\d+), failed (?P<failed>\d+), "
                           r"dead-lettered (?P<dead_lettered>\d+), redelivered (?P<redelivered>\d+), "
                           r"never processed (?P<never_processed>\d+), makespan")


def test_lab_3s_report_counts_what_its_event_log_shows(broker):
    """The report's counts are what a class reads off the screen, and no claim checks them: each one must be what
    the run's own event log shows. run_lab and report are what `python -m labs run 3` runs and prints; in-process,
    the run's event records stay readable after the run (its folder is removed)."""
    lab = next(lab for lab in LABS if lab.number == 3)
    context = run_lab(lab, broker)
    printed = report(lab, context)
    assert set(claims(printed)) == {"PASS"}, printed
    run, = context.runs
    events = run.log.read()
    kinds = [e["event"] for e in events]
    done = {e["body"] for e in events if e["event"] == Event.DONE}
    logged = {"sent": len(run.sent), "processed": len(done), "lost": kinds.count("lost"),
              "requeued": kinds.count("requeued"), "failed": kinds.count("failed"),
              "dead_lettered": kinds.count("dead-lettered"),
              "redelivered": sum(1 for e in events if e["event"] == Event.RECEIVED and e["redelivered"]),
              "never_processed": sum(1 for body in run.sent if body not in done)}
    found = REPORT_COUNTS.search(printed)
    assert found, printed
    assert {key: int(value) for key, value in found.groupdict().items()} == logged, printed
    # What the handout teaches, in the log itself: 12 sent, every third lost for good, the rest processed once.
    assert (logged["sent"], logged["processed"], logged["lost"], logged["never_processed"]) == (12, 8, 4, 4)
    for worker in {e["worker"] for e in events}:
        per_worker = re.search(rf"^ +{re.escape(worker)} +processed +(\d+) ", printed, re.M)
        assert per_worker and int(per_worker.group(1)) == sum(
            1 for e in events if e["event"] == Event.DONE and e["worker"] == worker), printed
