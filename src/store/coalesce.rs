//! Concurrent checks in one store call. While `flights` script calls are in flight in an
//! isolate, checks that arrive wait in a queue; when one of the calls returns, the first of
//! them carries the queue in the next call, and each gets its own answer. A check that finds
//! a flight free goes at once: batching never delays an uncontended request, and under load
//! a queued check waits only for the first of several calls in flight, not for one.
//!
//! The Workers runtime shapes the design (its rules are checked on workerd by
//! tests/e2e/runtime-rules.test.mjs; docs/runtime.md):
//! - a request may not use I/O objects of another, so the carrier hands its mates plain
//!   values (their reply numbers), never a response;
//! - a promise made by one request and resolved by another runs its continuation in the
//!   request that made it, so a waiting request is woken by a promise of its own
//!   ([`Parking`]) and then makes its own call if it is to carry;
//! - a request that waits on nothing of its own is cancelled as hung, so every wait runs
//!   against a timer of the waiting request's own, and ends at it. A request whose carrier
//!   was cancelled therefore gets its answer within that time, or the store's fallback.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;

use super::StoreError;
use crate::core::algorithm::Millis;

/// How a waiting request is woken: a bell it made itself, rung by whoever answers it, and
/// a wait that ends when the bell rings or the request's own timer does.
pub trait Parking {
    type Bell;
    fn park(&self, timeout_ms: u64) -> (Self::Bell, impl Future<Output = ()>);
    fn ring(bell: &Self::Bell);
}

/// One queued check: its operation until a carrier takes it, then its answer.
struct Seat<Op, Reply, Bell> {
    op: RefCell<Option<Op>>,
    answer: RefCell<Option<Result<Reply, StoreError>>>,
    /// Set when this seat is to carry the queue in the next call: the flight handed to it.
    carry: Cell<Option<u64>>,
    bell: Bell,
}

type Queue<Op, Reply, Bell> = RefCell<VecDeque<Rc<Seat<Op, Reply, Bell>>>>;

/// Calls and operations carried, for the status and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    pub calls: u64,
    pub ops: u64,
}

/// The calls in flight (or handed to a woken seat that is due to start one), each with the
/// time it counts until. A deadline, not a flag, so a carrier that never returns (its request
/// was cancelled) stops holding a flight once the store's timeout is over.
#[derive(Default)]
struct Flights {
    next_id: u64,
    live: Vec<(u64, Millis)>,
}

impl Flights {
    fn busy(&self, now: Millis) -> usize {
        self.live.iter().filter(|(_, until)| *until > now).count()
    }

    fn take(&mut self, until: Millis) -> u64 {
        self.next_id += 1;
        self.live.push((self.next_id, until));
        self.next_id
    }

    fn hold(&mut self, id: u64, until: Millis) {
        if let Some(f) = self.live.iter_mut().find(|(i, _)| *i == id) {
            f.1 = until;
        }
    }

    fn release(&mut self, id: u64, now: Millis) {
        self.live.retain(|(i, until)| *i != id && *until > now);
    }
}

pub struct Coalescer<Op, Reply, P: Parking> {
    parking: P,
    flights: RefCell<Flights>,
    max_flights: usize,
    queue: Queue<Op, Reply, P::Bell>,
    max_batch: usize,
    timeout_ms: u64,
    carried: Cell<Carried>,
}

impl<Op, Reply, P: Parking> Coalescer<Op, Reply, P> {
    /// `timeout_ms` is the store's timeout: a call lasts no longer, so a queued check waits at
    /// most for a call in flight and then its own. Up to `flights` calls go at once.
    pub fn new(parking: P, timeout_ms: u64, max_batch: usize, flights: usize) -> Self {
        Coalescer {
            parking,
            flights: RefCell::new(Flights::default()),
            max_flights: flights.max(1),
            queue: RefCell::new(VecDeque::new()),
            max_batch: max_batch.max(1),
            timeout_ms,
            carried: Cell::new(Carried::default()),
        }
    }

    pub fn carried(&self) -> Carried {
        self.carried.get()
    }

