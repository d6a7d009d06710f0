"""Async jobs report their progress while running, and 1.0 when done."""

from __future__ import annotations

import time

from vigil.core import jobs


def test_job_progress_is_visible_while_running_and_complete_when_done(core):
    runner = jobs.JobRunner(core.store)
    seen: list[float] = []

    def handler(params, progress):
        job_id = params["me"]
        progress(0.25)
        seen.append(jobs.get(core.store, job_id)["progress"])
        time.sleep(0.6)  # writes are throttled to one per half second
        progress(0.75)
        seen.append(jobs.get(core.store, job_id)["progress"])
        return {"ok": True}

    runner.register("slow", handler)
    job = jobs.submit(core.store, "slow", {})
    with core.store.transaction() as s:  # let the handler know its own id
        from vigil.store.service_models import Job

        s.get(Job, job["id"]).params = {"me": job["id"]}
    assert job["progress"] == 0.0
    assert runner.run_once() is True
    assert seen == [0.25, 0.75]
    done = jobs.get(core.store, job["id"])
    assert done["status"] == "done" and done["progress"] == 1.0 and done["result"] == {"ok": True}


def test_failed_job_progress_resets(core):
    runner = jobs.JobRunner(core.store)

    def handler(params, progress):
        progress(0.5)
        raise jobs.UsageError("nope")

    runner.register("bad", handler)
    job = jobs.submit(core.store, "bad", {})
    runner.run_once()
    failed = jobs.get(core.store, job["id"])
    assert failed["status"] == "failed" and failed["progress"] == 0.0
    assert failed["error"]["code"] == "usage"
