//! Scale and load of the handoff server (issue 12): N concurrent clients
//! (1, 4, 16) doing request → verify → end, with and without a uenv image,
//! and again with 1000 live allocations held; against the floor — the bare
//! kernel work of one allocation (clone with the same `CLONE_NEW*` flags,
//! open the three ns files, kill and reap) in as many threads as clients.
//!
//! The server runs in its own process (this binary re-executed in a server
//! role), so its threads and FDs are counted alone, and it serves the real
//! unshare backend with a loop-mounted squashfs image. Output: one table on
//! stdout. Targets (2-core machine): throughput ≥ 0.7 of the floor, p99/p50
//! ≤ 2 at 16 clients, latency with 1000 live ≤ 1.5× none, server threads ≤
//! 16, zero errors.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::wire::*;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nodeinit_handoff::protocol::Message;
use nodeinit_handoff::{HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

const ROLE_ENV: &str = "NODEINIT_BENCH_SERVER_DIR";
/// Run the server under a stand-in for nodeinit's keeper (this binary in a
/// keeper role: the server's parent, reaping whatever it is given), so its
/// holders are the persistent kind a production worker makes; their
/// records go to a tmpfs, as `/run/nodeinit` is.
const KEEPER_ENV: &str = "NODEINIT_BENCH_KEEPER";
const KEEPER_ROLE_ENV: &str = "NODEINIT_BENCH_KEEPER_DIR";
const LIVE: usize = 1000;
/// `uenv_mount_path` of the server (default `/user-environment`).
const UENV_PATH_ENV: &str = "NODEINIT_BENCH_UENV_PATH";
/// `spare_holders` of the server (default 0).
const SPARES_ENV: &str = "NODEINIT_BENCH_SPARES";

fn server_process(dir: &Path) {
    let mounts = Arc::new(common::TestMounts::new(
        &dir.join("images"),
        &dir.join("uenv"),
    ));
    let state_dir = PathBuf::from(format!("/dev/shm/nodeinit-bench-{}", std::process::id()));
    let mut unshare = UnshareConfig {
        state_dir: state_dir.clone(),
        spare_holders: std::env::var(SPARES_ENV)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        ..UnshareConfig::default()
    };
    // An existing directory here makes the uenv bind a single mount (no
    // shadow tmpfs): what the shadow costs is the difference.
    if let Ok(path) = std::env::var(UENV_PATH_ENV) {
        unshare.uenv_mount_path =
            nodeinit_namespaces::mount_namespace::UenvMountPath::parse(&path).unwrap();
    }
    let backend = Arc::new(UnshareBackend::new(unshare, Some(mounts)));
    let config = ServerConfig {
        socket_path: dir.join("handoff.sock"),
        max_allocations: 4096,
        max_allocations_per_peer: 4096,
        worker_threads: std::env::var("NODEINIT_BENCH_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(ServerConfig::default().worker_threads),
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend, config, ReadyGate::opened()).unwrap();
    println!("SERVER-READY {}", std::process::id());
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    server.shutdown();
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// The keeper role: start the server with the keeper's pid in its
/// environment, then reap every child (the server, and the holders given to
/// this process by `CLONE_PARENT`) until none is left.
fn keeper_process(dir: &Path) {
    let mut server = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, dir)
        .env(
            nodeinit_unshare::persist::KEEPER_PID_ENV,
            std::process::id().to_string(),
        )
        .spawn()
        .unwrap();
    while nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(-1), None).is_ok() {}
    // Reaped above already; this only tells Child so.
    let _ = server.wait();
}

struct Server {
    child: Child,
    /// The server process (the child, or the keeper's child).
    pid: u32,
    /// The keeper stand-in, when the server runs under one (it is `child`).
    keeper: Option<u32>,
    socket: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let keeper = std::env::var_os(KEEPER_ENV).is_some();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(if keeper { KEEPER_ROLE_ENV } else { ROLE_ENV }, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().unwrap().unwrap();
        let pid = ready
            .strip_prefix("SERVER-READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server said {ready:?}"));
        Self {
            keeper: keeper.then(|| child.id()),
            child,
            pid,
            socket: dir.join("handoff.sock"),
        }
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid)).map_or(0, |d| d.count())
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |d| d.count())
    }

    /// CPU of the server and of the holders it has released (reaped by the
    /// server itself, or by the keeper); under a keeper also of the keeper's
    /// live children — the server, and its holder spawners, which do the
    /// clones (their CPU reaches the keeper's only once they are reaped).
    fn cpu(&self) -> Duration {
        match self.keeper {
            None => process_cpu(self.pid),
            Some(keeper) => {
                process_cpu(keeper)
                    + children_of(keeper)
                        .into_iter()
                        .map(process_cpu)
                        .sum::<Duration>()
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Samples the server's threads and FDs while a run goes on.
struct Sampler {
    stop: Arc<AtomicBool>,
    max_threads: Arc<AtomicUsize>,
    max_fds: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (max_threads, max_fds) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let thread = {
            let (stop, mt, mf) = (stop.clone(), max_threads.clone(), max_fds.clone());
            std::thread::spawn(move || {
                // Listing 4000 FDs costs about a millisecond of CPU: sampled
                // every 5 ms it took a fifth of a core from the server under
                // test (not from the floor). Threads are cheap to list.
                let mut tick = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let t = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
                    mt.fetch_max(t, Ordering::Relaxed);
                    if tick.is_multiple_of(20) {
                        let f =
                            std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
                        mf.fetch_max(f, Ordering::Relaxed);
                    }
                    tick = tick.wrapping_add(1);
                    std::thread::sleep(Duration::from_millis(5));
                }
                let f = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
                mf.fetch_max(f, Ordering::Relaxed);
            })
        };
        Self {
            stop,
            max_threads,
            max_fds,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.max_threads.load(Ordering::Relaxed),
            self.max_fds.load(Ordering::Relaxed),
        )
    }
}

struct Run {
    /// Request → reply (`namespace_response`).
    latencies: Vec<Duration>,
    /// `allocation_ended` → `ack` (the floor: kill, reap, close).
    ends: Vec<Duration>,
    errors: usize,
    cycles: usize,
    wall: Duration,
    /// CPU time spent for the run (server + its holders + clients, or the
    /// floor's threads + holders).
    cpu: Duration,
    /// The server's (and its holders') part of `cpu`.
    server_cpu: Duration,
}

/// CPU time of this process (its threads) plus its reaped children.
fn own_cpu() -> Duration {
    let usage = |who| {
        let u = nix::sys::resource::getrusage(who).unwrap();
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        };
        tv(u.user_time()) + tv(u.system_time())
    };
    usage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        + usage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

/// The live (not zombie) children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|p| {
            procfs::process::Process::new(*p)
                .and_then(|p| p.stat())
                .is_ok_and(|s| s.ppid == pid as i32 && s.state != 'Z')
        })
        .map(|p| p as u32)
        .collect()
}

