"""The two SQL idioms the bot relies on, written once for SQLite and PostgreSQL: the upsert and the row lease.

Both take the caller's session: the handler or job owns the unit of work, these only add a statement to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, Connection, Table, inspect, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from storage.db import CoreWork
from storage.models import Base

Insert: TypeAlias = postgresql.Insert | sqlite.Insert
# The row that was refused by the conflict, as `excluded.<column>`: how an update refers to the incoming values.
Excluded: TypeAlias = Any
SetValues: TypeAlias = Mapping[str, Any] | Callable[[Excluded], Mapping[str, Any]]
Condition: TypeAlias = ColumnElement[bool] | Callable[[Excluded], ColumnElement[bool]]

_UNSEEN: Any = object()


def dialect_name(session: Session | Connection | CoreWork) -> str:
    """"postgresql" or "sqlite": the database a session, a Core connection or Core work talks to."""
    if isinstance(session, Session):
        return session.get_bind().dialect.name
    return (session.connection if isinstance(session, CoreWork) else session).dialect.name


def insert(session: Session | str, model: type[Base] | Table) -> Insert:
    """The dialect's INSERT (of the session's database, or named), the one that knows ON CONFLICT (both dialects
    spell it the same way). Given a model's Table rather than the model, it is a Core statement, which skips the
    ORM's bulk-insert bookkeeping."""
    dialect = session if isinstance(session, str) else dialect_name(session)
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return dialect_insert(model)


def upsert(
    session: Session | str, model: type[Base] | Table, values: Mapping[str, Any] | None, *,
    index_elements: Sequence[str],
    set_: SetValues | None = None, where: Condition | None = None,
) -> Insert:
    """INSERT … ON CONFLICT (index_elements): DO NOTHING when `set_` is None, else DO UPDATE SET `set_` [WHERE].

    `set_` and `where` may be callables given the conflicting row's incoming values (`excluded`). Add
    `.returning(...)` to learn whether a row was written: psycopg's rowcount is not exact for a conditional upsert.
    With `values` None the row comes as the execution's parameters, so a hot path can build the statement once.
    """
    statement = insert(session, model)
    if values is not None:
        statement = statement.values(**values)
    if set_ is None:
        if where is not None:
            raise ValueError("`where` only applies to DO UPDATE; give `set_` too")
        return statement.on_conflict_do_nothing(index_elements=list(index_elements))
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=list(index_elements),
        set_=dict(set_(excluded) if callable(set_) else set_),
        where=where(excluded) if callable(where) else where,
    )


def _set_lease(session: Session, lease: InstrumentedAttribute[datetime | None], conditions: Sequence[Any],
               until: datetime, *, keep_updated_at: bool = False) -> bool:
    model = lease.class_
    mapper = inspect(model)
    values: dict[str, Any] = {lease.key: until}
    if keep_updated_at and "updated_at" in mapper.columns:
        values["updated_at"] = mapper.columns["updated_at"]
    # RETURNING, not rowcount: it names exactly the rows this statement changed, on psycopg as on sqlite3.
    statement = update(model).where(*conditions).values(values).returning(*mapper.primary_key)
    return session.execute(statement).first() is not None


def claim_lease(
    session: Session, lease: InstrumentedAttribute[datetime | None], *where: ColumnElement[bool],
    now: datetime, until: datetime, seen: datetime | None = _UNSEEN,
) -> bool:
    """Takes the lease on the row(s) matching `where` when nobody holds it at `now`: one conditional UPDATE, so of
    concurrent claimers exactly one wins. True when this call took it.

    With `seen` (the lease the caller read before), it is also a compare-and-set on that value: the claim fails if
    anyone claimed the row in between, so the caller knows whether an earlier claim may have done the work.
    """
    conditions: list[Any] = [*where, or_(lease.is_(None), lease < now)]
    if seen is not _UNSEEN:
        conditions.append(lease.is_(None) if seen is None else lease == seen)
    return _set_lease(session, lease, conditions, until)


def renew_lease(
    session: Session, lease: InstrumentedAttribute[datetime | None], *where: ColumnElement[bool],
    held: datetime, until: datetime,
) -> bool:
    """Moves the lease this caller holds (its value is still `held`) on to `until`; False when it was lost. The
    row's updated_at stays: the holder keeping its lease changes nothing anyone sees, and a holder that showed the
    row (the announcement's poster) tells by updated_at whether it changed since."""
    return _set_lease(session, lease, [*where, lease == held], until, keep_updated_at=True)
