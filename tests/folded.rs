//! Folded stacks (the flamegraph's input) on a real recording: a parent
//! and two children of the same executable, nested spans on two threads
//! each, one process killed with spans open. The writer's totals must equal
//! those of the plain definition (per exit: the stack's text, self time =
//! duration minus children), computed here from the merged events; the two
//! children's identical stacks add up into one line. On the same kind of
//! recording, `Session::events_of` (which the critical path's second pass
//! uses) yields exactly the selected lanes' part of `Session::events`.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{child_role, ROLE};
use mpprof_merge::write::folded;
use mpprof_merge::{EventKind, Session};

const TEST: &str = "folded_stacks_add_up_the_self_time_of_every_stack";

#[mpprof::instrument]
fn fold_leaf(i: u64) -> u64 {
    std::hint::black_box(i.wrapping_mul(31))
}

#[mpprof::instrument]
fn fold_middle(i: u64) -> u64 {
    fold_leaf(i) ^ fold_leaf(i + 1)
}

#[mpprof::instrument(name = "fold;outer")]
fn fold_outer(n: u64) -> u64 {
    (0..n).map(fold_middle).fold(0, |a, x| a ^ x)
}

fn fold_child() {
    let t = std::thread::spawn(|| fold_outer(300));
    std::hint::black_box(fold_outer(200));
    t.join().unwrap();
    if std::env::var_os("FOLD_DIE").is_some() {
        // Die with spans open: the merge closes them at the last event.
        let _open = mpprof::scope!("dying");
        fold_leaf(7);
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[mpprof::instrument]
fn fold_parent() {
    let exe = std::env::current_exe().unwrap();
    for die in [false, false, true] {
        let mut c = Command::new(&exe);
        c.args([TEST, "--exact"]).env(ROLE, "fold-child");
        if die {
            c.env("FOLD_DIE", "1");
        }
        let mut child = mpprof::spawn(&mut c).unwrap();
        let _ = mpprof::wait(&mut child).unwrap();
    }
    fold_outer(50);
}

/// The plain definition: per exit, the text of the stack it closes, and its
/// self time.
fn oracle(s: &Session) -> HashMap<String, u64> {
    // Per thread: open frames as (callsite, start, time in children).
    type Frames = Vec<(u32, i64, i64)>;
    let mut stacks: HashMap<(usize, u32), Frames> = HashMap::new();
    let mut totals = HashMap::new();
    for e in s.events() {
        let p = &s.processes[e.proc];
        match e.kind {
            EventKind::Enter { site } => stacks
                .entry((e.proc, e.lane))
                .or_default()
                .push((site, e.ts, 0)),
            EventKind::Exit { .. } => {
                let stack = stacks.entry((e.proc, e.lane)).or_default();
                let (site, start, child) = stack.pop().expect("an exit closes a span");
                let dur = e.ts - start;
                if let Some(parent) = stack.last_mut() {
                    parent.2 += dur;
                }
                let exe = p
                    .file
                    .info
                    .as_ref()
                    .unwrap()
                    .exe
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string();
                let mut key = exe.replace(';', ":");
                for (s, _, _) in stack.iter().chain([&(site, 0, 0)]) {
                    key.push(';');
                    key.push_str(&p.site_name(*s).replace(';', ":"));
                }
                *totals.entry(key).or_default() += (dur - child).max(0) as u64;
            }
            _ => {}
        }
    }
    totals
}

#[test]
fn folded_stacks_add_up_the_self_time_of_every_stack() {
    child_role("fold-child", fold_child);
    child_role("fold-parent", fold_parent);
    let (_dir, s) = common::record(TEST, "fold-parent");
    assert_eq!(s.processes.len(), 4);
    let (stacks, stats) = folded::collect(&s);
    assert!(stats.closed_spans > 0, "the killed child's open spans");
    let got: HashMap<String, u64> = stacks.into_iter().collect();
    let want = oracle(&s);
    assert_eq!(got, want);
    let exe = std::env::current_exe().unwrap();
    let exe = exe.file_name().unwrap().to_str().unwrap();
    // The three children (and the parent) share the leaf's stack line.
    assert!(got.contains_key(&format!("{exe};fold:outer;fold_middle;fold_leaf")));
    assert!(got.contains_key(&format!(
        "{exe};fold_parent;fold:outer;fold_middle;fold_leaf"
    )));
    assert!(got.keys().any(|k| k.ends_with(";dying;fold_leaf")));
}

#[test]
fn events_of_yields_the_selected_lanes_part_of_events() {
    child_role("fold-child", fold_child);
    child_role("fold-parent", fold_parent);
    let (_dir, s) = common::record(
        "events_of_yields_the_selected_lanes_part_of_events",
        "fold-parent",
    );
    let key = |e: &mpprof_merge::Event| format!("{} {} {} {:?}", e.proc, e.lane, e.ts, e.kind);
    let lanes: Vec<(usize, u32)> = s
        .processes
        .iter()
        .enumerate()
        .flat_map(|(pi, p)| {
            // Not the resource sampler's lane: it yields no events.
            let sampler = p.file.sampler_lane();
            p.file
                .lanes
                .keys()
                .filter(move |&&l| Some(l) != sampler)
                .map(move |&l| (pi, l))
        })
        .collect();
    assert!(lanes.len() >= 6, "{lanes:?}");
    // Every other lane, then each lane alone.
    let mut picks: Vec<Vec<(usize, u32)>> = vec![lanes.iter().copied().step_by(2).collect()];
    picks.extend(lanes.iter().map(|&l| vec![l]));
    for pick in picks {
        let want: Vec<String> = s
            .events()
            .filter(|e| pick.contains(&(e.proc, e.lane)))
            .map(|e| key(&e))
            .collect();
        let got: Vec<String> = s
            .events_of(|pi, lane| pick.contains(&(pi, lane)))
            .map(|e| key(&e))
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "lanes {pick:?}");
    }
}
