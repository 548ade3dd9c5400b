"""The Redis cart store on a real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace

import pytest

import store.carts as cart_store
from actors.views import OrderView, Placed
from commerce import usecases as uc
from commerce.auth import Principal, Role
from domain.cart import Cart, CartStatus, checkout_order_id
from domain.errors import NotFound, TransitionForbidden
from domain.order import OrderAlreadyExists, OrderLine, OrderStatus, OrderTooLarge, order_total
from store.carts import ACTIVITY, RedisCartStore
from store.durable_carts import CartJournal, DurableCartStore
from store.event_store import PostgresEventStore
from tests.integration.ray_support import eventually
from tests.support import Servers


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
async def carts(servers: Servers) -> AsyncIterator[RedisCartStore]:
    store = RedisCartStore.from_url(servers.redis_url, ttl=3600)
    yield store
    await store.close()


@pytest.fixture
async def own_metrics(carts: RedisCartStore, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """An activity set and counters of this test's own: the Redis is shared with other tests and runs,
    so the shared ones would allow only deltas, and a concurrent run would blur even those."""
    suffix = uuid.uuid4().hex
    keys = []
    for name in ("ACTIVITY", "OPERATIONS", "COUNTERS"):
        keys.append(f"{getattr(cart_store, name)}:test:{suffix}")
        monkeypatch.setattr(cart_store, name, keys[-1])
    yield
    await carts.redis.delete(*keys)


async def a_cart_with_a_line(carts: RedisCartStore, at: dt.datetime | None = None) -> uuid.UUID:
    cart_id = uuid.uuid4()
    await carts.create(cart_id, uuid.uuid4(), at or now())
    await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("2.00"), at or now())
    return cart_id


async def test_fifty_concurrent_updates_of_one_cart_lose_none(carts: RedisCartStore) -> None:
    cart_id = uuid.uuid4()
    await carts.create(cart_id, uuid.uuid4(), now())
    products = [uuid.uuid4() for _ in range(50)]
    await asyncio.gather(*[carts.set_line(cart_id, p, k + 1, Decimal("1.00"), now()) for k, p in enumerate(products)])
    cart = await carts.get(cart_id)
    assert len(cart.lines) == 50 and cart.total == Decimal(sum(range(1, 51)))


async def test_every_change_refreshes_the_ttl(carts: RedisCartStore) -> None:
    cart_id = uuid.uuid4()
    await carts.create(cart_id, uuid.uuid4(), now())
    await carts.redis.expire(f"cart:{cart_id}", 5)
    await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("2.00"), now())
    assert await carts.redis.ttl(f"cart:{cart_id}") > 3000


async def test_an_expired_cart_is_not_found(servers: Servers) -> None:
    short = RedisCartStore.from_url(servers.redis_url, ttl=1)
    try:
        cart_id = uuid.uuid4()
        await short.create(cart_id, uuid.uuid4(), now())

        async def exists() -> bool:
            try:
                await short.get(cart_id)
                return True
            except NotFound:
                return False

        assert await eventually(exists, lambda found: not found, timeout=10) is False
    finally:
        await short.close()


async def test_two_checkouts_name_one_order(carts: RedisCartStore) -> None:
    cart_id = uuid.uuid4()
    await carts.create(cart_id, uuid.uuid4(), now())
    await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("2.00"), now())
    first, second = await asyncio.gather(carts.begin_checkout(cart_id, uuid.uuid4(), now()),
                                         carts.begin_checkout(cart_id, uuid.uuid4(), now()))
    assert first.order_id == second.order_id is not None
    await carts.finish_checkout(cart_id, first.order_id, first.lines)
    assert (await carts.get(cart_id)).status is CartStatus.CHECKED_OUT
    with pytest.raises(TransitionForbidden):
        await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("1.00"), now())


async def test_carts_that_expired_leave_the_activity_set_when_the_next_cart_is_made(carts: RedisCartStore) -> None:
    stale, fresh = uuid.uuid4(), uuid.uuid4()
    await carts.create(stale, uuid.uuid4(), now() - dt.timedelta(seconds=2 * carts.ttl))
    assert await carts.redis.zscore(ACTIVITY, str(stale)) is not None
    await carts.create(fresh, uuid.uuid4(), now())
    assert await carts.redis.zscore(ACTIVITY, str(stale)) is None
    assert await carts.redis.zscore(ACTIVITY, str(fresh)) is not None


async def test_another_customers_cart_is_not_found_by_the_store_and_stays_unchanged(carts: RedisCartStore) -> None:
    cart_id, owner, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await carts.create(cart_id, owner, now())
    for attempt in (carts.get(cart_id, other),
                    carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("1.00"), now(), owner=other),
                    carts.begin_checkout(cart_id, uuid.uuid4(), now(), owner=other)):
        with pytest.raises(NotFound):
            await attempt
    cart = await carts.get(cart_id, owner)
    assert cart.lines == () and cart.status is CartStatus.OPEN


# --- writers at once --------------------------------------------------------------------------------


async def test_concurrent_writers_of_one_line_each_get_back_their_own_write(carts: RedisCartStore) -> None:
    cart_id, product = uuid.uuid4(), uuid.uuid4()
    base = now()
    await carts.create(cart_id, uuid.uuid4(), base)
    writes = {q: base + dt.timedelta(seconds=q) for q in range(1, 51)}  # quantity -> its writer's clock
    seen = await asyncio.gather(*[carts.set_line(cart_id, product, q, Decimal(q), at) for q, at in writes.items()])
    assert [([line.quantity for line in cart.lines], cart.updated_at) for cart in seen] == [
        ([q], at) for q, at in writes.items()]


async def test_concurrent_writers_of_one_line_leave_one_writers_whole_write(carts: RedisCartStore,
                                                                            own_metrics: None) -> None:
    cart_id, product = uuid.uuid4(), uuid.uuid4()
    base = now()
    await carts.create(cart_id, uuid.uuid4(), base)
    writes = {q: base + dt.timedelta(seconds=q) for q in range(1, 51)}  # quantity -> its writer's clock
    await asyncio.gather(*[carts.set_line(cart_id, product, q, Decimal(q), at) for q, at in writes.items()])
    cart = await carts.get(cart_id)
    [line] = cart.lines
    last = writes[line.quantity]
    assert (line.unit_price, cart.updated_at) == (Decimal(line.quantity), last)
    assert await carts.redis.zscore(cart_store.ACTIVITY, str(cart_id)) == pytest.approx(last.timestamp(), abs=1e-3)
    assert 0 < await carts.redis.ttl(f"cart:{cart_id}") <= carts.ttl


async def test_a_line_set_during_checkout_is_in_the_checked_out_cart_or_refused(carts: RedisCartStore) -> None:
    cart_id = await a_cart_with_a_line(carts)
    before = {line.product_id for line in (await carts.get(cart_id)).lines}
    products = [uuid.uuid4() for _ in range(60)]

    async def lands(product: uuid.UUID) -> bool:
        try:
            await carts.set_line(cart_id, product, 1, Decimal("1.00"), now())
            return True
        except TransitionForbidden:
            return False

    outcomes = await asyncio.gather(*[lands(p) for p in products[:30]],
                                    carts.begin_checkout(cart_id, uuid.uuid4(), now()),
                                    *[lands(p) for p in products[30:]])
    checkout: Cart = outcomes.pop(30)
    landed = {p for p, ok in zip(products, outcomes, strict=True) if ok}
    assert {line.product_id for line in checkout.lines} == before | landed
    assert (await carts.get(cart_id)).lines == checkout.lines


# --- checkout once ----------------------------------------------------------------------------------


async def checked_out(carts: RedisCartStore) -> int:
    return int((await carts.stats(now(), 0))["checked_out"])


async def test_a_checkout_retried_after_a_crash_gets_the_order_pinned_first(carts: RedisCartStore) -> None:
    cart_id, pinned = await a_cart_with_a_line(carts), uuid.uuid4()
    first = await carts.begin_checkout(cart_id, pinned, now())
    retry = await carts.begin_checkout(cart_id, uuid.uuid4(), now())  # finish_checkout never ran
    assert (retry.order_id, retry.status, retry.lines) == (pinned, CartStatus.CHECKING_OUT, first.lines)


async def test_a_pinned_cart_stays_checking_out_until_the_checkout_finishes(carts: RedisCartStore) -> None:
    cart_id = await a_cart_with_a_line(carts)
    pinned = await carts.begin_checkout(cart_id, uuid.uuid4(), now())
    await carts.begin_checkout(cart_id, uuid.uuid4(), now())
    assert (await carts.get(cart_id)).status is CartStatus.CHECKING_OUT
    await carts.finish_checkout(cart_id, pinned.order_id, pinned.lines)
    assert (await carts.get(cart_id)).status is CartStatus.CHECKED_OUT


async def test_a_retried_and_twice_finished_checkout_counts_once(carts: RedisCartStore, own_metrics: None) -> None:
    cart_id = await a_cart_with_a_line(carts)
    order_id = uuid.uuid4()
    for _ in range(2):
        began = await carts.begin_checkout(cart_id, order_id, now())
        await carts.finish_checkout(cart_id, order_id, began.lines)
    stats = await carts.stats(now(), 0)
    assert (stats["checked_out"], stats["operations"]["checkout"]) == (1, 1)


async def test_an_aborted_checkout_reopens_the_cart_and_no_longer_counts(carts: RedisCartStore,
                                                                         own_metrics: None) -> None:
    cart_id, order_id = await a_cart_with_a_line(carts), uuid.uuid4()
    began = await carts.begin_checkout(cart_id, order_id, now())
    await carts.abort_checkout(cart_id, began.version)
    cart = await carts.get(cart_id)
    assert (cart.status, cart.order_id, await checked_out(carts)) == (CartStatus.OPEN, None, 0)
    assert await carts.redis.zscore(cart_store.ACTIVITY, str(cart_id)) is not None
    await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("1.00"), now())


async def test_aborts_repeated_even_at_once_uncount_a_checkout_once(carts: RedisCartStore, own_metrics: None) -> None:
    cart_id, order_id = await a_cart_with_a_line(carts), uuid.uuid4()
    began = await carts.begin_checkout(cart_id, order_id, now())
    await asyncio.gather(*[carts.ping() for _ in range(10)])  # connections open, so the aborts do run at once
    await asyncio.gather(*[carts.abort_checkout(cart_id, began.version) for _ in range(10)])
    await carts.abort_checkout(cart_id, began.version)
    assert ((await carts.get(cart_id)).status, await checked_out(carts)) == (CartStatus.OPEN, 0)


async def test_an_abort_of_an_earlier_checkout_leaves_a_later_one_alone(carts: RedisCartStore,
                                                                         own_metrics: None) -> None:
    """Every checkout of a cart names the same order: a request of a refused checkout that is refused late
    (it had joined that checkout) must not open the cart while a later checkout places its order."""
    cart_id, order_id = await a_cart_with_a_line(carts), uuid.uuid4()
    first = await carts.begin_checkout(cart_id, order_id, now())
    joined = await carts.begin_checkout(cart_id, order_id, now())  # a double click: the same checkout
    await carts.abort_checkout(cart_id, first.version)
    await carts.set_line(cart_id, uuid.uuid4(), 2, Decimal("1.00"), now())  # the customer changes the cart
    later = await carts.begin_checkout(cart_id, order_id, now())
    await carts.abort_checkout(cart_id, joined.version)  # the double click's order was refused too, late
    cart = await carts.get(cart_id)
    assert (cart.status, cart.order_id, cart.version, await checked_out(carts)) == (
        CartStatus.CHECKING_OUT, order_id, later.version, 1)
    assert (await carts.finish_checkout(cart_id, order_id, later.lines)).status is CartStatus.CHECKED_OUT


async def test_a_cart_opened_again_and_changed_whose_order_was_placed_after_all_is_checked_out_with_its_lines(
        carts: RedisCartStore, own_metrics: None) -> None:
    """One request of a checkout was refused and opened the cart, which the customer then changed; another
    request of the same checkout placed the order: the cart is checked out with that order and its lines,
    counted once, and no longer abandoned."""
    cart_id, order_id = await a_cart_with_a_line(carts), uuid.uuid4()
    began = await carts.begin_checkout(cart_id, order_id, now())
    await carts.abort_checkout(cart_id, began.version)
    await carts.set_line(cart_id, uuid.uuid4(), 5, Decimal("1.00"), now())
    assert await carts.redis.zscore(cart_store.ACTIVITY, str(cart_id)) is not None
    finished = await carts.finish_checkout(cart_id, order_id, began.lines)
    assert (finished.status, finished.order_id, finished.lines) == (CartStatus.CHECKED_OUT, order_id, began.lines)
    assert await checked_out(carts) == 1
    assert await carts.redis.zscore(cart_store.ACTIVITY, str(cart_id)) is None
    with pytest.raises(TransitionForbidden):
        await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("1.00"), now())
    again = await carts.begin_checkout(cart_id, uuid.uuid4(), now())
    assert (again.status, again.order_id, again.lines) == (CartStatus.CHECKED_OUT, order_id, began.lines)


async def test_an_abort_after_the_checkout_finished_changes_nothing(carts: RedisCartStore, own_metrics: None) -> None:
    cart_id, order_id = await a_cart_with_a_line(carts), uuid.uuid4()
    began = await carts.begin_checkout(cart_id, order_id, now())
    await carts.finish_checkout(cart_id, order_id, began.lines)
    await carts.abort_checkout(cart_id, began.version)
    cart = await carts.get(cart_id)
    assert (cart.status, cart.order_id, await checked_out(carts)) == (CartStatus.CHECKED_OUT, order_id, 1)


# --- expiry and abandonment -------------------------------------------------------------------------


async def test_beginning_a_checkout_refreshes_the_ttl_like_every_change(carts: RedisCartStore) -> None:
    cart_id = await a_cart_with_a_line(carts)
    await carts.redis.expire(f"cart:{cart_id}", 5)  # idle almost up to its expiry
    await carts.begin_checkout(cart_id, uuid.uuid4(), now())
    assert 3000 < await carts.redis.ttl(f"cart:{cart_id}") <= carts.ttl


async def test_a_finished_checkout_keeps_the_cart_expiring(carts: RedisCartStore) -> None:
    cart_id = await a_cart_with_a_line(carts)
    order_id = uuid.uuid4()
    began = await carts.begin_checkout(cart_id, order_id, now())
    await carts.finish_checkout(cart_id, order_id, began.lines)
    assert 0 < await carts.redis.ttl(f"cart:{cart_id}") <= carts.ttl


async def test_stats_count_each_cart_made_and_each_checked_out_once(carts: RedisCartStore, own_metrics: None) -> None:
    made = [await a_cart_with_a_line(carts) for _ in range(4)]
    again, customer = uuid.uuid4(), uuid.uuid4()
    for _ in range(2):
        await carts.create(again, customer, now())  # a retried request finds its cart made
    for cart_id in made[:2]:
        await carts.begin_checkout(cart_id, uuid.uuid4(), now())
    stats = await carts.stats(now(), 0)
    assert (stats["created"], stats["checked_out"]) == (5, 2)
    assert stats["operations"] == {"create": 5, "set_item": 4, "checkout": 2}


async def test_stats_count_idle_open_carts_as_abandoned_and_checked_out_ones_as_neither(
        carts: RedisCartStore, own_metrics: None) -> None:
    idle = [await a_cart_with_a_line(carts, now() - dt.timedelta(minutes=30)) for _ in range(4)]
    active = [await a_cart_with_a_line(carts) for _ in range(3)]
    for cart_id in (*idle[:2], active[0]):
        await carts.begin_checkout(cart_id, uuid.uuid4(), now())
    stats = await carts.stats(now(), abandoned_after=15 * 60)
    assert (stats["abandoned"], stats["open"]) == (2, 4)


async def test_a_cart_holds_at_most_as_many_products_as_an_order_may(carts: RedisCartStore) -> None:
    from domain.cart import CartFull
    from domain.order import MAX_LINES

    cart_id, customer = uuid.uuid4(), uuid.uuid4()
    await carts.create(cart_id, customer, now())
    products = [uuid.uuid4() for _ in range(MAX_LINES)]
    for pid in products:
        cart = await carts.set_line(cart_id, pid, 1, Decimal("1.00"), now())
    assert len(cart.lines) == MAX_LINES
    with pytest.raises(CartFull):
        await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("1.00"), now())
    unchanged = await carts.get(cart_id)
    assert unchanged.lines == cart.lines and unchanged.version == cart.version  # the refusal changed nothing
    changed = await carts.set_line(cart_id, products[0], 5, Decimal("1.00"), now())  # a product it holds
    assert {line.quantity for line in changed.lines if line.product_id == products[0]} == {5}
    await carts.set_line(cart_id, products[1], 0, Decimal("0"), now())  # a line removed makes room again
    assert len((await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("1.00"), now())).lines) == MAX_LINES


# --- checkout through the use case, on the durable cart store ------------------------------------------


class Orders:
    """The order shard as the checkout sees it. Each create_order waits for the test's verdict: an error to
    raise, or None to place the order as decide_create does (the first lines placed under an id are its
    order's; the same lines again answer with it, other lines raise OrderAlreadyExists)."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[list[tuple[uuid.UUID, int]], asyncio.Future[Exception | None]]] = \
            asyncio.Queue()
        self.placed: dict[uuid.UUID, OrderView] = {}

    def place(self, order_id: uuid.UUID, customer_id: uuid.UUID, items: list[tuple[uuid.UUID, int]]) -> Placed:
        lines = tuple(OrderLine(pid, qty, Decimal("2.00")) for pid, qty in items)
        order = self.placed.setdefault(order_id, OrderView(order_id, customer_id, OrderStatus.PENDING, lines,
                                                           order_total(lines), now(), now(), 1, uuid.uuid4()))
        if order.customer_id != customer_id or {(x.product_id, x.quantity) for x in order.lines} != set(items):
            raise OrderAlreadyExists(f"order {order_id} exists for another customer or with other lines")
        return Placed(order_id, order.status, order.saga_id)

    async def create_order(self, order_id: uuid.UUID, customer_id: uuid.UUID, items: list[tuple[uuid.UUID, int]],
                           shipping_address: dict[str, str], payment_token: str) -> Placed:
        verdict: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        await self.calls.put((items, verdict))
        error = await verdict
        if error is not None:
            raise error
        return self.place(order_id, customer_id, items)

    async def get_order(self, order_id: uuid.UUID) -> OrderView:
        if order_id not in self.placed:
            raise NotFound(f"unknown order {order_id}")
        return self.placed[order_id]


@pytest.fixture
async def checkouts(carts: RedisCartStore, event_store: PostgresEventStore) -> SimpleNamespace:
    return SimpleNamespace(carts=DurableCartStore(carts, CartJournal(event_store.pool)), orders=Orders())


ADMIN = Principal(Role.ADMIN, "admin")
ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}


