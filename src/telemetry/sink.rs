//! Where log lines go: a buffer per thread, written out to stderr by the `entragate-log`
//! thread in large writes.
//!
//! A thread appends its line to its own buffer (a mutex no other thread takes except the
//! writer, for a moment every [`FLUSH_EVERY`]); nothing is copied into a channel per line and
//! nobody is woken. When a buffer reaches [`BATCH_BYTES`] the thread hands the whole buffer
//! to the writer thread (one message, one wake-up per 64 KiB). Every [`FLUSH_EVERY`], and when
//! asked ([`flush`], [`Sink::close`]), the writer thread also takes what every buffer holds.
//! One thread's lines keep their order; lines of different threads interleave by batch.
//!
//! When stderr blocks (a full pipe nobody reads), the writer thread waits on it, and the
//! request threads go on: their batches queue up to [`MAX_QUEUED_BYTES`], past that a line is
//! dropped and counted ([`dropped_lines`], `entragate_log_lines_dropped_total` in `/metrics`)
//! instead of the request waiting. When stderr is closed (EPIPE, EBADF) the lines that cannot
//! be written are counted the same way. At shutdown [`Sink::close`] writes out everything
//! buffered, waiting up to [`CLOSE_WAIT`] for stderr; lines logged after that are written
//! directly.

use crate::sync::lock;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A thread's buffer is handed to the writer once it holds this much.
pub const BATCH_BYTES: usize = 64 * 1024;
/// The writer takes every thread's buffer at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Bytes handed to the writer and not yet written, past which lines are dropped (and counted)
/// rather than a request waiting for stderr.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// How long the last flush at shutdown waits for stderr.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// One thread's pending lines.
#[derive(Debug, Default)]
struct Slot {
    buf: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// When the first of them was appended, in [`FIRST`] order: a sweep writes the threads'
    /// buffers in this order, so that a line logged after another thread's whole buffer (the
    /// last words at shutdown) comes after it.
    first: u64,
}

/// Counts buffers going from empty to not empty (one atomic add per buffer, not per line).
static FIRST: AtomicU64 = AtomicU64::new(0);

enum Msg {
    /// A full buffer from one thread.
    Batch(Vec<u8>),
    /// Take every buffer now and write it out; then answer.
    Flush(Option<mpsc::SyncSender<()>>),
}

/// The process's line sink (one, installed by [`install`]).
#[derive(Debug)]
pub struct Sink {
    slots: Mutex<Vec<Arc<Slot>>>,
    tx: Mutex<Option<Sender<Msg>>>,
    queued: AtomicUsize,
    dropped: AtomicU64,
    closed: AtomicBool,
}

static SINK: OnceLock<Arc<Sink>> = OnceLock::new();
static DROPPED_BEFORE: AtomicU64 = AtomicU64::new(0);
/// The last flush did not get through to stderr in time: later lines are not written.
static STUCK: AtomicBool = AtomicBool::new(false);

thread_local! {
    static SLOT: Arc<Slot> = register();
}

fn register() -> Arc<Slot> {
    let slot = Arc::new(Slot::default());
    if let Some(sink) = SINK.get() {
        lock(&sink.slots).push(Arc::clone(&slot));
    }
    slot
}

/// Starts the writer thread writing to `out` and installs the sink. `None` when one is
/// installed already (or the thread cannot start).
pub fn install(out: Box<dyn std::io::Write + Send>) -> Option<Arc<Sink>> {
    let (tx, rx) = mpsc::channel();
    let sink = Arc::new(Sink {
        slots: Mutex::new(Vec::new()),
        tx: Mutex::new(Some(tx)),
        queued: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
        closed: AtomicBool::new(false),
    });
    SINK.set(Arc::clone(&sink)).ok()?;
    let writer = Arc::clone(&sink);
    std::thread::Builder::new()
        .name("entragate-log".to_owned())
        .spawn(move || writer.run(&rx, out))
        .ok()?;
    Some(sink)
}

/// Whether lines go through the sink (it is installed and not closed).
#[must_use]
pub fn active() -> bool {
    SINK.get()
        .is_some_and(|s| !s.closed.load(Ordering::Relaxed))
}

