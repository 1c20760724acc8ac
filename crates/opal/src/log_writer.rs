//! Where log lines go: a buffer that a background thread writes to stderr every
//! [`FLUSH_EVERY`], so that request threads neither make a system call per line nor wake another
//! thread per line.
//!
//! `tracing-appender`'s non-blocking writer hands each line to its thread over a channel, which
//! wakes that thread for nearly every line under load; with an access-log line per request that
//! cost about as much CPU as the request itself on a 2-vCPU machine (docs/benchmarks.md). Here a
//! line is one `memcpy` under an uncontended lock. Lines are written in order. A buffer that
//! grows past [`MAX_BUFFERED`] is written by the thread that filled it, which holds back logging
//! rather than dropping lines or growing without bound. Dropping the [`FlushGuard`] writes what is
//! left; a process killed with SIGKILL loses at most the last [`FLUSH_EVERY`] of lines.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How often buffered lines are written.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Past this many buffered bytes, the logging thread writes them itself.
const MAX_BUFFERED: usize = 4 * 1024 * 1024;

struct Shared<W> {
    state: Mutex<State>,
    stop: Condvar,
    sink: Mutex<W>,
}

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    stopping: bool,
}

/// The `MakeWriter` for the subscriber.
pub(crate) struct BatchedWriter<W> {
    shared: Arc<Shared<W>>,
}

/// Writes what is buffered and stops the background thread when dropped.
pub(crate) struct FlushGuard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

impl<W: Write + Send + 'static> std::fmt::Debug for FlushGuard<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushGuard").finish_non_exhaustive()
    }
}

/// A writer of log lines into `sink` (stderr in the binary), and the guard that flushes it.
pub(crate) fn batched<W: Write + Send + 'static>(sink: W) -> (BatchedWriter<W>, FlushGuard<W>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        stop: Condvar::new(),
        sink: Mutex::new(sink),
    });
    let thread = std::thread::Builder::new()
        .name("opal-log-output".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || flush_loop(&shared)
        })
        .ok();
    (
        BatchedWriter {
            shared: Arc::clone(&shared),
        },
        FlushGuard { shared, thread },
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<W: Write> Shared<W> {
    /// Writes what is buffered (when there is no background thread to do it).
    fn take_and_write(&self) {
        let taken = std::mem::take(&mut lock(&self.state).buffer);
        let mut sink = lock(&self.sink);
        // Nowhere to report a failing stderr; the lines are lost, the server goes on.
        let _ = sink.write_all(&taken);
        let _ = sink.flush();
    }
}

fn flush_loop<W: Write>(shared: &Shared<W>) {
    loop {
        let state = lock(&shared.state);
        let (mut state, _) = shared
            .stop
            .wait_timeout_while(state, FLUSH_EVERY, |s| !s.stopping)
            .unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut state.buffer);
        let stopping = state.stopping;
        // Holding the sink before letting go of the state keeps the order of buffers.
        let mut sink = lock(&shared.sink);
        drop(state);
        if !taken.is_empty() {
            let _ = sink.write_all(&taken);
            let _ = sink.flush();
        }
        drop(sink);
        if stopping {
            return;
        }
    }
}

/// One line's writer: appends to the shared buffer.
pub(crate) struct LineWriter<'a, W> {
    shared: &'a Shared<W>,
}

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = lock(&self.shared.state);
        state.buffer.extend_from_slice(bytes);
        if state.buffer.len() >= MAX_BUFFERED {
            let taken = std::mem::take(&mut state.buffer);
            let mut sink = lock(&self.shared.sink);
            drop(state);
            let _ = sink.write_all(&taken);
            let _ = sink.flush();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BatchedWriter<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

impl<W: Write + Send + 'static> Drop for FlushGuard<W> {
    fn drop(&mut self) {
        lock(&self.shared.state).stopping = true;
        self.shared.stop.notify_all();
        match self.thread.take() {
            Some(thread) => {
                let _ = thread.join();
            }
            // The thread could not be started: write here.
            None => self.shared.take_and_write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_within_a_flush_period_and_all_of_them_on_drop() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        for i in 0..1000 {
            writeln!(writer.make_writer(), "line {i}").unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lock(&sink.0).len() < 1000 * 7 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        writeln!(writer.make_writer(), "last").unwrap();
        drop(guard);
        let text = String::from_utf8(lock(&sink.0).clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1001);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[999], "line 999");
        assert_eq!(lines[1000], "last");
    }

    #[test]
    fn a_full_buffer_is_written_by_the_thread_that_filled_it() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let big = vec![b'x'; MAX_BUFFERED];
        writer.make_writer().write_all(&big).unwrap();
        assert_eq!(lock(&sink.0).len(), MAX_BUFFERED, "written at once");
        drop(guard);
    }
}