    /// Runs `op`, at once when a flight is free, else with whatever is queued when its turn
    /// comes. A `patient` check (one whose subject has a lease asked for in flight, which may
    /// well answer it) takes a flight only when none is busy: it would rather share a call.
    /// `send` makes one store call for a batch and answers each operation in order; `now` is
    /// the request's clock.
    pub async fn run<F, Fut>(&self, op: Op, now: Millis, patient: bool, send: F) -> Result<Reply, StoreError>
    where
        F: Fn(Vec<Op>) -> Fut,
        Fut: Future<Output = Result<Vec<Reply>, StoreError>>,
    {
        let free = if patient { 1 } else { self.max_flights };
        if self.flights.borrow().busy(now) < free {
            let flight = self.flights.borrow_mut().take(now.saturating_add(self.timeout_ms));
            return self.carry(op, flight, now, &send).await;
        }
        // Two store timeouts: the call in flight, then the one that carries this check.
        let wait = self.timeout_ms.saturating_mul(2);
        let (bell, parked) = self.parking.park(wait);
        let seat =
            Rc::new(Seat { op: RefCell::new(Some(op)), answer: RefCell::new(None), carry: Cell::new(None), bell });
        self.queue.borrow_mut().push_back(seat.clone());
        parked.await;
        let answer = seat.answer.borrow_mut().take();
        if let Some(answer) = answer {
            return answer;
        }
        self.queue.borrow_mut().retain(|s| !Rc::ptr_eq(s, &seat));
        let op = seat.op.borrow_mut().take();
        match (seat.carry.get(), op) {
            // Woken to carry: nobody takes the check of a seat handed a flight.
            (Some(flight), Some(op)) => self.carry(op, flight, now, &send).await,
            // The request's own timer ran out first: the store is too slow for it.
            _ => Err(StoreError::Timeout { after_ms: wait }),
        }
    }

    /// One call on `flight`: `own` and as much of the queue as fits, each mate answered by
    /// its bell; then the first seat still waiting is handed the flight to carry the rest.
    async fn carry<F, Fut>(&self, own: Op, flight: u64, now: Millis, send: &F) -> Result<Reply, StoreError>
    where
        F: Fn(Vec<Op>) -> Fut,
        Fut: Future<Output = Result<Vec<Reply>, StoreError>>,
    {
        self.flights.borrow_mut().hold(flight, now.saturating_add(self.timeout_ms));
        let mates: Vec<_> = {
            // Seats already handed a flight carry themselves.
            let mut queue = self.queue.borrow_mut();
            let mut mates = Vec::new();
            queue.retain(|seat| {
                let take = mates.len() < self.max_batch - 1 && seat.carry.get().is_none();
                if take {
                    mates.push(seat.clone());
                }
                !take
            });
            mates
        };
        let mut ops = vec![own];
        let mut carried = Vec::with_capacity(mates.len());
        for seat in mates {
            let op = seat.op.borrow_mut().take();
            if let Some(op) = op {
                ops.push(op);
                carried.push(seat);
            }
        }
        let mut tally = self.carried.get();
        tally.calls += 1;
        tally.ops += ops.len() as u64;
        self.carried.set(tally);
        let expected = ops.len();
        let result = send(ops).await;
        let mine = match result {
            Ok(replies) if replies.len() == expected => {
                let mut replies = replies.into_iter();
                let mine = replies.next();
                for (seat, reply) in carried.iter().zip(replies) {
                    *seat.answer.borrow_mut() = Some(Ok(reply));
                    P::ring(&seat.bell);
                }
                mine.ok_or_else(|| StoreError::Malformed("an empty batch reply".into()))
            }
            Ok(replies) => {
                let e = StoreError::Malformed(format!("{} answers to {expected} checks", replies.len()));
                self.answer_all(&carried, &e);
                Err(e)
            }
            Err(e) => {
                self.answer_all(&carried, &e);
                Err(e)
            }
        };
        let next = self.queue.borrow().iter().find(|s| s.carry.get().is_none()).cloned();
        match next {
            Some(next) => {
                // It starts the next call in its own request; until it does, the flight is
                // its, and arrivals that find no flight free queue.
                self.flights.borrow_mut().hold(flight, now.saturating_add(self.timeout_ms));
                next.carry.set(Some(flight));
                P::ring(&next.bell);
            }
            None => self.flights.borrow_mut().release(flight, now),
        }
        mine
    }

    fn answer_all(&self, seats: &[Rc<Seat<Op, Reply, P::Bell>>], e: &StoreError) {
        for seat in seats {
            *seat.answer.borrow_mut() = Some(Err(e.clone()));
            P::ring(&seat.bell);
        }
    }
}

/// Parking on the Workers runtime: the bell resolves a promise the waiting request made,
/// and the wait is that promise raced against the request's own `setTimeout`.
#[cfg(target_arch = "wasm32")]
pub use workers::JsParking;

/// The parking the stores use: the runtime's promises in the Worker; natively, where calls
/// are run one at a time (the tests), a wait that ends at once.
#[cfg(target_arch = "wasm32")]
pub type Parked = JsParking;
#[cfg(not(target_arch = "wasm32"))]
pub type Parked = Immediate;

/// A wait that ends at once: a check that would queue takes the store's fallback instead.
pub struct Immediate;

