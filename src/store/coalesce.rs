//! Concurrent checks in one store call. While `flights` script calls are in flight in an
//! isolate, checks that arrive wait in a queue; when one of the calls returns, its flight is
//! free, and the first check to find it so (a waiter looking again, or one just arrived)
//! carries the queue in the next call; each gets its own answer. A check that finds a flight
//! free goes at once: batching never delays an uncontended request, and under load a queued
//! check waits only for the first of several calls in flight, not for one.
//!
//! The Workers runtime shapes the design (its rules are checked on workerd by
//! tests/e2e/runtime-rules.test.mjs; docs/runtime.md):
//! - a request may not use I/O objects of another, so the carrier hands its mates plain
//!   values (their reply numbers), never a response;
//! - one request must not wake another: a queued request looks at its own seat (and for a
//!   free flight) on timers of its own ([`Parking::nap`]), and the carrier only writes
//!   answers into seats. Waking a waiter by
//!   resolving a promise it made (even with the runtime's cross-request resolution, which
//!   runs the continuation in the waiter's context) made, under load with clients going
//!   away, other requests' subrequests fail with "Cannot perform I/O on behalf of a different
//!   request" within half a minute (tests/e2e/batching.test.mjs reproduces it);
//! - a request that waits on nothing of its own is cancelled as hung, which its own timers
//!   also rule out. A request whose carrier was cancelled finds the flight free once its
//!   deadline has passed, and carries the queue itself.
//!
//! The first nap lasts until the call it waits for is due back (the calls' recent duration),
//! the next ones 1 ms, growing to [`MAX_NAP_MS`]: a waiter looks a few times per call.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;

use super::StoreError;
use crate::core::algorithm::Millis;

/// How a waiting request passes time: the runtime's clock and a timer of its own.
pub trait Parking {
    fn now(&self) -> Millis;
    fn nap(&self, ms: u64) -> impl Future<Output = ()>;
}

/// The longest nap between two looks at a seat.
const MAX_NAP_MS: u64 = 4;

/// One queued check: its operation until a carrier takes it, then its answer.
struct Seat<Op, Reply> {
    op: RefCell<Option<Op>>,
    answer: RefCell<Option<Result<Reply, StoreError>>>,
}

type Queue<Op, Reply> = RefCell<VecDeque<Rc<Seat<Op, Reply>>>>;

/// How a wait ended.
enum Waited {
    /// A carrier wrote the seat's answer.
    Answered,
    /// The seat found a flight free and took it: it carries the queue.
    Carry(u64),
    /// The wait's bound passed first.
    Over,
}

/// Calls and operations carried, for the status and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    pub calls: u64,
    pub ops: u64,
}

/// The calls in flight, each with the time it counts until. A deadline, not a flag, so a carrier that never returns (its request
/// was cancelled) stops holding a flight once the store's timeout is over.
#[derive(Default)]
struct Flights {
    next_id: u64,
    live: Vec<Flight>,
}

struct Flight {
    id: u64,
    /// When its call started.
    since: Millis,
    until: Millis,
}

impl Flights {
    fn busy(&self, now: Millis) -> usize {
        self.live.iter().filter(|f| f.until > now).count()
    }

    /// When the first of the calls in flight started.
    fn first_since(&self, now: Millis) -> Option<Millis> {
        self.live.iter().filter(|f| f.until > now).map(|f| f.since).min()
    }

    fn take(&mut self, now: Millis, until: Millis) -> u64 {
        self.next_id += 1;
        self.live.push(Flight { id: self.next_id, since: now, until });
        self.next_id
    }

    fn release(&mut self, id: u64, now: Millis) {
        self.live.retain(|f| f.id != id && f.until > now);
    }
}

