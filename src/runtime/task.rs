//! Running a request's future: each request its own task, polled from a microtask that its
//! own wake queued, never in a batch with other requests' tasks.
//!
//! wasm-bindgen-futures runs every task of the isolate from one shared queue: a wake queues
//! the task and, if no run is pending, one microtask that then polls every task queued by
//! then. That microtask keeps the async context of the code that queued it, and the Workers
//! runtime finds a request's trace span there, so another request's task polled in that run
//! makes its subrequests with the wrong request's span and fails ("Cannot perform I/O on
//! behalf of a different request ... (I/O type: SpanParent)"). Once it happens it spreads: a
//! task polled under another's context registers its next waits under it too. With
//! `store.batch` (one request answering others' checks) under load with clients going away,
//! it took hold within half a minute (tests/e2e/batching.test.mjs has the reproduction).
//!
//! Here a wake queues a microtask for that task alone (`later` in `runtime.js`), made in the
//! context of the wake: a request's own promise or timer, registered while it was polled as
//! itself. A request's task whose request was cancelled never wakes; it is dropped after
//! [`ABANDONED_MS`]. (A WebSocket relay's tasks live as long as their connection.) An end of a
//! wait that comes in the task's own context needs no microtask: the Upstash call's answer,
//! handed back from the continuation of the call the task made, polls it at once ([`resume`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use wasm_bindgen::prelude::{wasm_bindgen, Closure};
use wasm_bindgen::{JsCast, JsValue};

#[wasm_bindgen(module = "/src/runtime.js")]
extern "C" {
    fn later(poll: &js_sys::Function, slot: u32, generation: u32);
}

/// A task not done after this long belongs to a request the runtime gave up on (a client that
/// went away): nothing will wake it. No request's own work waits this long (every store call
/// and queue wait is bounded by the store's timeout; the origin's answer is not awaited).
const ABANDONED_MS: f64 = 10.0 * 60.0 * 1000.0;

type Job = Pin<Box<dyn Future<Output = JsValue>>>;

struct Task {
    job: Job,
    resolve: js_sys::Function,
    wake: Arc<Wakeup>,
}

/// A task's name: its slot in the table and the slot's generation, so that a wake of a task
/// that is done never polls the task that has its slot since.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Id {
    slot: u32,
    generation: u32,
}

/// A task's waker: queues one poll of it, once until it is polled.
struct Wakeup {
    id: Id,
    queued: AtomicBool,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::Relaxed) {
            POLL.with(|poll| later(poll, self.id.slot, self.id.generation));
        }
    }
}

enum State {
    Free,
    /// Out of the table while it is polled, so that what it does may make or wake tasks.
    Polled,
    Waiting(Task),
}

struct Slot {
    generation: u32,
    state: State,
}

/// The live tasks, by slot: a slot is reused once its task is done (its generation moves on),
/// so the table stays as large as the most tasks alive at once, with no hashing or rehashing
/// per request.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Table {
    fn make(&mut self) -> Id {
        match self.free.pop() {
            Some(slot) => {
                let generation = match self.slots.get_mut(slot as usize) {
                    Some(s) => {
                        s.state = State::Polled;
                        s.generation
                    }
                    None => 0,
                };
                Id { slot, generation }
            }
            None => {
                self.slots.push(Slot { generation: 0, state: State::Polled });
                Id { slot: (self.slots.len() - 1) as u32, generation: 0 }
            }
        }
    }

    fn slot(&mut self, id: Id) -> Option<&mut Slot> {
        self.slots.get_mut(id.slot as usize).filter(|s| s.generation == id.generation)
    }

    fn is_live(&mut self, id: Id) -> bool {
        self.slot(id).is_some_and(|s| !matches!(s.state, State::Free))
    }

    /// The task of `id` taken out to be polled, if it is waiting.
    fn take(&mut self, id: Id) -> Option<Task> {
        let slot = self.slot(id)?;
        match std::mem::replace(&mut slot.state, State::Polled) {
            State::Waiting(task) => Some(task),
            other => {
                slot.state = other;
                None
            }
        }
    }

    fn put(&mut self, id: Id, task: Task) {
        if let Some(slot) = self.slot(id) {
            slot.state = State::Waiting(task);
        }
    }

    /// The slot of `id` free for the next task; the task that was waiting there, if one was,
    /// handed back to be dropped outside the table's borrow (a task's drop may touch it).
    fn free(&mut self, id: Id) -> Option<Task> {
        let slot = self.slot(id)?;
        match std::mem::replace(&mut slot.state, State::Free) {
            State::Free => None,
            held => {
                slot.generation = slot.generation.wrapping_add(1);
                self.free.push(id.slot);
                match held {
                    State::Waiting(task) => Some(task),
                    _ => None,
                }
            }
        }
    }
}

thread_local! {
    static TASKS: RefCell<Table> = RefCell::new(Table::default());
    /// The task being polled, while it is.
    static CURRENT: std::cell::Cell<Option<Id>> = const { std::cell::Cell::new(None) };
    /// Tasks in the order they were made, with when: the oldest are looked at for abandonment.
    static MADE: RefCell<VecDeque<(Id, f64)>> = const { RefCell::new(VecDeque::new()) };
    static POLL: js_sys::Function = Closure::<dyn Fn(u32, u32)>::new(poll).into_js_value().unchecked_into();
}

