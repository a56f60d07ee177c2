//! Starting child processes that record into the same session.

use std::collections::BTreeMap;
use std::io;
use std::process::{Child, Command, ExitStatus};

use parking_lot::Mutex;

use crate::format::{flow_name, kind, SiteKind};
use crate::{record, session};

/// Spawns `cmd` as a child that records into this process's session.
///
/// Records a `spawn <program>` span with a flow start in this process and
/// passes the session directory and the flow token to the child in its
/// environment (`MPPROF_DIR`, `MPPROF_PARENT_FLOW`, `MPPROF_PARENT_PID`,
/// `MPPROF_CLOCK_HZ`); the child records the flow's end when it starts
/// recording, at its first instrumented call, so the trace shows an arrow
/// from here to the child's first slice. The child needs no code of its
/// own beyond being instrumented.
///
/// If the child cannot be started (the program is missing, permission
/// denied), the error is returned as from [`Command::spawn`], and the
/// trace says so: the flow ends on this thread as `spawn failed`, with an
/// instant event naming the program and the error.
///
/// When this process does not record, the command is spawned unchanged.
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let Some(r) = session::ensure_recording() else {
        return cmd.spawn();
    };
    let program = cmd.get_program().to_string_lossy();
    let short = program.rsplit('/').next().unwrap_or(&program).to_owned();
    let span = format!("spawn {short}");
    record::named(kind::ENTER, SiteKind::Span, &span);
    let token = r.next_flow();
    record::flow(kind::FLOW_OUT, token, flow_name::SPAWN);
    cmd.env("MPPROF_DIR", &r.dir)
        .env("MPPROF_PARENT_FLOW", token.to_string())
        .env("MPPROF_PARENT_PID", std::process::id().to_string())
        .env("MPPROF_CLOCK_HZ", format!("{}", r.clock_hz));
    let child = cmd.spawn();
    match &child {
        Ok(c) => {
            let _ = record::inside(|| SPAWNED.lock().insert(c.id(), token));
        }
        Err(e) => {
            // No child will end the flow: it ends here, named for the
            // failure, and an instant says what failed.
            record::flow(kind::FLOW_IN, token, flow_name::SPAWN_FAILED);
            record::named(
                kind::INSTANT,
                SiteKind::Event,
                &format!("spawn failed: {short}: {:?}", e.kind()),
            );
        }
    }
    record::named(kind::EXIT, SiteKind::Span, &span);
    child
}

/// Children started by [`spawn`], by pid: the flow that spawned each.
static SPAWNED: Mutex<BTreeMap<u32, crate::FlowId>> = Mutex::new(BTreeMap::new());

/// Waits for a child started by [`spawn`] to exit, like
/// [`Child::wait`], and records the end of a flow from the child's last
/// event to here, so the trace (and the summary's critical path) shows the
/// parent waiting on the child. Without that, a wait is invisible to the
/// merge: it looks like time the parent spent on its own.
///
/// The flow's start is not recorded by the child: the merge takes the
/// child's last event, so a child that was killed has one too.
pub fn wait(child: &mut Child) -> io::Result<ExitStatus> {
    let status = child.wait()?;
    let token = record::inside(|| SPAWNED.lock().remove(&child.id())).flatten();
    if let Some(token) = token {
        record::flow(kind::FLOW_IN, token.child_exit(), flow_name::EXIT);
    }
    Ok(status)
}
