"""What a listener on every statement costs SQLAlchemy (issue 15, thirteenth slice).

A warm ORM ``SELECT`` by primary key on SQLite, three ways: no listener, a session
``do_orm_execute`` listener (the extension's bulk-delete guard), and an engine
``before_execute`` listener (the design that would replace it). CPU time per execute, the
three taking turns, 15 rounds of 5,000 each; the median and the minimum::

    python bench/orm_listener_cost.py
"""

from __future__ import annotations

import statistics
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ROUNDS = 15
EXECUTES = 5_000


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


def database() -> sa.Engine:
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(User(id=1, name="x"))
        session.commit()
    return engine


def per_execute(session: Session, executes: int = EXECUTES) -> float:
    """Microseconds of CPU per warm execute."""
    query = sa.select(User).where(User.id == 1)
    started = time.process_time()
    for _ in range(executes):
        session.execute(query).scalar_one()
    return (time.process_time() - started) / executes * 1e6


def main() -> None:
    plain = Session(database())
    orm_listened = Session(database())
    engine_listened = Session(database())

    @sa.event.listens_for(orm_listened, "do_orm_execute")
    def around(state: t.Any) -> None:
        if state.is_delete:
            return None
        return None

    @sa.event.listens_for(engine_listened.get_bind(), "before_execute")
    def before(connection: t.Any, clause: t.Any, *args: t.Any) -> None:
        if isinstance(clause, sa.Delete):
            return None
        return None

    sessions = {"no listener": plain, "do_orm_execute": orm_listened,
                "engine before_execute": engine_listened}
    for session in sessions.values():
        per_execute(session, 2_000)  # warm
    found: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(ROUNDS):
        for name, session in sessions.items():
            found[name].append(per_execute(session))
    for name, times in found.items():
        print(f"{name:22} median {statistics.median(times):5.1f} us, min {min(times):5.1f} us")


if __name__ == "__main__":
    main()
