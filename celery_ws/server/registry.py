"""Which local connection wants which events.

In memory and per process on purpose: each replica routes only its own
sockets, and everything another replica could need lives in Redis. What the
connections follow is also what this replica reads from Redis: each
subscription here follows (and, when it ends, unfollows) its channel on the
event bus, through :class:`Interest`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Never, Protocol

from ..keys import Keys
from ..protocol import event_order
from .wsconn import Peer

__all__ = ["Held", "Interest", "Registry", "Session"]

_NONE: frozenset[Never] = frozenset()


@dataclass(eq=False, slots=True)
class Session:
    """One connection's identity and subscriptions.

    Subscriptions are tuples, replaced on change: they change rarely and are
    few (a connection follows its user, and maybe a task or two); the shared
    empty tuple costs an idle connection nothing, a tuple of one 48 bytes
    where a frozenset of one is 216.
    """

    connection: Peer
    #: open mode: an unsubscribed connection sees every event
    firehose: bool = True
    #: the user this connection speaks for; None until identified
    identity: str | None = None
    users: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    #: ids of the events just replayed, so live events held meanwhile are not sent twice
    replayed: frozenset[str] = _NONE
    #: counts toward its identity's connections (``max_connections_per_user``)
    capped: bool = False


@dataclass(slots=True)
class Held:
    """Live events kept aside while a connection is replayed to. Their bytes
    count against ``write_buffer_limit`` like unsent socket bytes: a client
    that stops reading mid-replay must not grow the server without bound."""

    events: list[tuple[str, bytes]] = field(default_factory=list)
    size: int = 0


class Interest(Protocol):
    """The event bus, as the registry tells it what to read."""

    def follow(self, channel: str) -> None: ...

    def unfollow(self, channel: str) -> None: ...


class _Nobody:
    def follow(self, channel: str) -> None:
        pass

    def unfollow(self, channel: str) -> None:
        pass


class Registry:
    def __init__(self, interest: Interest | None = None, keys: Keys | None = None) -> None:
        self._interest = interest or _Nobody()
        self._keys = keys or Keys()
        self.sessions: dict[Peer, Session] = {}
        self._firehose: set[Peer] = set()
        self._by_user: defaultdict[str, set[Peer]] = defaultdict(set)
        self._by_task: defaultdict[str, set[Peer]] = defaultdict(set)
        #: how many connections the user their token names has, whatever they
        #: subscribe to (a count: a set of one connection would be 216 bytes)
        self._per_identity: dict[str, int] = {}
        #: connections being replayed to: their live events wait here, in order
        self.holding: dict[Peer, Held] = {}

    def __len__(self) -> int:
        return len(self.sessions)

    def add(self, session: Session, *, authenticated: bool = False) -> None:
        """Admit ``session``; an ``authenticated`` one counts toward its user's
        connection cap until it closes."""
        self.sessions[session.connection] = session
        if session.firehose:
            self._firehose.add(session.connection)
            self._interest.follow(self._keys.firehose)
        if authenticated and session.identity is not None:
            self._per_identity[session.identity] = self._per_identity.get(session.identity, 0) + 1
            session.capped = True

    def hold(self, session: Session) -> None:
        """Keep live events for ``session`` aside until :meth:`release`."""
        if session.connection in self.sessions:
            self.holding.setdefault(session.connection, Held())

    def hold_first(self, session: Session, events: list[tuple[str, bytes]]) -> None:
        """Stored events to send with the held ones (open questions re-sent)."""
        held = self.holding.get(session.connection)
        if held is not None and events:
            held.events[:0] = events
            held.size += sum(len(data) for _, data in events)

    def release(self, session: Session) -> list[str]:
        """The events held during a subscription, in id order (an event without
        an id keeps its place after the one before it), each once, minus those
        the replay sent."""
        held = self.holding.pop(session.connection, None)
        replayed, session.replayed = session.replayed, _NONE
        if held is None:
            return []
        order, keyed = (0, 0), []
        for n, (event_id, data) in enumerate(held.events):
            if event_id:
                order = event_order(event_id)
            keyed.append((order, n, event_id, data))
        sent = set(replayed)
        released = []
        for _, _, event_id, data in sorted(keyed):
            if event_id:
                if event_id in sent:
                    continue
                sent.add(event_id)
            released.append(data.decode())
        return released

    def remove(self, session: Session) -> None:
        conn = session.connection
        self.holding.pop(conn, None)
        if self.sessions.pop(conn, None) is None:
            return
        self._stop_firehose(conn)
        for user in session.users:
            _discard(self._by_user, user, conn)
            self._interest.unfollow(self._user_channel(user))
        for task in session.tasks:
            _discard(self._by_task, task, conn)
            self._interest.unfollow(self._task_channel(session, task))
        if session.capped and session.identity is not None:
            left = self._per_identity.pop(session.identity, 1) - 1
            if left:
                self._per_identity[session.identity] = left

    def forget(self, conn: Peer) -> None:
        """Remove the session of ``conn``, if it has one: it is closing."""
        session = self.sessions.get(conn)
        if session is not None:
            self.remove(session)

    def subscribe(self, session: Session, *, user_id: str | None, task_id: str | None) -> None:
        conn = session.connection
        if conn not in self.sessions:  # closed while the subscription was checked
            return
        session.firehose = False
        self._stop_firehose(conn)
        if user_id is not None and user_id not in session.users:
            session.users += (user_id,)
            self._by_user[user_id].add(conn)
            self._interest.follow(self._user_channel(user_id))
        if task_id is not None and task_id not in session.tasks:
            session.tasks += (task_id,)
            self._by_task[task_id].add(conn)
            self._interest.follow(self._task_channel(session, task_id))

    def channels(self, session: Session, user_id: str | None, task_id: str | None) -> list[str]:
        """The bus channels a subscription of ``session`` to (user, task) follows."""
        return [
            *([self._user_channel(user_id)] if user_id is not None else []),
            *([self._task_channel(session, task_id)] if task_id is not None else []),
        ]

    def _user_channel(self, user_id: str) -> str:
        return self._keys.home(user_id).user_events(user_id)

    def _task_channel(self, session: Session, task_id: str) -> str:
        """A task's stream is in its owner's home: the connection's user's (a
        token's user may follow only their own tasks; with one home, any)."""
        return self._keys.home(session.identity or task_id).task_events(task_id)

    def _stop_firehose(self, conn: Peer) -> None:
        if conn in self._firehose:
            self._firehose.discard(conn)
            self._interest.unfollow(self._keys.firehose)

    def unsubscribe(self, session: Session, *, user_id: str | None, task_id: str | None) -> None:
        conn = session.connection
        if user_id is not None and user_id in session.users:
            session.users = tuple(u for u in session.users if u != user_id)
            _discard(self._by_user, user_id, conn)
            self._interest.unfollow(self._user_channel(user_id))
        if task_id is not None and task_id in session.tasks:
            session.tasks = tuple(t for t in session.tasks if t != task_id)
            _discard(self._by_task, task_id, conn)
            self._interest.unfollow(self._task_channel(session, task_id))

    def targets(
        self, user_id: str | None, task_id: str | None, workflow_id: str | None = None
    ) -> AbstractSet[Peer]:
        """The connections an event for (user, task) goes to; a broadcast
        (neither) goes to all. Subscribing to a task follows its workflow: an
        event whose ``workflow_id`` is that task goes there too."""
        if user_id is None and task_id is None:
            return self.sessions.keys()
        by_user = self._by_user.get(user_id) if user_id else None
        by_task = self._by_task.get(task_id) if task_id else None
        if workflow_id is not None and workflow_id != task_id:
            by_flow = self._by_task.get(workflow_id)
            if by_flow:
                by_task = by_task | by_flow if by_task else by_flow
        if not by_task:
            return self._firehose | by_user if by_user else self._firehose
        return self._firehose | by_task | (by_user or set())

    def identity_connections(self, user_id: str) -> int:
        """Open connections authenticated as ``user_id``."""
        return self._per_identity.get(user_id, 0)

    def counts(self) -> dict[str, int]:
        return {"users": len(self._by_user), "tasks": len(self._by_task), "firehose": len(self._firehose)}


def _discard(index: defaultdict[str, set[Peer]], key: str, conn: Peer) -> None:
    conns = index.get(key)
    if conns is not None:
        conns.discard(conn)
        if not conns:
            del index[key]
