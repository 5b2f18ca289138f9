"""APScheduler 3.x on the bot's own database: on-time triggers for reminders, plus a periodic sweep.

The `reminders` table is the truth and every delivery claims its row first, so the scheduler only decides
*when* to look. Several processes may share the job table: both may load the same job, the claim lets one
of them post, and the job store below tolerates the other process having removed a job already.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.util import utc_timestamp_to_datetime
from sqlalchemy import Engine, and_, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from storage.db import READ_ONLY_OPTION

log = logging.getLogger(__name__)

JOB_TABLE = "scheduler_jobs"
SWEEP_JOB_ID = "reminders:sweep"


def reminder_job_id(reminder_id: int) -> str:
    return f"reminder:{reminder_id}"


class SharedSQLAlchemyJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """The stock store on an engine it does not own, tolerant of other processes sharing the table.

    The scheduler loop reads this table after every added job. The stock store reads in a write transaction,
    which on SQLite queues behind (and then holds) the write lock an `/incident open` is waiting for, so the
    two polling reads below use read-only transactions.
    """

    def __init__(self, *, engine: Engine, tablename: str) -> None:
        super().__init__(engine=engine, tablename=tablename)
        self._reader = engine.execution_options(**{READ_ONLY_OPTION: True})

    def get_next_run_time(self) -> datetime | None:
        query = (select(self.jobs_t.c.next_run_time).where(self.jobs_t.c.next_run_time.is_not(None))
                 .order_by(self.jobs_t.c.next_run_time).limit(1))
        with self._reader.connect() as connection:
            return utc_timestamp_to_datetime(connection.execute(query).scalar())  # type: ignore[no-any-return]

    def _get_jobs(self, *conditions: Any) -> list[Any]:
        query = select(self.jobs_t.c.id, self.jobs_t.c.job_state).order_by(self.jobs_t.c.next_run_time)
        if conditions:
            query = query.where(and_(*conditions))
        with self._reader.connect() as connection:
            rows = connection.execute(query).all()
        jobs, broken = [], []
        for job_id, job_state in rows:
            try:
                jobs.append(self._reconstitute_job(job_state))
            except Exception:
                log.exception("unable to restore scheduler job %s; removing it", job_id)
                broken.append(job_id)
        if broken:
            with self.engine.begin() as connection:
                connection.execute(self.jobs_t.delete().where(self.jobs_t.c.id.in_(broken)))
        return jobs

    def start(self, scheduler: Any, alias: str) -> None:
        try:
            super().start(scheduler, alias)
        except SQLAlchemyError:
            # Two processes starting together race on CREATE TABLE; losing that race is fine.
            if not inspect(self.engine).has_table(self.jobs_t.name, schema=self.jobs_t.schema):
                raise

    def update_job(self, job: Any) -> None:
        try:
            super().update_job(job)
        except JobLookupError:
            log.debug("job %s was removed by another process", job.id)

    def remove_job(self, job_id: str) -> None:
        # The scheduler's own loop removes a date job after submitting it; if another process ran and removed
        # it first, the stock store raises and APScheduler's main loop thread would die.
        try:
            super().remove_job(job_id)
        except JobLookupError:
            log.debug("job %s was removed by another process", job_id)

    def shutdown(self) -> None:
        # The engine belongs to the application's Database; disposing it here would close others' pools.
        return None


class _ResilientScheduler(BackgroundScheduler):  # type: ignore[misc]
    """A database hiccup in the job loop must not kill the scheduler thread; it tries again shortly."""

    def _process_jobs(self) -> float | None:
        try:
            return super()._process_jobs()  # type: ignore[no-any-return]
        except Exception:
            log.exception("scheduler loop failed; retrying in %ss", self.jobstore_retry_interval)
            return float(self.jobstore_retry_interval)


class ReminderScheduler:
    """Owns one BackgroundScheduler. Job functions are given as "module:function" references with id args."""

    def __init__(self, engine: Engine, *, sweep_function: str, sweep_seconds: float, workers: int = 4) -> None:
        self._engine = engine
        self._sweep_function = sweep_function
        self._sweep_seconds = sweep_seconds
        # "Running job …" twice per sweep is noise in Cloud Logging; failures still log at WARNING and above.
        for name in ("apscheduler.executors.default", "apscheduler.scheduler"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        self.scheduler = _ResilientScheduler(
            jobstores={
                "default": SharedSQLAlchemyJobStore(engine=engine, tablename=JOB_TABLE),
                # The sweep is per process, so it never goes into the shared table.
                "local": MemoryJobStore(),
            },
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
            jobstore_retry_interval=5,
        )

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        self.scheduler.start()
        # next_run_time=now: the first sweep runs at once, delivering whatever came due while we were down.
        self.scheduler.add_job(
            self._sweep_function, "interval", seconds=self._sweep_seconds, id=SWEEP_JOB_ID, jobstore="local",
            replace_existing=True, next_run_time=datetime.now(UTC),
        )

    def schedule(self, func: str, job_id: str, run_at: datetime, args: list[Any]) -> None:
        """Idempotent: the same id replaces the earlier job (a moved meeting, a retry after a failure)."""
        # A trigger in the past would be "missed" by APScheduler; run it now instead (the claim still decides).
        run_at = max(run_at, datetime.now(UTC) + timedelta(milliseconds=50))
        try:
            self.scheduler.add_job(
                func, "date", run_date=run_at, args=args, id=job_id, jobstore="default", replace_existing=True,
            )
        except SQLAlchemyError:
            # The reminders table still holds it; the sweep delivers it on time give or take one interval.
            log.warning("could not store scheduler job %s; the sweep will deliver it", job_id, exc_info=True)

    def unschedule(self, job_id: str) -> None:
        try:
            self.scheduler.remove_job(job_id, jobstore="default")
        except JobLookupError:
            pass
        except SQLAlchemyError:
            log.warning("could not remove scheduler job %s; it will find nothing to do", job_id, exc_info=True)

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