/// Runs `job`, made at `now` (ms since the epoch), at once to its first wait: its value if it
/// needs none, else a promise of it.
pub fn run(now: u64, job: impl Future<Output = JsValue> + 'static) -> JsValue {
    start(job, true, Some(now as f64))
}

/// `now`: when the job was made, if the caller has read the clock already (else read here,
/// only if the job waits).
fn start(job: impl Future<Output = JsValue> + 'static, may_be_abandoned: bool, now: Option<f64>) -> JsValue {
    let id = TASKS.with(|t| t.borrow_mut().make());
    let wake = Arc::new(Wakeup { id, queued: AtomicBool::new(false) });
    let mut job: Job = Box::pin(job);
    let waker = Waker::from(wake.clone());
    if let Poll::Ready(value) = as_current(id, || job.as_mut().poll(&mut Context::from_waker(&waker))) {
        TASKS.with(|t| t.borrow_mut().free(id));
        return value;
    }
    let mut resolve = None;
    let promise = js_sys::Promise::new(&mut |ok, _| resolve = Some(ok));
    let Some(resolve) = resolve else {
        TASKS.with(|t| t.borrow_mut().free(id));
        return promise.into();
    };
    let now = now.unwrap_or_else(js_sys::Date::now);
    forget_abandoned(now);
    TASKS.with(|t| t.borrow_mut().put(id, Task { job, resolve, wake }));
    if may_be_abandoned {
        MADE.with(|m| m.borrow_mut().push_back((id, now)));
    }
    promise.into()
}

/// Runs `job` as a task of its own, as [`run`] does, its value not wanted: a WebSocket
/// relay, which lasts as long as the connection, so it is never taken for abandoned.
pub fn spawn(job: impl Future<Output = ()> + 'static) {
    start(
        async move {
            job.await;
            JsValue::UNDEFINED
        },
        false,
        None,
    );
}

/// Runs `job` as [`spawn`] does, the runtime keeping the request's context until it is done
/// (`ctx.waitUntil`).
pub fn wait_until(ctx: &worker::worker_sys::Context, job: impl Future<Output = ()> + 'static) {
    let done = start(
        async move {
            job.await;
            JsValue::UNDEFINED
        },
        true,
        None,
    );
    if let Ok(promise) = done.dyn_into::<js_sys::Promise>() {
        let _ = ctx.wait_until(&promise);
    }
}

/// One poll of the task in `slot`, queued by its wake; nothing if it is done or dropped.
fn poll(slot: u32, generation: u32) {
    let id = Id { slot, generation };
    let Some(mut task) = TASKS.with(|t| t.borrow_mut().take(id)) else { return };
    task.wake.queued.store(false, Ordering::Relaxed);
    let waker = Waker::from(task.wake.clone());
    match as_current(id, || task.job.as_mut().poll(&mut Context::from_waker(&waker))) {
        Poll::Ready(value) => {
            TASKS.with(|t| t.borrow_mut().free(id));
            let _ = task.resolve.call1(&JsValue::UNDEFINED, &value);
        }
        Poll::Pending => TASKS.with(|t| t.borrow_mut().put(id, task)),
    }
}

/// `poll` with `id` as the [`current`] task (the one outside it restored after: a task's poll
/// may run another's, through [`resume`]).
fn as_current<T>(id: Id, poll: impl FnOnce() -> T) -> T {
    let outer = CURRENT.with(|c| c.replace(Some(id)));
    let out = poll();
    CURRENT.with(|c| c.set(outer));
    out
}

/// The task being polled: what a wait on the runtime keeps, to [`resume`] it.
#[derive(Clone, Copy)]
pub struct Current(Id);

pub fn current() -> Option<Current> {
    CURRENT.with(std::cell::Cell::get).map(Current)
}

/// Polls `task` now, in place of a wake's queued poll: for a wait whose end comes in the
/// task's own context (the continuation of a call the task made itself, as the Upstash call's
/// answer does), so that the poll needs no microtask of its own. False when the task is not
/// waiting (done, dropped, or being polled), for the caller to wake it instead.
pub fn resume(task: Current) -> bool {
    let Current(id) = task;
    let waiting = TASKS.with(|t| t.borrow_mut().slot(id).is_some_and(|s| matches!(s.state, State::Waiting(_))));
    if waiting {
        poll(id.slot, id.generation);
    }
    waiting
}

/// Drops the tasks made more than [`ABANDONED_MS`] ago that are not done, and forgets the
/// done ones at the front of the order.
fn forget_abandoned(now: f64) {
    MADE.with(|m| {
        let mut made = m.borrow_mut();
        while let Some(&(id, at)) = made.front() {
            let live = TASKS.with(|t| t.borrow_mut().is_live(id));
            if live && now - at < ABANDONED_MS {
                break;
            }
            if live {
                // Dropped here, outside the table's borrow.
                drop(TASKS.with(|t| t.borrow_mut().free(id)));
            }
            made.pop_front();
        }
    });
}
