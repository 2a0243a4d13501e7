//! The stage scheduler: a bounded pool of threads that runs each stage the target needs once
//! every stage it reads is done.
//!
//! A stage runs holding one of the machine's CPU slots (one per core). A RUN step gives its
//! slot back while it waits for its processes (`blocking`), so another stage can use the core
//! meanwhile: parallel RUNs are not capped at the core count, only by the thread limit
//! (cores + `WAITING_RUNS`). Threads are started only when there is a ready stage, a free slot
//! and no idle thread, so a chain of stages uses one; a thread that cannot be started
//! (a pids limit, no memory) just leaves the work to the threads there are, or to the
//! calling thread: nothing panics and the build still finishes.
//!
//! Costs are linear in the number of stages and their dependencies: a finished stage makes its
//! dependents ready by counting down, and only the bounded set of threads is ever woken.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Threads beyond the core count, for stages whose RUN steps are waiting on processes.
const WAITING_RUNS: usize = 16;

/// How many threads the pool may run: one per core plus `WAITING_RUNS`.
pub(super) fn worker_limit() -> Limits {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    Limits { slots: cores, threads: cores + WAITING_RUNS }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Stages running at once outside of RUN processes (CPU slots).
    pub slots: usize,
    /// Threads at most.
    pub threads: usize,
}

pub(super) struct StagePool {
    state: Mutex<State>,
    changed: Condvar,
    limits: Limits,
}

struct State {
    /// Stages whose dependencies are all done, in the order they became so.
    ready: VecDeque<usize>,
    /// Per stage: dependencies not done yet.
    waiting_on: Vec<usize>,
    /// Per stage: the needed stages that read it.
    dependents: Vec<Vec<usize>>,
    /// Needed stages not finished.
    left: usize,
    /// Stages being run (holding a slot or in a RUN).
    running: usize,
    free_slots: usize,
    /// RUN steps that finished waiting and want their slot back (they go first).
    reacquiring: usize,
    threads: usize,
    idle: usize,
    /// A thread could not be started: no more are tried.
    spawn_failed: Option<String>,
    /// Needed stages never made ready (only a dependency cycle leaves some).
    scheduled: Vec<bool>,
}

