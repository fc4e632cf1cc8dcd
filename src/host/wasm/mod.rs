//! The Proxy-Wasm adapter: the callbacks Envoy calls, each handing its work to
//! [`crate::filter`] with [`ffi::WasmHost`] as the host. Every host call goes
//! through `ffi`, which returns errors instead of trapping, and so do the
//! logger and the panic hook installed here.
//!
//! The contexts are kept here, not by the SDK's dispatcher: it holds them as
//! trait objects of its `Context` traits, whose vtables keep every default
//! method (gRPC, HTTP calls, queues) and their host calls in the module, plus
//! its hash maps and `thread_local` machinery: about 38 KB of the .wasm for
//! the four callbacks this filter implements. `abi` exports the callbacks.

mod abi;
mod ffi;

use std::cell::RefCell;

use crate::filter::{FilterRoot, FilterStream, Host};
use crate::rng::SplitMix64;

use self::ffi::WasmHost;

/// `log` records to Envoy's log; a failed write is dropped, never a trap.
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => ffi::LOG_ERROR,
            log::Level::Warn => ffi::LOG_WARN,
            _ => ffi::LOG_INFO,
        };
        ffi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

/// Once, when the host starts the module (`_initialize`).
fn start() {
    // Without an SDK logger (its writes unwrap) and with a panic hook that only
    // writes one line and ignores the status: nothing here can fail twice.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        ffi::log(
            ffi::LOG_CRITICAL,
            &format!("canary-router: panic{location}"),
        );
    }));
}

/// One plugin configuration's root context.
fn new_root() -> FilterRoot {
    let rng = SplitMix64::from_entropy().unwrap_or_else(|| {
        // Never a fixed seed: fall back to the clock, and say so.
        log::warn!(
            "canary-router: no entropy from the host; seeding random choices from the clock"
        );
        SplitMix64::new(WasmHost.now_ns().unwrap_or(0))
    });
    FilterRoot::new(rng)
}

/// The live contexts of this VM, by the ids Envoy gives them.
struct Contexts {
    /// One per plugin configuration sharing this VM: a handful.
    roots: Vec<(u32, FilterRoot)>,
    /// One per request in flight.
    streams: Streams,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = const {
        RefCell::new(Contexts {
            roots: Vec::new(),
            streams: Streams::new(),
        })
    };
}

/// `f` on the contexts; `None` if they are in use (a callback cannot reach
/// here from inside another: the host calls the filter makes call back only
/// `proxy_on_memory_allocate`, which does not come here).
fn with_contexts<R>(f: impl FnOnce(&mut Contexts) -> R) -> Option<R> {
    CONTEXTS
        .try_with(|contexts| contexts.try_borrow_mut().ok().map(|mut c| f(&mut c)))
        .ok()
        .flatten()
}

impl Contexts {
    fn root(&mut self, id: u32) -> Option<&mut FilterRoot> {
        self.roots
            .iter_mut()
            .find(|(root, _)| *root == id)
            .map(|(_, root)| root)
    }
}

/// A context is created: a root one (`root_id` 0) per plugin configuration, an
/// HTTP one per request, from its root. Unknown roots are ignored, as are
/// later callbacks for a context that was never created.
fn context_create(id: u32, root_id: u32) {
    if root_id == 0 {
        let root = new_root();
        with_contexts(|c| {
            c.roots.retain(|(r, _)| *r != id);
            c.roots.push((id, root));
        });
        return;
    }
    with_contexts(|c| {
        if let Some(stream) = c.root(root_id).map(|root| root.stream()) {
            c.streams.insert(id, stream);
        }
    });
}

fn vm_start(id: u32) -> bool {
    with_contexts(|c| c.root(id).is_some()).unwrap_or(false)
}

fn configure(id: u32) -> bool {
    with_contexts(|c| c.root(id).is_some_and(|root| root.configure(&WasmHost))).unwrap_or(false)
}

fn tick(id: u32) {
    with_contexts(|c| {
        if let Some(root) = c.root(id) {
            root.tick(&WasmHost);
        }
    });
}

fn request_headers(id: u32) {
    with_contexts(|c| {
        if let Some(stream) = c.streams.get_mut(id) {
            stream.on_request_headers(&WasmHost);
        }
    });
}

fn response_headers(id: u32) {
    with_contexts(|c| {
        if let Some(stream) = c.streams.get_mut(id) {
            stream.on_response_headers(&WasmHost);
        }
    });
}

fn response_trailers(id: u32) {
    with_contexts(|c| {
        if let Some(stream) = c.streams.get_mut(id) {
            stream.on_response_trailers(&WasmHost);
        }
    });
}

fn delete(id: u32) {
    with_contexts(|c| {
        if c.streams.remove(id).is_none() {
            c.roots.retain(|(root, _)| *root != id);
        }
    });
}

/// The requests in flight by context id: open addressing over a power-of-two
/// table, probing linearly from `id & mask`; Envoy numbers contexts in order,
/// so concurrent requests mostly sit in their own slots. Deletion shifts the
/// probe run back (no tombstones). No allocation per request, unlike a boxed
/// context per request.
struct Streams {
    slots: Vec<Option<(u32, FilterStream)>>,
    len: usize,
}

impl Streams {
    const fn new() -> Streams {
        Streams {
            slots: Vec::new(),
            len: 0,
        }
    }

    /// The slot of `id`, or the empty slot where it would go; `None` while the
    /// table is empty. The table is never full, so the probe ends.
    fn find(&self, id: u32) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = id as usize & mask;
        loop {
            match self.slots.get(i)? {
                Some((key, _)) if *key != id => i = (i + 1) & mask,
                _ => return Some(i),
            }
        }
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut FilterStream> {
        let i = self.find(id)?;
        match self.slots.get_mut(i)? {
            Some((_, stream)) => Some(stream),
            None => None,
        }
    }

    /// Add (or replace) the stream of `id`, growing the table past half full.
    fn insert(&mut self, id: u32, stream: FilterStream) {
        if (self.len + 1) * 2 > self.slots.len() {
            let size = (self.slots.len() * 2).max(16);
            let old = std::mem::replace(&mut self.slots, Vec::with_capacity(size));
            self.slots.resize_with(size, || None);
            self.len = 0;
            for (key, stream) in old.into_iter().flatten() {
                self.put(key, stream);
            }
        }
        self.put(id, stream);
    }

    fn put(&mut self, id: u32, stream: FilterStream) {
        if let Some(slot) = self.find(id).and_then(|i| self.slots.get_mut(i)) {
            if slot.is_none() {
                self.len += 1;
            }
            *slot = Some((id, stream));
        }
    }

    fn remove(&mut self, id: u32) -> Option<FilterStream> {
        let mut hole = self.find(id)?;
        let (_, stream) = self.slots.get_mut(hole)?.take()?;
        self.len -= 1;
        // Move back each later entry of the probe run that may sit in the hole
        // (its home slot is not between the hole and it), so lookups that
        // probed past the removed entry still find theirs.
        let mask = self.slots.len() - 1;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let home = match self.slots.get(at) {
                Some(Some((key, _))) => *key as usize & mask,
                _ => break,
            };
            if (at.wrapping_sub(home) & mask) >= (at.wrapping_sub(hole) & mask) {
                let moved = self.slots.get_mut(at).and_then(Option::take);
                if let Some(slot) = self.slots.get_mut(hole) {
                    *slot = moved;
                }
                hole = at;
            }
        }
        Some(stream)
    }
}