impl Parking for Immediate {
    type Bell = ();
    fn park(&self, _timeout_ms: u64) -> (Self::Bell, impl Future<Output = ()>) {
        ((), std::future::ready(()))
    }
    fn ring(_: &Self::Bell) {}
}

#[cfg(target_arch = "wasm32")]
mod workers {
    use std::future::Future;
    use std::time::Duration;

    use futures_util::future::{select, Either};
    use wasm_bindgen::JsValue;
    use worker::wasm_bindgen_futures::JsFuture;

    use super::Parking;

    pub struct JsParking;

    impl Parking for JsParking {
        type Bell = Option<js_sys::Function>;

        fn park(&self, timeout_ms: u64) -> (Self::Bell, impl Future<Output = ()>) {
            let mut resolve = None;
            let promise = js_sys::Promise::new(&mut |ok, _| resolve = Some(ok));
            let timer = worker::Delay::from(Duration::from_millis(timeout_ms));
            let wait = async move {
                let rung = JsFuture::from(promise);
                match select(std::pin::pin!(rung), std::pin::pin!(timer)).await {
                    Either::Left(_) | Either::Right(_) => {}
                }
            };
            (resolve, wait)
        }

        fn ring(bell: &Self::Bell) {
            if let Some(resolve) = bell {
                let _ = resolve.call0(&JsValue::UNDEFINED);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    /// Parking for tests: a bell is a flag; a wait ends when it is set, or after `timeout`
    /// polls (the test's clock is the executor's rounds).
    struct Flags;

    struct Parked {
        bell: Rc<Cell<bool>>,
        polls_left: u64,
    }

    impl Future for Parked {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.bell.get() || self.polls_left == 0 {
                return Poll::Ready(());
            }
            self.polls_left -= 1;
            Poll::Pending
        }
    }

    impl Parking for Flags {
        type Bell = Rc<Cell<bool>>;
        fn park(&self, timeout_ms: u64) -> (Self::Bell, impl Future<Output = ()>) {
            let bell = Rc::new(Cell::new(false));
            (bell.clone(), Parked { bell, polls_left: timeout_ms })
        }
        fn ring(bell: &Self::Bell) {
            bell.set(true);
        }
    }

    /// A store call that takes `rounds` polls, answering each op with op × 10, and records
    /// the batches it was sent.
    struct Slow {
        rounds: u32,
        batches: RefCell<Vec<Vec<u32>>>,
        fail: Cell<bool>,
    }

    struct Call<'a> {
        store: &'a Slow,
        ops: Vec<u32>,
        left: u32,
    }

