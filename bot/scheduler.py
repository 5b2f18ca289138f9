"""APScheduler 3.x as this process's alarm clock for reminders, through its public API only.

The `reminders` table is the only persistent truth, and every delivery claims its row first, so the scheduler
only decides *when* to look. Its jobs live in memory (MemoryJobStore), one per reminder due within the next half
minute (bot.reminders.TIMER_HORIZON): they are read from the table at start and by every sweep, and kept in step
by the reminder hooks. A job lost with the process, or never known here (a reminder another
replica created), costs at most one sweep interval, since the periodic sweep delivers whatever is due and
unclaimed. No job store is shared between processes, as APScheduler's documentation requires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

SWEEP_JOB_ID = "reminders:sweep"


def reminder_job_id(reminder_id: int) -> str:
    return f"reminder:{reminder_id}"


class ReminderScheduler:
    """One BackgroundScheduler: a date job per reminder coming due that calls `wake(reminder_id)`, and the sweep."""

    def __init__(self, *, wake: Callable[[int], None], sweep: Callable[[], None], sweep_seconds: float,
                 workers: int = 4) -> None:
        self._wake = wake
        self._sweep = sweep
        self._sweep_seconds = sweep_seconds
        # "Running job …" twice per sweep is noise in Cloud Logging; failures still log at WARNING and above.
        for name in ("apscheduler.executors.default", "apscheduler.scheduler"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        self.scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        self.scheduler.start()
        # next_run_time=now: the first sweep runs at once, delivering whatever came due while we were down.
        self.scheduler.add_job(
            self._sweep, "interval", seconds=self._sweep_seconds, id=SWEEP_JOB_ID, replace_existing=True,
            next_run_time=datetime.now(UTC),
        )

    def schedule(self, reminder_id: int, run_at: datetime) -> None:
        """Idempotent: the same reminder's job is replaced (a moved meeting, a retry after a failure). A time already
        past fires at once, as misfire_grace_time=None never drops a late run; the claim still decides."""
        self.scheduler.add_job(
            self._wake, "date", run_date=run_at, args=[reminder_id], id=reminder_job_id(reminder_id),
            replace_existing=True,
        )

    def unschedule(self, reminder_id: int) -> None:
        with suppress(JobLookupError):  # already run, or never known to this process
            self.scheduler.remove_job(reminder_job_id(reminder_id))

    def next_wake(self, reminder_id: int) -> datetime | None:
        """When this process will next look at the reminder, or None when it holds no job for it."""
        job = self.scheduler.get_job(reminder_job_id(reminder_id))
        next_run: datetime | None = job.next_run_time if job is not None else None
        return next_run

    def reminder_jobs(self) -> dict[int, datetime]:
        """Every reminder job this process holds: reminder id → next run time."""
        return {job.args[0]: job.next_run_time for job in self.scheduler.get_jobs() if job.id != SWEEP_JOB_ID}

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