async def checking_out(svc: SimpleNamespace, cart_id: uuid.UUID) -> tuple[
        asyncio.Task[tuple[uuid.UUID, dict[str, object]]], list[tuple[uuid.UUID, int]], asyncio.Future[Exception | None]]:
    """A checkout request, once it has asked for its order: the task, the lines it asked for, and its verdict.
    A request that ends without asking fails the test (rather than leaving it waiting)."""
    task = asyncio.create_task(uc.checkout(svc, ADMIN, cart_id, ADDRESS, "tok_visa"))
    call = asyncio.ensure_future(svc.orders.calls.get())
    await asyncio.wait({task, call}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if not call.done():
        call.cancel()
        raise AssertionError(f"the checkout did not ask for its order: {task.result() if task.done() else 'waiting'}")
    items, verdict = call.result()
    return task, items, verdict


async def lines_of(svc: SimpleNamespace, cart_id: uuid.UUID) -> list[tuple[uuid.UUID, int]]:
    return sorted((x.product_id, x.quantity) for x in (await svc.carts.get(cart_id)).lines)


async def test_a_double_clicked_checkout_refused_late_does_not_open_the_checkout_that_followed(
        checkouts: SimpleNamespace) -> None:
    svc = checkouts
    cart = await svc.carts.create(uuid.uuid4(), uuid.uuid4(), now())
    first_line, second_line = uuid.uuid4(), uuid.uuid4()
    await svc.carts.set_line(cart.id, first_line, 1, Decimal("2.00"), now())
    first, items_a, verdict_a = await checking_out(svc, cart.id)
    double_click, items_b, verdict_b = await checking_out(svc, cart.id)  # joins the same checkout
    assert items_a == items_b == [(first_line, 1)]
    verdict_a.set_result(OrderTooLarge("refused"))
    with pytest.raises(OrderTooLarge):
        await first
    assert (await svc.carts.get(cart.id)).status is CartStatus.OPEN  # the customer's again, to change
    await svc.carts.set_line(cart.id, first_line, 0, Decimal("2.00"), now(), "remove_item")
    await svc.carts.set_line(cart.id, second_line, 3, Decimal("2.00"), now())
    later, items_c, verdict_c = await checking_out(svc, cart.id)
    assert items_c == [(second_line, 3)]
    verdict_b.set_result(OrderTooLarge("refused"))  # the double click, refused late
    with pytest.raises(OrderTooLarge):
        await double_click
    assert (await svc.carts.get(cart.id)).status is CartStatus.CHECKING_OUT
    verdict_c.set_result(None)
    order_id, answer = await later
    after = await svc.carts.get(cart.id)
    assert (after.status, after.order_id, answer["order_id"]) == (CartStatus.CHECKED_OUT, order_id, str(order_id))
    assert [(x.product_id, x.quantity) for x in svc.orders.placed[order_id].lines] == await lines_of(svc, cart.id)
    with pytest.raises(TransitionForbidden):  # the cart places no second order
        await svc.carts.set_line(cart.id, first_line, 1, Decimal("2.00"), now())


async def test_a_double_click_placed_after_the_cart_was_opened_and_changed_checks_the_cart_out_with_its_order(
        checkouts: SimpleNamespace) -> None:
    """The first request was refused and opened the cart; the customer changed it; the double click's order
    went through after all (and the cart's copy in Redis was lost meanwhile). The cart is checked out with
    that order's lines, and a later checkout answers with that order."""
    svc = checkouts
    cart = await svc.carts.create(uuid.uuid4(), uuid.uuid4(), now())
    placed_line = uuid.uuid4()
    await svc.carts.set_line(cart.id, placed_line, 2, Decimal("2.00"), now())
    first, _, verdict_a = await checking_out(svc, cart.id)
    double_click, _, verdict_b = await checking_out(svc, cart.id)
    verdict_a.set_result(OrderTooLarge("refused"))
    with pytest.raises(OrderTooLarge):
        await first
    await svc.carts.set_line(cart.id, uuid.uuid4(), 1, Decimal("2.00"), now())  # changed while open
    await svc.carts.redis.forget(cart.id)  # the copy in Redis lost: the record puts it back
    verdict_b.set_result(None)
    order_id, answer = await double_click
    after = await svc.carts.get(cart.id)
    assert (after.status, after.order_id) == (CartStatus.CHECKED_OUT, order_id)
    assert await lines_of(svc, cart.id) == [(placed_line, 2)]
    again = await asyncio.wait_for(uc.checkout(svc, ADMIN, cart.id, ADDRESS, "tok_visa"), 60)  # places nothing
    assert again == (order_id, answer) and svc.orders.calls.empty()


async def test_a_checkout_whose_order_exists_from_other_lines_answers_with_it_and_checks_the_cart_out(
        checkouts: SimpleNamespace) -> None:
    """The cart's order was placed from the lines the cart had then, by a request that stopped before it
    could check the cart out; the cart was opened and changed since. The next checkout answers with that
    order, and the cart is checked out with its lines, rather than left in a checkout that never finishes."""
    svc = checkouts
    cart = await svc.carts.create(uuid.uuid4(), uuid.uuid4(), now())
    placed_line = uuid.uuid4()
    order_id = checkout_order_id(cart.id)
    placed = svc.orders.place(order_id, cart.customer_id, [(placed_line, 4)])
    await svc.carts.set_line(cart.id, uuid.uuid4(), 1, Decimal("2.00"), now())
    attempt, _, verdict = await checking_out(svc, cart.id)
    verdict.set_result(None)  # placed as decide_create would: other lines under the order's id are refused
    assert await attempt == (order_id, placed.json())
    after = await svc.carts.get(cart.id)
    assert (after.status, after.order_id) == (CartStatus.CHECKED_OUT, order_id)
    assert await lines_of(svc, cart.id) == [(placed_line, 4)]
