//! A fixed pool of threads for provider calls (namespace creation and
//! release block for milliseconds: `clone`, mounts, kill and reap).
//!
//! Owns the threads and the job queue. The number of threads is fixed at
//! start, whatever the number of connections. A job may send its one reply
//! on its connection (non-blocking); everything else on a socket is the
//! event loop's.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// One unit of work.
pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pool. Dropping it lets queued jobs finish and joins the threads.
pub(super) struct Workers {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Start `count` threads.
    pub(super) fn start(count: usize) -> std::io::Result<Self> {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let queue = queue.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nodeinit-handoff-w{i}"))
                    .spawn(move || run(&queue))?,
            );
        }
        Ok(Self {
            jobs: Some(jobs),
            threads,
        })
    }

    /// Queue `job`. `false` when the pool is stopping.
    pub(super) fn submit(&self, job: Job) -> bool {
        self.jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok())
    }
}

fn run(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a handoff worker thread panicked");
            }
        }
    }
}