/// Appends one line (or several whole lines) that `fill` writes to this thread's buffer.
/// Without a sink, or after it closed, the bytes go straight to stderr; after a close that
/// stderr did not take in time, they are counted as dropped (a write could block for ever).
pub fn write_with(fill: impl FnOnce(&mut Vec<u8>)) {
    let Some(sink) = SINK.get().filter(|s| !s.closed.load(Ordering::Relaxed)) else {
        if STUCK.load(Ordering::Relaxed) {
            DROPPED_BEFORE.fetch_add(1, Ordering::Relaxed);
            return;
        }
        return direct(fill);
    };
    let mut fill = Some(fill);
    let appended = SLOT.try_with(|slot| {
        let mut pending = lock(&slot.buf);
        if pending.bytes.is_empty() {
            pending.first = FIRST.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(f) = fill.take() {
            f(&mut pending.bytes);
        }
        if pending.bytes.len() >= BATCH_BYTES {
            let full =
                std::mem::replace(&mut pending.bytes, Vec::with_capacity(BATCH_BYTES + 1024));
            // Sent while the slot is held: the writer, which takes slots before draining the
            // channel, can never write this thread's later lines before this batch.
            sink.hand_over(full);
        }
    });
    if appended.is_err()
        && let Some(f) = fill.take()
    {
        // This thread's buffer is gone (the thread is ending).
        direct(f);
    }
}

fn direct(fill: impl FnOnce(&mut Vec<u8>)) {
    let mut line = Vec::new();
    fill(&mut line);
    if std::io::stderr().lock().write_all(&line).is_err() {
        DROPPED_BEFORE.fetch_add(count_lines(&line), Ordering::Relaxed);
    }
}

/// Asks the writer to write out every buffer now, without waiting for it (a reload does).
pub fn flush() {
    if let Some(sink) = SINK.get()
        && let Some(tx) = lock(&sink.tx).as_ref()
    {
        let _ = tx.send(Msg::Flush(None));
    }
}

/// Lines lost so far: dropped while stderr was blocked, or not writable.
#[must_use]
pub fn dropped_lines() -> u64 {
    DROPPED_BEFORE.load(Ordering::Relaxed)
        + SINK.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

fn count_lines(bytes: &[u8]) -> u64 {
    let n = bytes.iter().filter(|&&b| b == b'\n').count();
    u64::try_from(n.max(usize::from(!bytes.is_empty()))).unwrap_or(u64::MAX)
}

impl Sink {
    fn hand_over(&self, batch: Vec<u8>) {
        let len = batch.len();
        if self.queued.load(Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            self.dropped
                .fetch_add(count_lines(&batch), Ordering::Relaxed);
            return;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        let sent = lock(&self.tx)
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Batch(batch)).is_ok());
        if !sent {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// Writes out every buffered line, waiting up to `wait` for stderr; from then on lines
    /// are written directly. Returns whether everything was written in time.
    pub fn close(&self, wait: Duration) -> bool {
        self.closed.store(true, Ordering::Relaxed);
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let tx = lock(&self.tx).take();
        let Some(tx) = tx else { return true };
        if tx.send(Msg::Flush(Some(ack_tx))).is_err() {
            return false;
        }
        drop(tx);
        let done = ack_rx.recv_timeout(wait).is_ok();
        if !done {
            STUCK.store(true, Ordering::Relaxed);
        } else {
            // Lines appended by a thread that saw the sink open just before it closed.
            let slots = lock(&self.slots);
            for slot in slots.iter() {
                let rest = std::mem::take(&mut lock(&slot.buf).bytes);
                if !rest.is_empty() {
                    direct(|line| line.extend_from_slice(&rest));
                }
            }
        }
        done
    }

    fn run(&self, rx: &Receiver<Msg>, mut out: Box<dyn std::io::Write + Send>) {
        let mut next_sweep = Instant::now() + FLUSH_EVERY;
        loop {
            let wait = next_sweep.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Batch(batch)) => self.write_batch(&mut out, &batch),
                Ok(Msg::Flush(ack)) => {
                    self.sweep(rx, &mut out);
                    next_sweep = Instant::now() + FLUSH_EVERY;
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.sweep(rx, &mut out);
                    next_sweep = Instant::now() + FLUSH_EVERY;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.sweep(rx, &mut out);
                    return;
                }
            }
        }
    }

    /// Takes every thread's buffer, then writes what the channel held before them (batches
    /// handed over earlier), then the buffers, oldest first: each thread's lines stay in
    /// order.
    fn sweep(&self, rx: &Receiver<Msg>, out: &mut Box<dyn std::io::Write + Send>) {
        let mut taken = Vec::new();
        {
            let mut slots = lock(&self.slots);
            slots.retain(|slot| {
                let mut pending = lock(&slot.buf);
                if !pending.bytes.is_empty() {
                    taken.push((pending.first, std::mem::take(&mut pending.bytes)));
                }
                // Still used by its thread (the list holds the other reference)?
                Arc::strong_count(slot) > 1
            });
        }
        let mut acks = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Batch(batch) => self.write_batch(out, &batch),
                Msg::Flush(ack) => acks.extend(ack),
            }
        }
        taken.sort_unstable_by_key(|(first, _)| *first);
        let mut all = Vec::with_capacity(taken.iter().map(|(_, b)| b.len()).sum());
        for (_, buf) in &taken {
            all.extend_from_slice(buf);
        }
        if !all.is_empty() && out.write_all(&all).and_then(|()| out.flush()).is_err() {
            self.dropped.fetch_add(count_lines(&all), Ordering::Relaxed);
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }

    fn write_batch(&self, out: &mut Box<dyn std::io::Write + Send>, batch: &[u8]) {
        if out.write_all(batch).and_then(|()| out.flush()).is_err() {
            self.dropped
                .fetch_add(count_lines(batch), Ordering::Relaxed);
        }
        self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
    }
}

/// The `tracing` subscriber's writer: each event's formatted line goes to this thread's
/// buffer like an access line.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeSinkWriter;

/// See [`MakeSinkWriter`].
#[derive(Debug)]
pub struct SinkWriter;

impl std::io::Write for SinkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        write_with(|buf| buf.extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeSinkWriter {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter
    }
}
