//! Topic matching at broker scale: a PUBLISH against 1,000,000 subscriptions, and a
//! new subscription's filter against 100,000 retained topics.
//!
//! Run with `cargo bench -p midge-broker --bench matching`. The heap each structure holds
//! is printed once, since holding millions of subscriptions is the point.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use midge_broker::retained::RetainedTree;
use midge_broker::router::trie::SubscriptionTrie;

const SUBSCRIPTIONS: u32 = 1_000_000;
const RETAINED: u32 = 100_000;

/// A deterministic stand-in for randomness (splitmix64), so every run builds the same trie.
fn mix(i: u32) -> u64 {
    let mut z = u64::from(i).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `tenant{0..100}/device{0..1000}/sensor{0..10}`, 70% exact and 30% with a wildcard,
/// each subscribed by its own client.
fn subscription(i: u32) -> String {
    let (t, d, s) = (i % 100, (i / 100) % 1000, i / 100_000);
    match mix(i) % 10 {
        0..=6 => format!("tenant{t}/device{d}/sensor{s}"),
        7 => format!("tenant{t}/device{d}/#"),
        8 => format!("tenant{t}/+/sensor{s}"),
        _ => format!("+/device{d}/sensor{s}"),
    }
}

/// Counts live heap bytes, so the bench can say how much each structure holds (resident
/// memory would hide it: the allocator keeps freed pages for reuse).
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counter is only arithmetic on the side. Exercised by
// every allocation this bench makes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn subscription_trie(c: &mut Criterion) {
    let before = live_bytes();
    let mut trie = SubscriptionTrie::new();
    for i in 0..SUBSCRIPTIONS {
        trie.insert(&subscription(i), i, 1u8);
    }
    let held = live_bytes() - before;
    eprintln!(
        "SubscriptionTrie<u32, u8>: {} entries, {:.0} MiB of heap ({} bytes/entry)",
        trie.len(),
        mib(held),
        held / trie.len()
    );

    let count = |topic: &str| {
        let mut n = 0u32;
        trie.for_each_match(topic, |f, k, v| {
            black_box((f, k, v));
            n += 1;
        });
        n
    };
    eprintln!(
        "matches: hit={} miss={} dollar={}",
        count("tenant17/device123/sensor4"),
        count("tenant17/device123/nosuch"),
        count("$SYS/broker/load")
    );

    let mut g = c.benchmark_group("trie_1M");
    g.bench_function("match_hit", |b| {
        b.iter(|| count(black_box("tenant17/device123/sensor4")))
    });
    g.bench_function("match_miss", |b| {
        b.iter(|| count(black_box("tenant17/device123/nosuch")))
    });
    g.bench_function("match_dollar_topic", |b| {
        b.iter(|| count(black_box("$SYS/broker/load")))
    });
    g.finish();

    let mut g = c.benchmark_group("trie_1M_churn");
    g.bench_function("subscribe_unsubscribe", |b| {
        b.iter(|| {
            trie.insert(black_box("tenant5/device77/sensor3"), u32::MAX, 1);
            trie.remove(black_box("tenant5/device77/sensor3"), &u32::MAX)
        })
    });
    g.finish();
}

fn retained_tree(c: &mut Criterion) {
    let before = live_bytes();
    let mut tree = RetainedTree::new();
    for i in 0..RETAINED {
        let (t, d, s) = (i % 10, (i / 10) % 1000, i / 10_000);
        tree.insert(&format!("tenant{t}/device{d}/sensor{s}"), i);
    }
    let held = live_bytes() - before;
    eprintln!(
        "RetainedTree<u32>: {} topics, {:.1} MiB of heap ({} bytes/topic)",
        tree.len(),
        mib(held),
        held / tree.len()
    );

    let count = |filter: &str| {
        let mut n = 0u32;
        tree.for_each_match(filter, |t, v| {
            black_box((t, v));
            n += 1;
        });
        n
    };

    let mut g = c.benchmark_group("retained_100k");
    g.bench_function("get", |b| {
        b.iter(|| tree.get(black_box("tenant3/device42/sensor5")).copied())
    });
    for filter in [
        "tenant3/device42/sensor5",
        "tenant3/device42/+",
        "tenant3/+/sensor5",
        "tenant3/#",
    ] {
        let n = count(filter);
        g.bench_function(format!("match {filter} ({n} topics)"), |b| {
            b.iter(|| count(black_box(filter)))
        });
    }
    g.finish();
}

criterion_group!(benches, subscription_trie, retained_tree);
criterion_main!(benches);