    impl Future for Call<'_> {
        type Output = Result<Vec<u32>, StoreError>;
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.left > 0 {
                self.left -= 1;
                return Poll::Pending;
            }
            if self.store.fail.get() {
                return Poll::Ready(Err(StoreError::Network("down".into())));
            }
            Poll::Ready(Ok(self.ops.iter().map(|o| o * 10).collect()))
        }
    }

    impl Slow {
        fn send(&self, ops: Vec<u32>) -> Call<'_> {
            self.batches.borrow_mut().push(ops.clone());
            Call { store: self, ops, left: self.rounds }
        }
    }

    type Task<'a> = Pin<Box<dyn Future<Output = Result<u32, StoreError>> + 'a>>;

    /// Polls every task in turn until all are done; tasks join at the round given.
    fn run_all<'a>(mut tasks: Vec<(u32, Task<'a>)>) -> Vec<Result<u32, StoreError>> {
        let mut out: Vec<Option<Result<u32, StoreError>>> = tasks.iter().map(|_| None).collect();
        let mut cx = Context::from_waker(Waker::noop());
        for round in 0..10_000u32 {
            for (i, (start, task)) in tasks.iter_mut().enumerate() {
                if out[i].is_none() && round >= *start {
                    if let Poll::Ready(v) = task.as_mut().poll(&mut cx) {
                        out[i] = Some(v);
                    }
                }
            }
            if out.iter().all(Option::is_some) {
                return out.into_iter().flatten().collect();
            }
        }
        panic!("tasks never finished");
    }

    #[test]
    fn alone_goes_at_once_and_concurrent_checks_share_a_call() {
        let store = Slow { rounds: 10, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(Flags, 100, 8, 1);
        let tasks: Vec<(u32, Task)> = (0..6u32)
            .map(|i| (i, Box::pin(c.run(i + 1, u64::from(i), false, |ops| store.send(ops))) as Task))
            .collect();
        let answers = run_all(tasks);
        assert_eq!(answers, (1..=6).map(|i| Ok(i * 10)).collect::<Vec<_>>(), "each its own answer");
        // The first goes alone; the five that came while it was in flight go in one call.
        assert_eq!(*store.batches.borrow(), vec![vec![1], vec![2, 3, 4, 5, 6]]);
        assert_eq!(c.carried(), Carried { calls: 2, ops: 6 });
    }

    #[test]
    fn batches_are_bounded_and_the_queue_is_carried_on() {
        let store = Slow { rounds: 3, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(Flags, 100, 2, 1);
        let tasks: Vec<(u32, Task)> =
            (0..5u32).map(|i| (0, Box::pin(c.run(i, 0, false, |ops| store.send(ops))) as Task)).collect();
        assert!(run_all(tasks).iter().all(Result::is_ok));
        assert!(store.batches.borrow().iter().all(|b| b.len() <= 2), "{:?}", store.batches.borrow());
        let mut seen: Vec<u32> = store.batches.borrow().iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4], "every check sent exactly once");
    }

    #[test]
    fn a_failed_call_fails_every_check_it_carried() {
        let store = Slow { rounds: 2, batches: RefCell::new(Vec::new()), fail: Cell::new(true) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(Flags, 100, 8, 1);
        let tasks: Vec<(u32, Task)> =
            (0..3u32).map(|i| (0, Box::pin(c.run(i, 0, false, |ops| store.send(ops))) as Task)).collect();
        assert!(run_all(tasks).iter().all(|r| matches!(r, Err(StoreError::Network(_)))));
    }

    #[test]
    fn a_wait_ends_at_the_waiters_own_timer_when_no_carrier_comes() {
        // The carrier never returns (its request was cancelled): the queued check gives up at
        // its own timer, and a check arriving after the store's timeout goes on its own.
        let store = Slow { rounds: 1, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(Flags, 10, 8, 1);
        let mut cx = Context::from_waker(Waker::noop());
        let mut stuck = Box::pin(c.run(1, 0, false, |_| std::future::pending::<Result<Vec<u32>, StoreError>>()));
        assert!(stuck.as_mut().poll(&mut cx).is_pending());
        let waiter: Task = Box::pin(c.run(2, 5, false, |ops| store.send(ops)));
        assert_eq!(run_all(vec![(0, waiter)]), vec![Err(StoreError::Timeout { after_ms: 20 })]);
        let late: Task = Box::pin(c.run(3, 10, false, |ops| store.send(ops)));
        assert_eq!(run_all(vec![(0, late)]), vec![Ok(30)]);
        assert_eq!(*store.batches.borrow(), vec![vec![3]], "the stuck call held nobody back past its timeout");
    }

    #[test]
    fn with_two_flights_the_second_goes_at_once_and_the_rest_wait_for_the_first_back() {
        let store = Slow { rounds: 10, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(Flags, 100, 8, 2);
        let tasks: Vec<(u32, Task)> = (0..6u32)
            .map(|i| (i, Box::pin(c.run(i + 1, u64::from(i), false, |ops| store.send(ops))) as Task))
            .collect();
        let answers = run_all(tasks);
        assert_eq!(answers, (1..=6).map(|i| Ok(i * 10)).collect::<Vec<_>>(), "each its own answer");
        // Two go alone, in flight together; the four that came meanwhile go in one call.
        assert_eq!(*store.batches.borrow(), vec![vec![1], vec![2], vec![3, 4, 5, 6]]);
        assert_eq!(c.carried(), Carried { calls: 3, ops: 6 });
    }

    #[test]
    fn a_seat_handed_a_flight_is_not_taken_by_another_carrier() {
        // Two flights back one round apart: the first hands the front seat its flight, the
        // second must not carry that seat as well (it would be sent twice).
        let store = Slow { rounds: 4, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(Flags, 100, 2, 2);
        let tasks: Vec<(u32, Task)> = (0..7u32)
            .map(|i| (i / 2, Box::pin(c.run(i, u64::from(i / 2), false, |ops| store.send(ops))) as Task))
            .collect();
        assert_eq!(run_all(tasks), (0..7).map(|i| Ok(i * 10)).collect::<Vec<_>>());
        let mut seen: Vec<u32> = store.batches.borrow().iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6], "every check sent exactly once");
    }

    #[test]
    fn a_patient_check_shares_a_call_rather_than_take_the_second_flight() {
        let store = Slow { rounds: 10, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(Flags, 100, 8, 2);
        let tasks: Vec<(u32, Task)> = (0..4u32)
            .map(|i| (i, Box::pin(c.run(i + 1, u64::from(i), i > 0, |ops| store.send(ops))) as Task))
            .collect();
        assert_eq!(run_all(tasks), (1..=4).map(|i| Ok(i * 10)).collect::<Vec<_>>());
        // With two flights, impatient checks would have sent [1], [2], [3, 4].
        assert_eq!(*store.batches.borrow(), vec![vec![1], vec![2, 3, 4]]);
    }
}
