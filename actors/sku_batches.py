"""Group commit per SKU. A command queues for its SKU; whoever holds the SKU's mailbox next decides
every queued command, in order, each on the state the ones before it left, and appends all their events
in one commit (one commit for a burst on a hot SKU). A command that the domain refuses fails alone; a
concurrency conflict (another instance of the SKU wrote first) reloads the SKU and decides the batch
again. A command whose caller gave up before it was decided never runs."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable

from actors.entities import Entity, EntityHost
from domain import events as ev
from domain import inventory as inv
from domain.errors import DomainError
from store import repository as repo
from store.errors import ConcurrencyConflict, StoreUnavailable
from store.event_store import CommandContext, Deadline, EventStore, StreamAppend, build_records

MAX_DECIDE_ATTEMPTS = 20
Decide = Callable[[inv.Sku | None], list[ev.DomainEvent]]
Outcome = tuple[inv.Sku | None, list[ev.Recorded]]


@dataclasses.dataclass(slots=True)
class Queued:
    """A SKU command waiting for the SKU's mailbox, and where its outcome goes."""

    decide: Decide
    ctx: CommandContext
    result: asyncio.Future[Outcome]


class SkuBatches:
    def __init__(self, store: EventStore, host: EntityHost[inv.Sku | None], on_conflict: Callable[[], None],
                 on_records: Callable[[list[ev.Recorded]], None],
                 on_deadline: Callable[[dt.datetime | None], None] = lambda due: None) -> None:
        self.store = store
        self.host = host
        self.queues: dict[uuid.UUID, list[Queued]] = {}
        self._on_conflict = on_conflict
        self._on_records = on_records
        self._on_deadline = on_deadline  # told each deadline a commit stores with its events

    async def run(self, product_id: uuid.UUID, decide: Decide, ctx: CommandContext, fresh: bool = False) -> Outcome:
        """The SKU's state after the command, and the events it recorded (none: nothing changed). With
        ``fresh``, the SKU is read again from the store first (its state in memory may be behind)."""
        command = Queued(decide, ctx, asyncio.get_running_loop().create_future())
        self.queues.setdefault(product_id, []).append(command)
        if fresh:
            self.host.mark_stale(product_id)  # read again as its mailbox is taken
        try:
            async with self.host.entity(product_id) as ent:
                batch = [c for c in self.queues.pop(product_id, []) if not c.result.done()]
                if batch:
                    await self._apply_shielded(product_id, ent, batch, command)
        except BaseException:
            self._abandon(product_id, command)
            raise
        return await command.result

    async def _apply_shielded(self, product_id: uuid.UUID, ent: Entity[inv.Sku | None], batch: list[Queued],
                              own: Queued) -> None:
        """A leader that gives up still finishes its batch under the mailbox, the others' commands are in it;
        its own command is withdrawn unless it was already decided."""
        apply = asyncio.ensure_future(self._apply(product_id, ent, batch))
        try:
            await asyncio.shield(apply)
        except asyncio.CancelledError:
            if not own.result.done():
                own.result.cancel()
            await apply
            raise

    def _abandon(self, product_id: uuid.UUID, command: Queued) -> None:
        """The caller failed or gave up before its command ran: it must never run later."""
        queue = self.queues.get(product_id, [])
        if command in queue:
            queue.remove(command)
            if not queue:
                del self.queues[product_id]
        if not command.result.done():
            command.result.cancel()

    async def _apply(self, product_id: uuid.UUID, ent: Entity[inv.Sku | None], batch: list[Queued]) -> None:
        try:
            for _ in range(MAX_DECIDE_ATTEMPTS):
                if await self._try_apply(product_id, ent, batch):
                    return
                self._on_conflict()
                ent.state, _ = await repo.load(self.store, repo.SKU, product_id)
                if ent.state is None:  # the append found events there, and none of a SKU's: a final answer
                    raise inv.ProductIdTaken(product_id)
            raise ConcurrencyConflict(product_id, -1)
        except Exception as e:
            self.host.mark_stale(product_id)  # the append may have committed all the same (a lost answer)
            for command in batch:
                if not command.result.done():
                    command.result.set_exception(e)
        except BaseException:  # cancelled, perhaps while its append was under way: its outcome is unknown too
            self.host.mark_stale(product_id)
            raise
        finally:
            for command in batch:  # interrupted (cancelled): the waiting callers must not hang
                if not command.result.done():
                    command.result.set_exception(StoreUnavailable("the command was interrupted; retry"))

    async def _try_apply(self, product_id: uuid.UUID, ent: Entity[inv.Sku | None], batch: list[Queued]) -> bool:
        """Decide the batch on the current state and append; False on a concurrency conflict."""
        state: inv.Sku | None = ent.state
        version = state.version if state else 0
        decided: list[tuple[Queued, list[ev.DomainEvent] | Exception]] = []
        events: list[ev.DomainEvent] = []
        contexts: list[CommandContext] = []
        preview = state  # the state after the commands decided so far, before anything is stored
        # Found once on the state the batch starts from, the earliest expiry is carried along to the preview and
        # to the state stored after (each derives from this one), so the next batches need not look for it.
        inv.next_expiry(state)
        for command in batch:
            if command.result.done():  # its caller gave up before the command was decided: it never runs
                continue
            try:
                own = command.decide(preview)
            except DomainError as e:
                decided.append((command, e))
                continue
            decided.append((command, own))
            if own:
                preview = repo.fold(repo.SKU, preview, build_records(
                    [StreamAppend(product_id, inv.AGGREGATE_TYPE, version + len(events), own)], command.ctx))
            events += own
            contexts += [command.ctx] * len(own)
        records: list[ev.Recorded] = []
        if events:
            due = inv.next_expiry(preview)
            append = StreamAppend(product_id, inv.AGGREGATE_TYPE, version, events, contexts, Deadline(due))
            try:
                records = await self.store.append([append], contexts[0])
            except ConcurrencyConflict:
                return False
            finally:  # also when the outcome is unknown (the commit may have been made): a wake costs a pass
                self._on_deadline(due)
            ent.state = repo.fold(repo.SKU, state, records)
            self._on_records(records)
        self._settle(decided, ent.state, records)
        return True

    @staticmethod
    def _settle(decided: list[tuple[Queued, list[ev.DomainEvent] | Exception]], state: inv.Sku | None,
                records: list[ev.Recorded]) -> None:
        """Give each command its outcome: its error, or the state and its own share of the records."""
        position = 0
        for command, outcome in decided:
            mine: list[ev.Recorded] = []
            if isinstance(outcome, list):
                mine = records[position:position + len(outcome)]
                position += len(outcome)
            if command.result.done():  # its caller gave up while the batch ran
                continue
            if isinstance(outcome, Exception):
                command.result.set_exception(outcome)
            else:
                command.result.set_result((state, mine))