impl StagePool {
    /// A pool for the stages `target` needs, given what each stage reads.
    pub(super) fn new(deps: &[Vec<usize>], target: usize, limits: Limits) -> StagePool {
        let n = deps.len();
        let mut needed = vec![false; n];
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            if i < n && !needed[i] {
                needed[i] = true;
                stack.extend(deps[i].iter().copied());
            }
        }
        let mut waiting_on = vec![0; n];
        let mut dependents = vec![Vec::new(); n];
        for (i, ds) in deps.iter().enumerate().filter(|(i, _)| needed[*i]) {
            for &d in ds {
                waiting_on[i] += 1;
                dependents[d].push(i);
            }
        }
        let mut scheduled = vec![true; n];
        let mut ready = VecDeque::new();
        for i in (0..n).filter(|&i| needed[i]) {
            scheduled[i] = waiting_on[i] == 0;
            if scheduled[i] {
                ready.push_back(i);
            }
        }
        let limits = Limits { slots: limits.slots.max(1), threads: limits.threads.max(1) };
        StagePool {
            state: Mutex::new(State {
                ready,
                waiting_on,
                dependents,
                left: needed.iter().filter(|&&x| x).count(),
                running: 0,
                free_slots: limits.slots,
                reacquiring: 0,
                threads: 0,
                idle: 0,
                spawn_failed: None,
                scheduled,
            }),
            changed: Condvar::new(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `job(stage)` for every needed stage, each after the stages it reads, and returns once
    /// all are done; with a warning when the pool could not start as many threads as it wanted.
    pub(super) fn run(&self, job: &(dyn Fn(usize) + Sync)) -> Option<String> {
        std::thread::scope(|scope| {
            let mut state = self.lock();
            while state.left > 0 {
                if unstick(&mut state) {
                    self.changed.notify_all();
                }
                let wanted = !state.ready.is_empty()
                    && state.free_slots > state.reacquiring
                    && state.idle == 0
                    && state.threads < self.limits.threads
                    && state.spawn_failed.is_none();
                if !wanted {
                    state = self.wait(state);
                    continue;
                }
                // Counted as idle until it looks for work, so no second one is started for it.
                state.threads += 1;
                state.idle += 1;
                drop(state);
                let spawned =
                    std::thread::Builder::new().name("kiln-stage".into()).spawn_scoped(scope, || self.worker(job));
                state = self.lock();
                if let Err(e) = spawned {
                    state.threads -= 1;
                    state.idle -= 1;
                    state.spawn_failed = Some(format!(
                        "could not start another build thread ({e}); going on with {}",
                        state.threads.max(1)
                    ));
                    if state.threads == 0 {
                        // Not even one: this thread does the work.
                        state.threads += 1;
                        state.idle += 1;
                        drop(state);
                        self.worker(job);
                        state = self.lock();
                    }
                }
            }
            state.spawn_failed.take()
        })
    }

    fn worker(&self, job: &(dyn Fn(usize) + Sync)) {
        let mut state = self.lock();
        state.idle -= 1;
        loop {
            if state.left == 0 {
                break;
            }
            if state.free_slots > state.reacquiring {
                if let Some(stage) = state.ready.pop_front() {
                    state.free_slots -= 1;
                    state.running += 1;
                    if !state.ready.is_empty() {
                        // More ready work and this thread is no longer idle: the spawning loop
                        // (waiting while a started thread was counted idle) may start another.
                        self.changed.notify_all();
                    }
                    drop(state);
                    // Marks the stage done even if the job panics, so no thread waits forever.
                    let done = Done { pool: self, stage };
                    job(stage);
                    std::mem::forget(done);
                    // Done and on to the next ready stage under one lock, so a chain stays on
                    // this thread instead of waking another.
                    state = self.lock();
                    self.finish(&mut state, stage);
                    continue;
                }
            }
            if unstick(&mut state) {
                continue;
            }
            state.idle += 1;
            state = self.wait(state);
            state.idle -= 1;
        }
        state.threads -= 1;
        self.changed.notify_all();
    }

    fn finish(&self, state: &mut State, stage: usize) {
        state.free_slots += 1;
        state.running -= 1;
        state.left -= 1;
        let dependents = std::mem::take(&mut state.dependents[stage]);
        for d in dependents {
            state.waiting_on[d] -= 1;
            if state.waiting_on[d] == 0 && !state.scheduled[d] {
                state.scheduled[d] = true;
                state.ready.push_back(d);
            }
        }
        self.changed.notify_all();
    }

    /// Runs `wait` (a RUN step's processes) without holding a CPU slot, then takes one back.
    pub(super) fn blocking<T>(&self, wait: impl FnOnce() -> T) -> T {
        {
            let mut state = self.lock();
            state.free_slots += 1;
            self.changed.notify_all();
        }
        let result = wait();
        let mut state = self.lock();
        state.reacquiring += 1;
        while state.free_slots == 0 {
            state = self.wait(state);
        }
        state.reacquiring -= 1;
        state.free_slots -= 1;
        result
    }
}

/// When stages are left but none is running or ready, a dependency cycle holds them: they are
/// made ready anyway (they fail on the results that are not there). True when it did so.
fn unstick(state: &mut State) -> bool {
    if state.left == 0 || !state.ready.is_empty() || state.running > 0 {
        return false;
    }
    for i in 0..state.scheduled.len() {
        if !state.scheduled[i] {
            state.scheduled[i] = true;
            state.ready.push_back(i);
        }
    }
    !state.ready.is_empty()
}

struct Done<'p> {
    pool: &'p StagePool,
    stage: usize,
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        self.pool.finish(&mut state, self.stage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Runs `deps` on a pool; returns the order stages finished in and the most threads seen.
    fn run(deps: &[Vec<usize>], target: usize, limits: Limits, job: impl Fn(usize) + Sync) -> (Vec<usize>, usize) {
        let pool = StagePool::new(deps, target, limits);
        let order = Mutex::new(Vec::new());
        let most = AtomicUsize::new(0);
        pool.run(&|stage| {
            most.fetch_max(pool.lock().threads, Ordering::SeqCst);
            job(stage);
            order.lock().unwrap().push(stage);
        });
        assert_eq!(pool.lock().threads, 0, "threads left running");
        (order.into_inner().unwrap(), most.load(Ordering::SeqCst))
    }

    #[test]
    fn stages_run_after_what_they_read_and_unneeded_ones_not_at_all() {
        // 0 ← 1 ← 3, 2 ← 3, 4 unused.
        let deps = vec![vec![], vec![0], vec![], vec![1, 2], vec![0]];
        let (order, _) = run(&deps, 3, Limits { slots: 2, threads: 4 }, |_| {});
        assert_eq!(order.len(), 4, "{order:?}");
        let at = |s: usize| order.iter().position(|&x| x == s).unwrap();
        assert!(at(0) < at(1) && at(1) < at(3) && at(2) < at(3), "{order:?}");
        assert!(!order.contains(&4));
    }

    #[test]
    fn two_independent_stages_run_at_once_on_two_slots() {
        // Each stage (holding its slot, as an ADD from a URL does) waits until the other one has
        // started too; one at a time, neither would see the other within the timeout.
        let deps = vec![vec![], vec![], vec![0, 1]];
        let started = AtomicUsize::new(0);
        let overlapped = AtomicUsize::new(0);
        run(&deps, 2, Limits { slots: 2, threads: 4 }, |stage| {
            if stage == 2 {
                return;
            }
            started.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(5);
            while started.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if started.load(Ordering::SeqCst) == 2 {
                overlapped.fetch_add(1, Ordering::SeqCst);
            }
        });
        assert_eq!(overlapped.load(Ordering::SeqCst), 2, "the two stages did not run at the same time");
    }

    #[test]
    fn a_long_chain_uses_one_thread_and_linear_time() {
        let time = |n: usize| {
            let deps: Vec<Vec<usize>> = (0..n).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect();
            let start = Instant::now();
            let (order, most) = run(&deps, n - 1, Limits { slots: 2, threads: 18 }, |_| {});
            assert_eq!(order, (0..n).collect::<Vec<_>>());
            assert_eq!(most, 1, "a chain needs one thread");
            start.elapsed()
        };
        let small = time(2_000);
        let big = time(20_000);
        // Ten times the stages: about ten times the time (quadratic would be a hundred).
        assert!(big < small * 30 + Duration::from_millis(200), "2,000: {small:?}, 20,000: {big:?}");
    }

    #[test]
    fn wide_graphs_keep_threads_bounded_and_waiting_runs_do_not_hold_slots() {
        // 40 independent stages that each "wait on a process" for 100 ms, then a final stage.
        let mut deps: Vec<Vec<usize>> = (0..40).map(|_| vec![]).collect();
        deps.push((0..40).collect());
        let pool = StagePool::new(&deps, 40, Limits { slots: 2, threads: 10 });
        let most = AtomicUsize::new(0);
        let waiting = AtomicUsize::new(0);
        let most_waiting = AtomicUsize::new(0);
        let start = Instant::now();
        pool.run(&|stage| {
            most.fetch_max(pool.lock().threads, Ordering::SeqCst);
            if stage < 40 {
                pool.blocking(|| {
                    let now = waiting.fetch_add(1, Ordering::SeqCst) + 1;
                    most_waiting.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                    waiting.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        let took = start.elapsed();
        assert!(most.load(Ordering::SeqCst) <= 10, "threads: {}", most.load(Ordering::SeqCst));
        // More waits at once than CPU slots: a waiting RUN does not hold its slot.
        assert!(most_waiting.load(Ordering::SeqCst) > 2, "at most {} at once", most_waiting.load(Ordering::SeqCst));
        // 40 × 100 ms on up to 10 threads: well under the 2 s that two slots would take.
        assert!(took < Duration::from_millis(1500), "took {took:?}");
    }

    #[test]
    fn a_dependency_cycle_ends_instead_of_hanging() {
        let deps = vec![vec![1], vec![0], vec![0, 1]];
        let (order, _) = run(&deps, 2, Limits { slots: 1, threads: 2 }, |_| {});
        assert_eq!(order.len(), 3);
    }
}