pub struct Coalescer<Op, Reply, P: Parking> {
    parking: P,
    flights: RefCell<Flights>,
    max_flights: usize,
    queue: Queue<Op, Reply>,
    max_batch: usize,
    timeout_ms: u64,
    carried: Cell<Carried>,
    /// How long the recent calls took, smoothed: when a queued check first looks again.
    call_ms: Cell<u64>,
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
            call_ms: Cell::new(1),
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
            let flight = self.flights.borrow_mut().take(now, now.saturating_add(self.timeout_ms));
            return self.carry(op, flight, now, &send).await;
        }
        // Two store timeouts: the call in flight, then the one that carries this check.
        let wait = self.timeout_ms.saturating_mul(2);
        let seat = Rc::new(Seat { op: RefCell::new(Some(op)), answer: RefCell::new(None) });
        self.queue.borrow_mut().push_back(seat.clone());
        let parked = self.park(&seat, now, wait, free).await;
        self.queue.borrow_mut().retain(|s| !Rc::ptr_eq(s, &seat));
        let answer = seat.answer.borrow_mut().take();
        let op = seat.op.borrow_mut().take();
        match (parked, answer, op) {
            (_, Some(answer), _) => answer,
            (Waited::Carry(flight), None, Some(op)) => self.carry(op, flight, self.parking.now().max(now), &send).await,
            // The wait's bound passed first: the store is too slow for this request.
            _ => Err(StoreError::Timeout { after_ms: wait }),
        }
    }

    /// Waits until `seat` is answered, or finds fewer than `free` flights busy while its check
    /// is not yet carried (then it takes one), or `wait` is over; it looks after each nap of
    /// the waiting request's own. A flight is free when its call has returned, or when its
    /// deadline has passed (its carrier's request was cancelled).
    async fn park(&self, seat: &Seat<Op, Reply>, now: Millis, wait: u64, free: usize) -> Waited {
        let end = now.saturating_add(wait);
        let due = self.flights.borrow().first_since(now).unwrap_or(now).saturating_add(self.call_ms.get());
        let mut nap = due.saturating_sub(now).max(1);
        let mut naps = 0u32;
        loop {
            if seat.answer.borrow().is_some() {
                return Waited::Answered;
            }
            let at = self.parking.now().max(now);
            if seat.op.borrow().is_some() && self.flights.borrow().busy(at) < free {
                return Waited::Carry(self.flights.borrow_mut().take(at, at.saturating_add(self.timeout_ms)));
            }
            if at >= end {
                return Waited::Over;
            }
            self.parking.nap(nap.min(end - at)).await;
            naps += 1;
            nap = (1u64 << (naps / 3)).min(MAX_NAP_MS);
        }
    }

    /// One call on `flight`: `own` and as much of the queue as fits, each mate's answer written
    /// into its seat; then the flight is free for whoever looks first.
    async fn carry<F, Fut>(&self, own: Op, flight: u64, now: Millis, send: &F) -> Result<Reply, StoreError>
    where
        F: Fn(Vec<Op>) -> Fut,
        Fut: Future<Output = Result<Vec<Reply>, StoreError>>,
    {
        let mates: Vec<_> = {
            let mut queue = self.queue.borrow_mut();
            let n = queue.len().min(self.max_batch - 1);
            queue.drain(..n).collect()
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
        let back = self.parking.now().max(now);
        let took = (back - now).min(self.timeout_ms);
        self.call_ms.set((3 * self.call_ms.get() + took).div_ceil(4).max(1));
        let mine = match result {
            Ok(replies) if replies.len() == expected => {
                let mut replies = replies.into_iter();
                let mine = replies.next();
                for (seat, reply) in carried.iter().zip(replies) {
                    *seat.answer.borrow_mut() = Some(Ok(reply));
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
        self.flights.borrow_mut().release(flight, back);
        mine
    }

    fn answer_all(&self, seats: &[Rc<Seat<Op, Reply>>], e: &StoreError) {
        for seat in seats {
            *seat.answer.borrow_mut() = Some(Err(e.clone()));
        }
    }
}

/// Parking on the Workers runtime: `Date.now()` (which moves on across I/O and timers) and
/// the request's own `setTimeout`.
#[cfg(target_arch = "wasm32")]
pub use workers::JsParking;

/// The parking the stores use: the runtime's timers in the Worker; natively, where calls
/// are run one at a time (the tests), a wait that ends at once.
#[cfg(target_arch = "wasm32")]
pub type Parked = JsParking;
#[cfg(not(target_arch = "wasm32"))]
pub type Parked = Immediate;

/// A wait that ends at once: a check that would queue takes the store's fallback instead.
pub struct Immediate;

impl Parking for Immediate {
    fn now(&self) -> Millis {
        Millis::MAX
    }
    fn nap(&self, _ms: u64) -> impl Future<Output = ()> {
        std::future::ready(())
    }
}

#[cfg(target_arch = "wasm32")]
mod workers {
    use std::future::Future;
    use std::time::Duration;

    use super::Parking;
    use crate::core::algorithm::Millis;

    pub struct JsParking;

    impl Parking for JsParking {
        fn now(&self) -> Millis {
            js_sys::Date::now() as Millis
        }
        fn nap(&self, ms: u64) -> impl Future<Output = ()> {
            worker::Delay::from(Duration::from_millis(ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    /// Parking for tests: the clock is the executor's rounds ([`run_all`] moves it on), and a
    /// nap ends when the clock has passed its end.
    #[derive(Clone, Default)]
    struct Flags(Rc<Cell<u64>>);

    struct Nap {
        clock: Rc<Cell<u64>>,
        until: u64,
    }

    impl Future for Nap {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.clock.get() >= self.until {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Parking for Flags {
        fn now(&self) -> Millis {
            self.0.get()
        }
        fn nap(&self, ms: u64) -> impl Future<Output = ()> {
            Nap { clock: self.0.clone(), until: self.0.get() + ms }
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

    /// The batches sent, each in order of its checks (the one that carried it may have been
    /// anywhere in the queue).
    fn sorted(batches: &RefCell<Vec<Vec<u32>>>) -> Vec<Vec<u32>> {
        batches
            .borrow()
            .iter()
            .map(|b| {
                let mut b = b.clone();
                b.sort();
                b
            })
            .collect()
    }

    /// Polls every task in turn until all are done; tasks join at the round given, and the
    /// clock reads the round.
    fn run_all<'a>(clock: &Flags, mut tasks: Vec<(u32, Task<'a>)>) -> Vec<Result<u32, StoreError>> {
        let mut out: Vec<Option<Result<u32, StoreError>>> = tasks.iter().map(|_| None).collect();
        let mut cx = Context::from_waker(Waker::noop());
        for round in 0..10_000u32 {
            clock.0.set(u64::from(round));
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
        let clock = Flags::default();
        let store = Slow { rounds: 10, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(clock.clone(), 100, 8, 1);
        let tasks: Vec<(u32, Task)> = (0..6u32)
            .map(|i| (i, Box::pin(c.run(i + 1, u64::from(i), false, |ops| store.send(ops))) as Task))
            .collect();
        let answers = run_all(&clock, tasks);
        assert_eq!(answers, (1..=6).map(|i| Ok(i * 10)).collect::<Vec<_>>(), "each its own answer");
        // The first goes alone; the five that came while it was in flight go in one call.
        assert_eq!(sorted(&store.batches), vec![vec![1], vec![2, 3, 4, 5, 6]]);
        assert_eq!(c.carried(), Carried { calls: 2, ops: 6 });
    }

    #[test]
    fn batches_are_bounded_and_the_queue_is_carried_on() {
        let clock = Flags::default();
        let store = Slow { rounds: 3, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(clock.clone(), 100, 2, 1);
        let tasks: Vec<(u32, Task)> =
            (0..5u32).map(|i| (0, Box::pin(c.run(i, 0, false, |ops| store.send(ops))) as Task)).collect();
        assert!(run_all(&clock, tasks).iter().all(Result::is_ok));
        assert!(store.batches.borrow().iter().all(|b| b.len() <= 2), "{:?}", store.batches.borrow());
        let mut seen: Vec<u32> = store.batches.borrow().iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4], "every check sent exactly once");
    }

    #[test]
    fn a_failed_call_fails_every_check_it_carried() {
        let clock = Flags::default();
        let store = Slow { rounds: 2, batches: RefCell::new(Vec::new()), fail: Cell::new(true) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(clock.clone(), 100, 8, 1);
        let tasks: Vec<(u32, Task)> =
            (0..3u32).map(|i| (0, Box::pin(c.run(i, 0, false, |ops| store.send(ops))) as Task)).collect();
        assert!(run_all(&clock, tasks).iter().all(|r| matches!(r, Err(StoreError::Network(_)))));
    }

    #[test]
    fn with_two_flights_the_second_goes_at_once_and_the_rest_wait_for_the_first_back() {
        let clock = Flags::default();
        let store = Slow { rounds: 10, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(clock.clone(), 100, 8, 2);
        let tasks: Vec<(u32, Task)> = (0..6u32)
            .map(|i| (i, Box::pin(c.run(i + 1, u64::from(i), false, |ops| store.send(ops))) as Task))
            .collect();
        let answers = run_all(&clock, tasks);
        assert_eq!(answers, (1..=6).map(|i| Ok(i * 10)).collect::<Vec<_>>(), "each its own answer");
        // Two go alone, in flight together; the four that came meanwhile go in one call.
        assert_eq!(sorted(&store.batches), vec![vec![1], vec![2], vec![3, 4, 5, 6]]);
        assert_eq!(c.carried(), Carried { calls: 3, ops: 6 });
    }

    #[test]
    fn with_two_flights_back_one_round_apart_every_check_is_sent_exactly_once() {
        // Two flights come back one round apart while waiters look at different times: a
        // check is taken by one carrier only (it would be sent twice otherwise).
        let clock = Flags::default();
        let store = Slow { rounds: 4, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(clock.clone(), 100, 2, 2);
        let tasks: Vec<(u32, Task)> = (0..7u32)
            .map(|i| (i / 2, Box::pin(c.run(i, u64::from(i / 2), false, |ops| store.send(ops))) as Task))
            .collect();
        assert_eq!(run_all(&clock, tasks), (0..7).map(|i| Ok(i * 10)).collect::<Vec<_>>());
        let mut seen: Vec<u32> = store.batches.borrow().iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6], "every check sent exactly once");
    }

    #[test]
    fn a_patient_check_shares_a_call_rather_than_take_the_second_flight() {
        let clock = Flags::default();
        let store = Slow { rounds: 10, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(clock.clone(), 100, 8, 2);
        let tasks: Vec<(u32, Task)> = (0..4u32)
            .map(|i| (i, Box::pin(c.run(i + 1, u64::from(i), i > 0, |ops| store.send(ops))) as Task))
            .collect();
        assert_eq!(run_all(&clock, tasks), (1..=4).map(|i| Ok(i * 10)).collect::<Vec<_>>());
        // With two flights, impatient checks would have sent [1], [2], [3, 4].
        assert_eq!(sorted(&store.batches), vec![vec![1], vec![2, 3, 4]]);
    }

    #[test]
    fn a_queue_whose_carriers_are_gone_is_carried_by_a_waiter_once_their_flights_expire() {
        // The carrier's request is cancelled mid-call: once the flight's deadline passes, a
        // waiter finds nothing in flight and carries the queue itself, long before its own
        // wait is over.
        let clock = Flags::default();
        let store = Slow { rounds: 2, batches: RefCell::new(Vec::new()), fail: Cell::new(false) };
        let c: Coalescer<u32, u32, Flags> = Coalescer::new(clock.clone(), 10, 8, 1);
        let mut cx = Context::from_waker(Waker::noop());
        let mut stuck = Box::pin(c.run(1, 0, false, |_| std::future::pending::<Result<Vec<u32>, StoreError>>()));
        assert!(stuck.as_mut().poll(&mut cx).is_pending());
        let tasks: Vec<(u32, Task)> =
            (2..5u32).map(|i| (1, Box::pin(c.run(i, 1, false, |ops| store.send(ops))) as Task)).collect();
        let started = clock.0.get();
        assert_eq!(run_all(&clock, tasks), vec![Ok(20), Ok(30), Ok(40)]);
        assert_eq!(sorted(&store.batches), vec![vec![2, 3, 4]], "one call for the three");
        assert!(clock.0.get() - started < 20, "answered after the flight's deadline (10), not at the wait's end (21)");
        // And a check arriving after the stuck call's deadline goes at once, on its own.
        let late: Task = Box::pin(c.run(5, 30, false, |ops| store.send(ops)));
        assert_eq!(run_all(&clock, vec![(0, late)]), vec![Ok(50)]);
        assert_eq!(store.batches.borrow().last(), Some(&vec![5]));
    }
}
