//! Load and leaks, with a native worker so the figures are the runner's own:
//! 64 extensions and 10,000 concurrent invokes lose, duplicate or misroute
//! nothing; 1,000 load/unload cycles and 1,000 worker crashes leave the host's
//! descriptors, child processes, zombies and memory where they were.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{options, TempDir};
use nodus_extension::RestartPolicy;
use nodus_extension::{ExtensionHost, ExtensionRegistry};
use serde_json::json;

/// The footprint checks need the process to themselves.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn native_echo() -> PathBuf {
    common::example_bin("native-echo")
}

/// An extension folder holding the native echo worker.
fn echo_ext(name: &str) -> TempDir {
    let dir = TempDir::new("native");
    std::fs::copy(native_echo(), dir.join("native-echo")).unwrap();
    let m = json!({
        "name": name, "version": "1", "description": "native echo", "capabilities": ["tool.invoke"],
        "entry": ["native-echo"],
        "surfaces": {"tools": [{"name": format!("{name}.echo"), "description": "echo"}, {"name": format!("{name}.crash"), "description": "exit 3"}]},
    });
    std::fs::write(dir.join("nodus-extension.json"), m.to_string()).unwrap();
    dir
}

/// Open descriptors, live children, zombie children and resident KiB of this process.
fn footprint() -> (usize, usize, usize, u64) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let me = std::process::id() as i32;
    let kids = common::procfs::all()
        .into_iter()
        .filter(|p| p.ppid == me)
        .collect::<Vec<_>>();
    let zombies = kids.iter().filter(|p| p.state == 'Z').count();
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap())
        })
        .unwrap();
    (fds, kids.len() - zombies, zombies, rss)
}

/// The footprint after the work is the baseline's: nothing leaked.
fn assert_back_to(base: (usize, usize, usize, u64), after: (usize, usize, usize, u64)) {
    assert!(after.0 <= base.0, "file descriptors leaked");
    assert!(
        after.1 <= base.1 && after.2 == 0,
        "processes or zombies left"
    );
    assert!(
        after.3 < base.3 + 8 * 1024,
        "resident memory grew by more than 8 MiB"
    );
}

/// Waits until the footprint's process counts are back to the baseline's.
async fn settle(base: (usize, usize, usize, u64)) -> (usize, usize, usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = footprint();
        if (now.0 <= base.0 && now.1 <= base.1 && now.2 <= base.2) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_extensions_ten_thousand_invokes_nothing_lost() {
    let _serial = SERIAL.lock().await;
    let registry = Arc::new(ExtensionRegistry::new(options()));
    let dirs: Vec<TempDir> = (0..64).map(|i| echo_ext(&format!("t.e{i}"))).collect();
    for d in &dirs {
        registry.load(d.path()).await.unwrap();
    }
    let started = Instant::now();
    let callers: Vec<_> = (0..16)
        .map(|c| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in (c..10_000).step_by(16) {
                    let ext = format!("t.e{}", i % 64);
                    let args = json!({"n": i, "ext": ext});
                    let r = registry
                        .invoke(&ext, &format!("{ext}.echo"), &args.to_string())
                        .await
                        .unwrap();
                    assert_eq!(r, args, "misrouted or corrupted response");
                    got.push(i);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in callers {
        all.extend(c.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..10_000).collect::<Vec<_>>(),
        "every invoke answered exactly once"
    );
    println!(
        "LOAD: 64 extensions, 10000 invokes from 16 callers in {:.2}s ({:.0} invokes/s), 0 lost, 0 duplicated, 0 misrouted",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_load_unload_cycles_leak_nothing() {
    let _serial = SERIAL.lock().await;
    let dir = echo_ext("t.cycle");
    let registry = ExtensionRegistry::new(options());
    let cycle = || async {
        registry.load(dir.path()).await.unwrap();
        assert_eq!(
            registry
                .invoke("t.cycle", "t.cycle.echo", r#"{"x": 1}"#)
                .await
                .unwrap(),
            json!({"x": 1})
        );
        registry.unload("t.cycle").await.unwrap();
    };
    for _ in 0..20 {
        cycle().await; // warm up allocator and runtime
    }
    let base = footprint();
    let started = Instant::now();
    for _ in 0..1000 {
        cycle().await;
    }
    let elapsed = started.elapsed();
    let after = settle(base).await;
    println!(
        "LEAK load/unload x1000 in {:.1}s: fds {} -> {}, children {} -> {}, zombies {} -> {}, rss {} -> {} KiB",
        elapsed.as_secs_f64(),
        base.0, after.0, base.1, after.1, base.2, after.2, base.3, after.3
    );
    assert_back_to(base, after);
    // Scratch folders in the temporary folder, the private roots'
    // skeletons on /dev/shm where that is a tmpfs (src/sandbox/root.rs).
    for folder in [std::env::temp_dir(), std::path::PathBuf::from("/dev/shm")] {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let left: Vec<_> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("nodus-ext-{}-", std::process::id())))
            .collect();
        assert!(left.is_empty(), "left in {}: {left:?}", folder.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_worker_crashes_leak_nothing() {
    let _serial = SERIAL.lock().await;
    let dir = echo_ext("t.crashy");
    let opts = options().with_restart(
        RestartPolicy::default()
            .with_max_failures(u32::MAX)
            .with_window(Duration::from_secs(60))
            .with_backoff_base(Duration::ZERO)
            .with_backoff_max(Duration::ZERO),
    );
    let host = ExtensionHost::load(dir.path(), opts).await.unwrap();
    let crash = || async {
        let err = host.invoke("t.crashy.crash", "{}").await.unwrap_err();
        assert_eq!(err.class(), "SandboxError");
        assert!(err.to_string().contains("exited with status 3"), "{err}");
    };
    for _ in 0..20 {
        crash().await;
    }
    let base = footprint();
    let started = Instant::now();
    for _ in 0..1000 {
        crash().await;
    }
    let elapsed = started.elapsed();
    // The host still serves after 1,000 crashes.
    assert_eq!(
        host.invoke("t.crashy.echo", r#"{"ok": 1}"#).await.unwrap(),
        json!({"ok": 1})
    );
    host.unload().await;
    let after = settle(base).await;
    println!(
        "LEAK crashes x1000 in {:.1}s: fds {} -> {}, children {} -> {}, zombies {} -> {}, rss {} -> {} KiB, workers started {}",
        elapsed.as_secs_f64(),
        base.0, after.0, base.1, after.1, base.2, after.2, base.3, after.3, host.worker_starts()
    );
    assert_back_to(base, after);
    assert!(host.worker_starts() >= 1021);
}