/// CPU time of process `pid` and its reaped children (utime, stime,
/// cutime, cstime of `/proc/<pid>/stat`).
fn process_cpu(pid: u32) -> Duration {
    // A child may exit between listing and reading: its CPU is then the
    // keeper's (reaped) or lost for this sample.
    let Ok(stat) = procfs::process::Process::new(pid as i32).and_then(|p| p.stat()) else {
        return Duration::ZERO;
    };
    let ticks = stat.utime + stat.stime + (stat.cutime + stat.cstime) as u64;
    Duration::from_secs_f64(ticks as f64 / procfs::ticks_per_second() as f64)
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    fn throughput(&self) -> f64 {
        self.cycles as f64 / self.wall.as_secs_f64()
    }
}

/// The `p` quantile of `samples` (nearest rank).
fn percentile(samples: &[Duration], p: f64) -> Duration {
    {
        let mut sorted = samples.to_vec();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index]
    }
}

/// `clients` threads, each `rounds` × request → verify → end on its own connection.
fn load(socket: &Path, clients: usize, rounds: usize, uenv: bool, tag: &str) -> Run {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (barrier, socket, tag) = (barrier.clone(), socket.to_path_buf(), tag.to_owned());
            std::thread::spawn(move || {
                let conn = connect_to(&socket);
                let image = uenv.then_some("hello.sqfs");
                barrier.wait();
                let (mut latencies, mut errors) = (Vec::with_capacity(rounds), 0);
                let mut ends = Vec::with_capacity(rounds);
                for r in 0..rounds {
                    let id = format!("{tag}-{c}-{r}");
                    let start = Instant::now();
                    let (reply, fds) = reply_on(&conn, &request(&id, &ALL, image));
                    latencies.push(start.elapsed());
                    let ok = matches!(reply, Message::NamespaceResponse(_))
                        && fds.len() == 3
                        && common::fd_link(fds[2].as_fd()).starts_with("mnt:[");
                    drop(fds);
                    if !ok {
                        errors += 1;
                        continue;
                    }
                    let start = Instant::now();
                    match reply_on(&conn, &ended(&id)).0 {
                        Message::Ack { .. } => ends.push(start.elapsed()),
                        _ => errors += 1,
                    }
                }
                (latencies, ends, errors)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut run = Run {
        latencies: Vec::new(),
        ends: Vec::new(),
        errors: 0,
        cycles: clients * rounds,
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
        server_cpu: Duration::ZERO,
    };
    for h in handles {
        let (l, ends, e) = h.join().unwrap();
        run.latencies.extend(l);
        run.ends.extend(ends);
        run.errors += e;
    }
    run.wall = start.elapsed();
    run
}

fn holder_main() -> isize {
    // SAFETY: a single raw syscall; the child never returns from it.
    unsafe {
        libc::pause();
    }
    0
}

/// The floor: `threads` threads, each `rounds` × clone(PID|NET|NS) + open
/// the 3 ns files + kill + reap.
fn floor(threads: usize, rounds: usize) -> Run {
    let cpu_before = own_cpu();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut stack = vec![0u8; 64 * 1024];
                barrier.wait();
                let (mut latencies, mut ends) = (Vec::with_capacity(rounds), Vec::new());
                for _ in 0..rounds {
                    let start = Instant::now();
                    let flags = CloneFlags::CLONE_NEWPID
                        | CloneFlags::CLONE_NEWNET
                        | CloneFlags::CLONE_NEWNS;
                    // SAFETY: the child runs holder_main, one raw syscall, on its own stack copy.
                    let pid = unsafe {
                        nix::sched::clone(
                            Box::new(holder_main),
                            &mut stack,
                            flags,
                            Some(libc::SIGCHLD),
                        )
                    }
                    .unwrap();
                    let fds: Vec<OwnedFd> = ["pid", "net", "mnt"]
                        .iter()
                        .map(|ns| {
                            std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))
                                .unwrap()
                                .into()
                        })
                        .collect();
                    latencies.push(start.elapsed());
                    let start = Instant::now();
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
                    nix::sys::wait::waitpid(pid, None).unwrap();
                    drop(fds);
                    ends.push(start.elapsed());
                }
                (latencies, ends)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let (mut latencies, mut ends) = (Vec::new(), Vec::new());
    for h in handles {
        let (l, e) = h.join().unwrap();
        latencies.extend(l);
        ends.extend(e);
    }
    Run {
        latencies,
        ends,
        errors: 0,
        cycles: threads * rounds,
        wall: start.elapsed(),
        cpu: own_cpu().saturating_sub(cpu_before),
        server_cpu: Duration::ZERO,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if let Some(dir) = std::env::var_os(ROLE_ENV) {
        return server_process(&PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os(KEEPER_ROLE_ENV) {
        return keeper_process(&PathBuf::from(dir));
    }
    // `cargo test --benches` runs bench binaries as tests: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    common::make_image(&tmp.path().join("images"), "hello.sqfs");
    let server = Server::start(tmp.path());
    println!(
        "server at rest (pid {}): {} threads, {} FDs; spare_holders = {}{}",
        server.pid,
        server.threads(),
        server.fds(),
        std::env::var(SPARES_ENV).unwrap_or_else(|_| "0".into()),
        if std::env::var_os(KEEPER_ENV).is_some() {
            "; under a keeper"
        } else {
            ""
        }
    );
    // Keep the image mounted throughout (the test mount backend remounts at zero).
    let keeper = connect_to(&server.socket);
    assert!(matches!(
        reply_on(&keeper, &request("keeper", &ALL, Some("hello.sqfs"))).0,
        Message::NamespaceResponse(_)
    ));
    // Warm-up.
    let _ = load(&server.socket, 2, 20, true, "warm");

    println!(
        "{:<22} {:>3} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>8} {:>7} {:>6} {:>9} {:>11} {:>10} {:>9} {:>8} {:>13}",
        "run",
        "N",
        "p50 ms",
        "p99 ms",
        "p99/p50",
        "alloc/s",
        "floor/s",
        "×floor",
        "threads",
        "FDs",
        "errors",
        "floor p99/p50",
        "CPU ms/alloc",
        "server CPU",
        "floor CPU",
        "end p50",
        "floor end p50"
    );
    let mut none_p50 = [Duration::ZERO; 2];
    let report = |name: &str, n: usize, run: &Run, floor: &Run, sample: (usize, usize)| {
        println!(
            "{:<22} {:>3} {:>9.2} {:>9.2} {:>7.2} {:>9.0} {:>9.0} {:>7.2} {:>8} {:>7} {:>6} {:>9.2} {:>11.3} {:>10.3} {:>9.3} {:>8.2} {:>13.2}",
            name,
            n,
            ms(run.percentile(0.5)),
            ms(run.percentile(0.99)),
            run.percentile(0.99).as_secs_f64() / run.percentile(0.5).as_secs_f64(),
            run.throughput(),
            floor.throughput(),
            run.throughput() / floor.throughput(),
            sample.0,
            sample.1,
            run.errors,
            floor.percentile(0.99).as_secs_f64() / floor.percentile(0.5).as_secs_f64(),
            ms(run.cpu) / run.cycles as f64,
            ms(run.server_cpu) / run.cycles as f64,
            ms(floor.cpu) / floor.cycles as f64,
            ms(percentile(&run.ends, 0.5)),
            ms(percentile(&floor.ends, 0.5))
        );
    };
    for (live, label) in [(false, ""), (true, " +1000 live")] {
        let mut held = Vec::new();
        if live {
            let conn = connect_to(&server.socket);
            for i in 0..LIVE {
                match reply_on(&conn, &request(&format!("live-{i}"), &ALL, None)).0 {
                    Message::NamespaceResponse(_) => {}
                    other => panic!("holding live-{i}: {other:?}"),
                }
            }
            held.push(conn);
            println!(
                "holding {LIVE} live allocations: server {} threads, {} FDs",
                server.threads(),
                server.fds()
            );
        }
        for uenv in [false, true] {
            for n in [1usize, 4, 16] {
                let rounds = if n == 1 {
                    200
                } else {
                    1600 / n / if n == 16 { 2 } else { 1 }
                };
                let floor_run = floor(n, rounds);
                let sampler = Sampler::start(server.pid);
                let tag = format!("l{}u{}n{n}", live as u8, uenv as u8);
                let cpu_before = (own_cpu(), server.cpu());
                let mut run = load(&server.socket, n, rounds, uenv, &tag);
                run.server_cpu = server.cpu().saturating_sub(cpu_before.1);
                run.cpu = own_cpu().saturating_sub(cpu_before.0) + run.server_cpu;
                let sample = sampler.finish();
                let name = format!("{}{}", if uenv { "uenv" } else { "plain" }, label);
                report(&name, n, &run, &floor_run, sample);
                if n == 1 {
                    if live {
                        println!(
                            "  latency with {LIVE} live / none (1 client, p50): {:.2}",
                            run.percentile(0.5).as_secs_f64()
                                / none_p50[uenv as usize].as_secs_f64()
                        );
                    } else {
                        none_p50[uenv as usize] = run.percentile(0.5);
                    }
                }
            }
        }
        if live {
            let conn = &held[0];
            for i in 0..LIVE {
                let _ = reply_on(conn, &ended(&format!("live-{i}")));
            }
        }
    }
    let floor1 = floor(1, 200);
    println!(
        "floor alone (1 thread): p50 {:.2} ms, p99 {:.2} ms",
        ms(floor1.percentile(0.5)),
        ms(floor1.percentile(0.99))
    );
    let _ = reply_on(&keeper, &ended("keeper"));
}
