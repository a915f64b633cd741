"""The campaign runner's decisions on a fake clock: a real store, commands captured as sent,
and the device's side (acks, results, heartbeats) written into the store as ingest would."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from coordinator.campaign import guard
from coordinator.campaign import state as st
from coordinator.campaign.plan import ModelRef, plan
from coordinator.campaign.runner import RESEND_S, Runner
from coordinator.campaign.spec import Retries, Thermal, parse
from coordinator.store import Store
from protocol import Ack, Heartbeat, make
from tests.coordinator.test_ingest_support import bench_result

DEVICE = "run-1"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def models(n: int) -> list[ModelRef]:
    return [
        ModelRef(hashlib.sha256(f"m{i}".encode()).hexdigest(), f"m{i}.tflite") for i in range(n)
    ]


def setup(tmp_path: Path, extra: str = "", n: int = 2):
    text = f'name = "t"\n[devices]\nids = ["{DEVICE}"]\n[models]\nreference = true\n{extra}'
    (tmp_path / "t.toml").write_text(text)
    campaign = parse(text, str(tmp_path / "t.toml"), tmp_path)
    store = Store(tmp_path / "s.sqlite")
    clock = Clock()
    record = st.create(store, campaign, text, plan(campaign, [DEVICE], models(n)), clock())
    sent = []
    runner = Runner(store, record.campaign_id, lambda d, c: sent.append((d, c)), clock)
    return store, clock, runner, sent


def deliver(store: Store, cmd, status="ok", throttled=None, at=None):
    res = bench_result(cmd_id=cmd.cmd_id, model_sha256=cmd.bench.model_sha256, status=status)
    if throttled is not None:
        res.env_post = {**res.env_post, "throttled": {"active": throttled, "raw": "0x4"}}
    store.add_results([make(res, DEVICE)], received_at=at)
    store.record_ack(DEVICE, Ack(cmd.cmd_id, "done" if status == "ok" else "failed"), at)


def heartbeat(store: Store, temp: float, at: float, throttled: bool = False):
    hb = Heartbeat(uptime_s=1.0, load=[0.0, 0.0, 0.0], temps_c={"cpu": temp}, cpu_freq_khz={},
                   throttled=throttled, outbox_depth=0, queue_depth=0, running_job=None,
                   agent_version="t")  # fmt: skip
    store.record_hb(make(hb, DEVICE), at)


def test_one_job_at_a_time_in_plan_order_then_done(tmp_path):
    store, clock, runner, sent = setup(tmp_path, n=3)
    order = [j.model_sha256 for j in st.jobs(store, runner.campaign_id)]
    for i in range(3):
        assert runner.step() is False
        assert len(sent) == i + 1  # nothing more until the outcome arrives
        runner.step()
        assert len(sent) == i + 1
        assert sent[-1][1].bench.model_sha256 == order[i]
        clock.t += 5
        deliver(store, sent[-1][1])
    assert runner.step() is True  # the last job settles and the campaign is done
    assert st.get(store, runner.campaign_id).state == st.DONE
    jobs = st.jobs(store, runner.campaign_id)
    assert {(j.state, j.attempt) for j in jobs} == {(st.DONE, 1)}
    assert len({j.result_id for j in jobs}) == 3


def test_failed_jobs_retry_with_exponential_backoff_then_fail(tmp_path):
    store, clock, runner, sent = setup(tmp_path, "[retries]\nmax = 2\nbackoff_s = 10\nfactor = 3\n",
                                       n=1)  # fmt: skip
    runner.step()
    cmd_ids = []
    for delay in (10, 30):
        cmd = sent[-1][1]
        cmd_ids.append(cmd.cmd_id)
        deliver(store, cmd, status="failed")
        runner.step()
        [job] = st.jobs(store, runner.campaign_id)
        assert job.state == st.PENDING and "SIGSEGV" in job.reason
        assert job.not_before == pytest.approx(clock.t + delay)
        clock.t += delay - 1
        runner.step()
        assert sent[-1][1].cmd_id == cmd.cmd_id  # still backing off
        clock.t += 1
        runner.step()
        assert sent[-1][1].cmd_id != cmd.cmd_id  # the next attempt, a new command id
    deliver(store, sent[-1][1], status="failed")
    runner.step()
    [job] = st.jobs(store, runner.campaign_id)
    assert job.state == st.FAILED and job.attempt == 3 and "after 3 attempts" in job.reason
    assert runner.step() is True
    assert st.get(store, runner.campaign_id).reason == "1 jobs failed"
    # each attempt's id is derived, so a restarted coordinator re-sends the very same command
    assert cmd_ids[0] == st.cmd_id_for(runner.campaign_id, job.key, 1)


def test_a_result_measured_while_throttling_is_measured_again(tmp_path):
    store, clock, runner, sent = setup(tmp_path, n=1)
    runner.step()
    deliver(store, sent[-1][1], throttled=True)
    runner.step()
    [job] = st.jobs(store, runner.campaign_id)
    assert job.state == st.PENDING and "throttling" in job.reason
    clock.t += guard.backoff_s(Retries(), 1)
    runner.step()
    deliver(store, sent[-1][1], throttled=False)
    runner.step()
    [job] = st.jobs(store, runner.campaign_id)
    assert (job.state, job.attempt) == (st.DONE, 2)


def test_cooldown_waits_for_a_fresh_cool_heartbeat_and_gives_up_after_max_wait(tmp_path):
    store, clock, runner, sent = setup(
        tmp_path, "[thermal]\ncooldown_below_c = 50\npause_s = 2\nmax_wait_s = 100\n", n=3
    )
    runner.step()
    clock.t += 10
    deliver(store, sent[-1][1])
    runner.step()  # settles job 1 at t; the next must wait
    finished = clock.t
    assert len(sent) == 1 and runner.waiting[DEVICE].startswith("pause")
    clock.t += 3
    heartbeat(store, 70.0, finished - 1)  # older than the job's end: says nothing
    runner.step()
    assert len(sent) == 1 and "heartbeat" in runner.waiting[DEVICE]
    heartbeat(store, 70.0, clock.t)
    runner.step()
    assert len(sent) == 1 and "cooling down: 70.0 C" in runner.waiting[DEVICE]
    heartbeat(store, 49.0, clock.t)
    runner.step()
    assert len(sent) == 2
    deliver(store, sent[-1][1])
    runner.step()
    heartbeat(store, 80.0, clock.t + 1)
    clock.t += 100  # hot for the whole max_wait: start anyway
    runner.step()
    assert len(sent) == 3


def test_thermal_gate_rules():
    rules = Thermal(cooldown_below_c=None, pause_s=0.0, retry_throttled=True)
    assert guard.thermal_gate(rules, 10.0, 5.0, {"throttled": True}, 9.0).ok is False
    assert guard.thermal_gate(rules, 10.0, 5.0, {"throttled": False}, 9.0).ok is True
    assert guard.thermal_gate(rules, 10.0, 5.0, None, None).ok is True
    assert guard.thermal_gate(rules, 10.0, None, {"throttled": True}, 9.0).ok is True


def test_throttled_detection():
    assert guard.throttled({"throttled": None}, {"throttled": None}) is False
    assert guard.throttled({}, {"throttled": {"active": True}}) is True
    pre = {"throttled": {"active": False, "throttled_occurred": False}}
    post = {"throttled": {"active": False, "throttled_occurred": True}}
    assert guard.throttled(pre, post) is True
    assert guard.throttled(post, post) is False  # happened before this measurement


def test_resume_resends_only_unacknowledged_commands_and_unacked_ones_again_later(tmp_path):
    store, clock, runner, sent = setup(tmp_path, n=1)
    runner.step()
    [(_, cmd)] = sent
    store.record_dispatch(DEVICE, cmd, clock.t)
    again = Runner(store, runner.campaign_id, lambda d, c: sent.append((d, c)), clock)
    assert again.resume() == 1 and sent[-1][1] == cmd  # same cmd_id, same expiry
    clock.t += RESEND_S + 1
    again.step()
    assert len(sent) == 3 and sent[-1][1].cmd_id == cmd.cmd_id
    store.record_ack(DEVICE, Ack(cmd.cmd_id, "accepted"), clock.t)
    assert again.resume() == 0
    clock.t += RESEND_S / 2
    again.step()
    assert len(sent) == 3  # heard from the device lately
    clock.t += RESEND_S
    again.step()
    assert len(sent) == 4 and sent[-1][1].cmd_id == cmd.cmd_id  # silent since: asked again


def test_a_job_done_without_its_result_is_asked_for_again(tmp_path):
    """The broker acked the result to the device and was killed before saving it: the device
    says done, the result never comes. The same command goes out again (the agent answers a
    finished command by sending its result again) until the result arrives."""
    store, clock, runner, sent = setup(tmp_path, n=1)
    runner.step()
    [(_, cmd)] = sent
    store.record_dispatch(DEVICE, cmd, clock.t)
    store.record_ack(DEVICE, Ack(cmd.cmd_id, "done"), clock.t)
    clock.t += RESEND_S - 1
    runner.step()
    assert len(sent) == 1
    clock.t += 2
    runner.step()
    assert len(sent) == 2 and sent[-1][1] == cmd
    [job] = st.jobs(store, runner.campaign_id)
    assert (job.state, job.attempt) == (st.SENT, 1)  # the same attempt, not a new one


def test_a_rejected_command_is_retried_and_an_expired_one_too(tmp_path):
    store, clock, runner, sent = setup(tmp_path, "[retries]\nbackoff_s = 0\n", n=1)
    runner.ttl_s = 50.0
    runner.step()
    cmd = sent[-1][1]
    store.record_dispatch(DEVICE, cmd, clock.t)
    store.record_ack(DEVICE, Ack(cmd.cmd_id, "rejected", reason="queue full"), clock.t)
    runner.step()
    [job] = st.jobs(store, runner.campaign_id)  # no backoff: attempt 2 went out at once
    assert (job.state, job.attempt) == (st.SENT, 2) and "queue full" in job.reason
    store.record_dispatch(DEVICE, sent[-1][1], clock.t)
    clock.t += 51
    runner.step()
    [job] = st.jobs(store, runner.campaign_id)
    assert job.attempt == 3 and "did not pick the command up" in job.reason
    assert len({c.cmd_id for _, c in sent}) == 3
