//! End-to-end tests of the sandbox. The test binary is its own helper and launcher: started with
//! `__sandbox-init` it runs `helper_main`, with `__sandbox-launcher` `launcher_main`, otherwise
//! it runs the tests (as root they exercise
//! namespaces, mounts and cgroups; otherwise only the direct fallback).

use std::fs;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use nimbus_sandbox::{
    prepare_spare, probe, spawn, AssignStart, Assignment, ExitInfo, Instance, InstanceSpec,
    Isolation, Launcher, Program, SandboxConfig, SpareSpec,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const HELPER_ARG: &str = "__sandbox-init";
const LAUNCHER_ARG: &str = "__sandbox-launcher";
const UID: u32 = 200_001;
const GID: u32 = 200_002;

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some(HELPER_ARG) => nimbus_sandbox::helper_main(),
        Some(LAUNCHER_ARG) => nimbus_sandbox::launcher_main(),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let failed = rt.block_on(run_all());
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

type TestFn = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|c| Box::pin($name(c))) as TestFn)),*]
    };
}

async fn run_all() -> usize {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let isolation = probe();
    for f in isolation.features() {
        println!("  {f}");
    }
    let sandboxed: Vec<(&str, TestFn)> = tests![
        pid_namespace_and_hostname,
        task_root_is_read_only,
        tmp_is_writable_and_limited,
        unbound_host_dirs_are_invisible,
        masked_path_is_empty,
        ro_path_under_private_dir_is_readable,
        runs_as_given_ids,
        environment_is_exactly_the_spec,
        memory_limit_oom_is_detected,
        fork_bomb_is_contained_and_cleaned_up,
        kill_leaves_no_survivors,
        missing_program_is_a_clear_exec_error,
        peak_memory_is_reported,
        dropping_an_instance_kills_it,
        interpreter_under_private_home_runs,
        spare_handoff_runs_the_prestarted_program,
        spare_exec_replaces_the_prestarted_program,
        spare_rejects_bad_code_names,
        dropped_spare_leaves_nothing,
        sandboxes_are_forked_by_the_launcher,
        helpers_start_without_a_launcher,
        a_dead_launcher_is_replaced,
        a_launcher_that_stops_answering_is_replaced,
    ];
    let direct: Vec<(&str, TestFn)> = tests![
        direct_env_cwd_and_exec_error,
        direct_kill_takes_the_process_group,
    ];
    let ctx = Ctx::new(isolation.clone());
    let direct_ctx = Ctx::new(Isolation::disabled());
    let mut plan: Vec<(&str, TestFn, &Ctx)> = Vec::new();
    if isolation.mounts() {
        plan.extend(sandboxed.into_iter().map(|(n, f)| (n, f, &ctx)));
    } else {
        println!("sandbox unavailable on this host: only the direct-mode tests run");
    }
    plan.extend(direct.into_iter().map(|(n, f)| (n, f, &direct_ctx)));

    let (mut passed, mut failed) = (0, 0);
    let start = Instant::now();
    for (name, f, ctx) in plan {
        if filter.as_deref().is_some_and(|flt| !name.contains(flt)) {
            continue;
        }
        let t = Instant::now();
        let result = match tokio::time::timeout(Duration::from_secs(30), f(ctx)).await {
            Ok(r) => r,
            Err(_) => Err("timed out after 30s".into()),
        };
        match result {
            Ok(()) => {
                passed += 1;
                println!("ok     {name} ({} ms)", t.elapsed().as_millis());
            }
            Err(e) => {
                failed += 1;
                println!("FAILED {name}: {e}");
            }
        }
    }
    for dir in cgroup_parent_dirs(&ctx) {
        let _ = fs::remove_dir(dir);
    }
    println!(
        "{passed} passed, {failed} failed ({:.1}s)",
        start.elapsed().as_secs_f64()
    );
    failed
}

/// One temp data dir per run: `data/code/<id>` for code, `data/scratch` for the sandbox.
struct Ctx {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    config: SandboxConfig,
}

impl Ctx {
    fn new(isolation: Isolation) -> Self {
        // Not under /tmp: the sandbox has its own /tmp, so host paths there cannot be shown.
        // (Unprivileged runs, which only test the direct mode, may use the usual temp dir.)
        let builder = || {
            let mut b = tempfile::Builder::new();
            b.prefix("nimbus-sandbox-test");
            b
        };
        let tmp = builder()
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .or_else(|_| builder().tempdir())
            .expect("temp dir");
        let base = tmp.path().to_path_buf();
        let exe = std::env::current_exe().expect("current exe");
        // As in the server: helpers come from the launcher wherever there are sandboxes.
        let launcher = isolation
            .mounts()
            .then(|| Launcher::start(&exe, &[LAUNCHER_ARG.to_string()]).expect("launcher"));
        let config = SandboxConfig {
            helper_exe: exe,
            helper_args: vec![HELPER_ARG.to_string()],
            scratch_dir: base.join("data/scratch"),
            cgroup_name: format!("nimbus-test-{}", std::process::id()),
            isolation,
            launcher,
        };
        Ctx {
            _tmp: tmp,
            base,
            config,
        }
    }

    fn data(&self) -> PathBuf {
        self.base.join("data")
    }

    /// A code dir holding `script` as an executable `run.sh`, and a spec that runs it.
    fn spec(&self, id: &str, script: &str) -> InstanceSpec {
        let code = self.data().join("code").join(id);
        fs::create_dir_all(&code).unwrap();
        fs::set_permissions(&code, fs::Permissions::from_mode(0o755)).unwrap();
        let run = code.join("run.sh");
        fs::write(&run, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        let task_root = self.config.task_root(&code);
        InstanceSpec {
            id: id.to_string(),
            program: task_root.join("run.sh"),
            args: vec![],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            code_dir: code,
            runtime_dir: None,
            ro_paths: vec![],
            mask_paths: vec![self.data()],
            memory_mb: 128,
            cpu_weight_mb: 128,
            pids_max: 64,
            tmp_mb: 16,
            uid: UID,
            gid: GID,
        }
    }

    async fn run(&self, spec: InstanceSpec) -> Result<Output, String> {
        self.run_with(&self.config, spec).await
    }

    async fn run_with(&self, config: &SandboxConfig, spec: InstanceSpec) -> Result<Output, String> {
        let inst = spawn(config, spec).await.map_err(|e| e.to_string())?;
        Ok(collect(inst).await)
    }

    async fn run_script(&self, id: &str, script: &str) -> Result<Output, String> {
        self.run(self.spec(id, script)).await
    }
}

struct Output {
    stdout: String,
    stderr: String,
    exit: ExitInfo,
    peak: Option<u64>,
    oom_killed: bool,
}

async fn collect(mut inst: Instance) -> Output {
    let mut out = inst.take_stdout().unwrap();
    let mut err = inst.take_stderr().unwrap();
    let (mut so, mut se) = (String::new(), String::new());
    let _ = tokio::join!(out.read_to_string(&mut so), err.read_to_string(&mut se));
    let exit = inst.wait().await;
    Output {
        stdout: so,
        stderr: se,
        exit,
        peak: inst.peak_memory_bytes(),
        oom_killed: inst.oom_killed(),
    }
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn line_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

async fn pid_namespace_and_hostname(ctx: &Ctx) -> Result<(), String> {
    let o = ctx
        .run_script(
            "ns-test",
            "echo pid=$$; echo procs=$(ls /proc | grep -c '^[0-9]'); echo host=$(hostname); \
             echo ipc=$(readlink /proc/self/ns/ipc)",
        )
        .await?;
    ensure(o.exit.code == Some(0), || {
        format!("exit {:?}: {}", o.exit, o.stderr)
    })?;
    ensure(line_value(&o.stdout, "pid") == Some("2"), || {
        format!("program should be pid 2 under ns-init: {}", o.stdout)
    })?;
    let procs: usize = line_value(&o.stdout, "procs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(99);
    ensure(procs <= 5, || {
        format!("sees {procs} processes: {}", o.stdout)
    })?;
    ensure(
        line_value(&o.stdout, "host") == Some("nimbus-ns-test"),
        || format!("hostname: {}", o.stdout),
    )?;
    let host_ipc = fs::read_link("/proc/self/ns/ipc").unwrap();
    ensure(
        line_value(&o.stdout, "ipc") != Some(host_ipc.to_str().unwrap()),
        || "ipc namespace is the host's".into(),
    )
}

async fn task_root_is_read_only(ctx: &Ctx) -> Result<(), String> {
    let o = ctx
        .run_script(
            "ro-test",
            "cat /var/task/run.sh >/dev/null && echo readable; \
             touch /var/task/new 2>/dev/null; echo task=$?; \
             touch /usr/new 2>/dev/null; echo usr=$?; \
             mkdir /newdir 2>/dev/null; echo root=$?; pwd",
        )
        .await?;
    ensure(o.stdout.contains("readable"), || {
        format!("code not readable: {}", o.stdout)
    })?;
    for key in ["task", "usr", "root"] {
        ensure(line_value(&o.stdout, key) != Some("0"), || {
            format!("/{key} is writable: {}", o.stdout)
        })?;
    }
    ensure(o.stdout.lines().last() == Some("/var/task"), || {
        format!("cwd is not /var/task: {}", o.stdout)
    })
}

async fn tmp_is_writable_and_limited(ctx: &Ctx) -> Result<(), String> {
    let mut spec = ctx.spec("tmp-test", "");
    spec.tmp_mb = 4;
    let code = spec.code_dir.join("run.sh");
    fs::write(
        &code,
        "#!/bin/sh\necho hi > /tmp/a && cat /tmp/a; echo mode=$(stat -c %a /tmp)\n\
         dd if=/dev/zero of=/tmp/big bs=1M count=8 2>/dev/null; echo dd=$?\n\
         echo size=$(du -k /tmp/big | cut -f1)\n",
    )
    .unwrap();
    let o = ctx.run(spec).await?;
    ensure(o.stdout.starts_with("hi\n"), || {
        format!("/tmp not writable: {} {}", o.stdout, o.stderr)
    })?;
    ensure(line_value(&o.stdout, "mode") == Some("1777"), || {
        format!("mode: {}", o.stdout)
    })?;
    ensure(line_value(&o.stdout, "dd") != Some("0"), || {
        format!("8 MB fit in a 4 MB /tmp: {}", o.stdout)
    })?;
    let size: u64 = line_value(&o.stdout, "size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ensure(size <= 4096, || format!("/tmp/big is {size} KiB"))
}

async fn unbound_host_dirs_are_invisible(ctx: &Ctx) -> Result<(), String> {
    let hidden = ctx.base.join("hidden");
    fs::create_dir_all(&hidden).unwrap();
    fs::write(hidden.join("secret.txt"), "s3cret").unwrap();
    let script = format!(
        "cat {0}/secret.txt 2>/dev/null; echo cat=$?; ls /root 2>/dev/null; echo root=$?; \
         ls /work >/dev/null 2>&1; echo work=$?; ls /sys/fs/cgroup >/dev/null 2>&1; echo sys=$?",
        hidden.display()
    );
    let o = ctx.run_script("hidden-test", &script).await?;
    ensure(!o.stdout.contains("s3cret"), || "secret visible".into())?;
    for key in ["cat", "root", "work", "sys"] {
        ensure(line_value(&o.stdout, key).is_some_and(|v| v != "0"), || {
            format!("{key} visible: {}", o.stdout)
        })?;
    }
    Ok(())
}

async fn masked_path_is_empty(ctx: &Ctx) -> Result<(), String> {
    let shared = ctx.base.join("shared");
    fs::create_dir_all(shared.join("inner")).unwrap();
    fs::write(shared.join("visible.txt"), "yes").unwrap();
    fs::write(shared.join("inner/secret.txt"), "no").unwrap();
    fs::write(shared.join("key.pem"), "no").unwrap();
    let mut spec = ctx.spec(
        "mask-test",
        &format!(
            "cat {0}/visible.txt; echo; echo inner=$(ls -A {0}/inner | wc -l); echo key=$(cat {0}/key.pem | wc -c)",
            shared.display()
        ),
    );
    spec.ro_paths = vec![shared.clone()];
    spec.mask_paths = vec![ctx.data(), shared.join("inner"), shared.join("key.pem")];
    let o = ctx.run(spec).await?;
    ensure(o.stdout.starts_with("yes"), || {
        format!("bound file missing: {} {}", o.stdout, o.stderr)
    })?;
    ensure(line_value(&o.stdout, "inner") == Some("0"), || {
        format!("masked dir not empty: {}", o.stdout)
    })?;
    ensure(line_value(&o.stdout, "key") == Some("0"), || {
        format!("masked file not empty: {}", o.stdout)
    })
}

async fn ro_path_under_private_dir_is_readable(ctx: &Ctx) -> Result<(), String> {
    let private = ctx.base.join("private");
    let prefix = private.join("pyenv/versions/3.11");
    fs::create_dir_all(prefix.join("lib")).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(prefix.join("lib/os.py"), "print('hi')").unwrap();
    let mut spec = ctx.spec(
        "rop-test",
        &format!(
            "cat {}/lib/os.py; echo; touch {}/lib/x 2>/dev/null; echo touch=$?",
            prefix.display(),
            prefix.display()
        ),
    );
    spec.ro_paths = vec![prefix.clone(), PathBuf::from("/nonexistent/path")];
    let o = ctx.run(spec).await?;
    ensure(o.stdout.starts_with("print('hi')"), || {
        format!("not readable: {} {}", o.stdout, o.stderr)
    })?;
    ensure(line_value(&o.stdout, "touch") != Some("0"), || {
        "ro path is writable".into()
    })
}

async fn runs_as_given_ids(ctx: &Ctx) -> Result<(), String> {
    let o = ctx
        .run_script(
            "uid-test",
            "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); grep NoNewPrivs /proc/self/status; \
             grep CapEff /proc/self/status",
        )
        .await?;
    ensure(
        o.stdout
            .contains(&format!("uid={UID} gid={GID} groups={GID}\n")),
        || format!("ids: {} {}", o.stdout, o.stderr),
    )?;
    ensure(o.stdout.contains("NoNewPrivs:\t1"), || {
        format!("no_new_privs: {}", o.stdout)
    })?;
    ensure(o.stdout.contains("CapEff:\t0000000000000000"), || {
        format!("caps: {}", o.stdout)
    })
}

async fn environment_is_exactly_the_spec(ctx: &Ctx) -> Result<(), String> {
    let mut spec = ctx.spec("env-test", "tr '\\0' '\\n' < /proc/$$/environ");
    spec.env = vec![
        ("AWS_LAMBDA_FUNCTION_NAME".into(), "f".into()),
        ("WITH_SPACE".into(), "a b=c".into()),
        ("EMPTY".into(), String::new()),
    ];
    std::env::set_var("NIMBUS_TEST_LEAK", "1");
    let o = ctx.run(spec.clone()).await?;
    let got: Vec<&str> = o.stdout.lines().collect();
    let want: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    ensure(got == want, || format!("env {got:?}, want {want:?}"))
}

async fn memory_limit_oom_is_detected(ctx: &Ctx) -> Result<(), String> {
    let mut spec = ctx.spec("oom-test", "a=x; while :; do a=$a$a; done");
    spec.memory_mb = 48;
    let o = ctx.run(spec).await?;
    ensure(o.exit.oom && o.oom_killed, || {
        format!("no OOM: {:?} {}", o.exit, o.stderr)
    })?;
    ensure(o.exit.signal == Some(9), || {
        format!("not SIGKILLed: {:?}", o.exit)
    })?;
    let peak = o.peak.unwrap_or(0);
    ensure(peak > 40 << 20 && peak <= 48 << 20, || {
        format!("peak {peak} outside the limit")
    })
}

async fn fork_bomb_is_contained_and_cleaned_up(ctx: &Ctx) -> Result<(), String> {
    let mut spec = ctx.spec("bomb-test", "b() { b | b & }; b; echo bombed; sleep 100");
    spec.pids_max = 32;
    let mut inst = spawn(&ctx.config, spec).await.map_err(|e| e.to_string())?;
    let dirs = inst.cgroup_dirs();
    let pids_dir = dirs
        .iter()
        .find(|d| d.join("pids.max").exists())
        .ok_or("no pids cgroup")?
        .clone();
    // Sample while the bomb runs: the count must never pass the limit, and the limit must
    // have refused forks (pids.events "max N").
    let mut highest = 0u32;
    let until = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < until {
        let current: u32 = read(&pids_dir.join("pids.current")).parse().unwrap_or(0);
        highest = highest.max(current);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let events = read(&pids_dir.join("pids.events"));
    let refused: u64 = line_value(&events.replace(' ', "="), "max")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ensure(highest <= 32, || {
        format!("pids.current reached {highest} > 32")
    })?;
    ensure(refused > 0, || {
        format!("the limit never refused a fork: {events:?}, highest {highest}")
    })?;
    inst.kill();
    let exit = tokio::time::timeout(Duration::from_secs(10), inst.wait())
        .await
        .map_err(|_| "wait() did not resolve after kill()")?;
    ensure(exit.signal == Some(9), || format!("exit {exit:?}"))?;
    for d in &dirs {
        ensure(read(&d.join("cgroup.procs")).is_empty(), || {
            format!("processes left in {}", d.display())
        })?;
    }
    drop(inst);
    wait_gone(&dirs).await
}

async fn kill_leaves_no_survivors(ctx: &Ctx) -> Result<(), String> {
    let spec = ctx.spec(
        "kill-test",
        "sleep 1000 & sleep 1000 & (sleep 1000 &) ; (setsid sleep 1000 &); echo ready; wait",
    );
    let mut inst = spawn(&ctx.config, spec).await.map_err(|e| e.to_string())?;
    let mut out = BufReader::new(inst.take_stdout().unwrap()).lines();
    let first = out.next_line().await.map_err(|e| e.to_string())?;
    ensure(first.as_deref() == Some("ready"), || {
        format!("got {first:?}")
    })?;
    let pids = procs_in(&inst.cgroup_dirs());
    ensure(pids.len() >= 6, || {
        format!("expected helper, init, sh and 4 sleeps: {pids:?}")
    })?;
    inst.kill();
    inst.kill();
    let exit = inst.wait().await;
    ensure(exit.signal == Some(9), || format!("exit {exit:?}"))?;
    // A zombie has ended: the helper's parent, the launcher, reaps it on its own time.
    let alive: Vec<u32> = pids
        .into_iter()
        .filter(|p| ppid_and_state(*p).is_some_and(|(_, st)| !st.starts_with('Z')))
        .collect();
    ensure(alive.is_empty(), || format!("survivors: {alive:?}"))?;
    let dirs = inst.cgroup_dirs();
    drop(inst);
    wait_gone(&dirs).await
}

async fn missing_program_is_a_clear_exec_error(ctx: &Ctx) -> Result<(), String> {
    let mut spec = ctx.spec("exec-test", "true");
    spec.program = ctx.config.task_root(&spec.code_dir).join("bootstrap");
    let err = spawn(&ctx.config, spec.clone())
        .await
        .err()
        .ok_or("spawn succeeded")?;
    let want = format!(
        "fork/exec {}: no such file or directory",
        spec.program.display()
    );
    ensure(err.is_exec_error() && err.to_string() == want, || {
        format!("got {err}")
    })?;

    fs::write(spec.code_dir.join("bootstrap"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        spec.code_dir.join("bootstrap"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = spawn(&ctx.config, spec.clone())
        .await
        .err()
        .ok_or("spawn succeeded")?;
    let want = format!("fork/exec {}: permission denied", spec.program.display());
    ensure(err.is_exec_error() && err.to_string() == want, || {
        format!("got {err}")
    })?;

    // Failed spawns tear down before returning: no cgroups left behind.
    let parent = cgroup_parent_dirs(ctx);
    for p in parent {
        ensure(!p.join("exec-test").exists(), || {
            format!("{} left behind", p.display())
        })?;
    }
    Ok(())
}

async fn peak_memory_is_reported(ctx: &Ctx) -> Result<(), String> {
    let spec = ctx.spec(
        "peak-test",
        "a=$(head -c 30000000 /dev/zero | tr '\\0' x); echo ${#a}; sleep 100",
    );
    let mut inst = spawn(&ctx.config, spec).await.map_err(|e| e.to_string())?;
    let mut out = BufReader::new(inst.take_stdout().unwrap()).lines();
    let first = out.next_line().await.map_err(|e| e.to_string())?;
    ensure(first.as_deref() == Some("30000000"), || {
        format!("got {first:?}")
    })?;
    let peak = inst.peak_memory_bytes().ok_or("no peak")?;
    ensure(peak >= 30_000_000, || format!("peak {peak} < 30 MB"))?;
    inst.reset_peak_memory();
    let after = inst.peak_memory_bytes().ok_or("no peak after reset")?;
    ensure(after <= peak, || {
        format!("peak after reset {after} > {peak}")
    })?;
    ensure(!inst.oom_killed(), || "OOM reported without one".into())?;
    inst.kill();
    inst.wait().await;
    Ok(())
}

async fn dropping_an_instance_kills_it(ctx: &Ctx) -> Result<(), String> {
    let spec = ctx.spec("drop-test", "sleep 1000 & echo ready; wait");
    let mut inst = spawn(&ctx.config, spec).await.map_err(|e| e.to_string())?;
    let mut out = BufReader::new(inst.take_stdout().unwrap()).lines();
    out.next_line().await.map_err(|e| e.to_string())?;
    let dirs = inst.cgroup_dirs();
    let pids = procs_in(&dirs);
    drop(inst);
    wait_gone(&dirs).await?;
    let alive: Vec<&u32> = pids
        .iter()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .collect();
    ensure(alive.is_empty(), || format!("survivors: {alive:?}"))
}

/// The pids in these cgroups' `cgroup.procs` (one entry per directory a process is in).
fn procs_in(dirs: &[PathBuf]) -> Vec<u32> {
    dirs.iter()
        .flat_map(|d| {
            read(&d.join("cgroup.procs"))
                .lines()
                .map(|l| l.parse().expect("a pid in cgroup.procs"))
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `PPid` and `State` of a process, from `/proc/<pid>/status`.
fn ppid_and_state(pid: u32) -> Option<(u32, String)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    Some((field("PPid:")?.parse().ok()?, field("State:")?))
}

/// The children of `parent` that are zombies (ended, not reaped).
fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            ppid_and_state(*pid).is_some_and(|(pp, st)| pp == parent && st.starts_with('Z'))
        })
        .collect()
}

async fn sandboxes_are_forked_by_the_launcher(ctx: &Ctx) -> Result<(), String> {
    let launcher = ctx.config.launcher.as_ref().ok_or("no launcher")?;
    let launcher_pid = launcher.pid().ok_or("the launcher is not running")?;
    let spec = ctx.spec("launched", "echo ready; sleep 1000");
    let mut inst = spawn(&ctx.config, spec).await.map_err(|e| e.to_string())?;
    // One process of ours per instance: ns-init, the launcher's child, whose only child is
    // the program.
    let init = inst.pid().ok_or("no pid")?;
    let (ppid, _) = ppid_and_state(init).ok_or("ns-init is gone")?;
    ensure(ppid == launcher_pid, || {
        format!("ns-init {init} has parent {ppid}, not the launcher {launcher_pid}")
    })?;
    // Same image, no exec: ns-init runs the launcher's executable.
    let exe = |pid: u32| fs::read_link(format!("/proc/{pid}/exe")).ok();
    ensure(exe(init) == exe(launcher_pid), || {
        format!(
            "ns-init exe {:?}, launcher exe {:?}",
            exe(init),
            exe(launcher_pid)
        )
    })?;
    let mut out = BufReader::new(inst.take_stdout().unwrap()).lines();
    let first = out.next_line().await.map_err(|e| e.to_string())?;
    ensure(first.as_deref() == Some("ready"), || {
        format!("stdout: {first:?}")
    })?;
    let in_cgroup = procs_in(&inst.cgroup_dirs()[..1]);
    let ours: Vec<&u32> = in_cgroup
        .iter()
        .filter(|p| exe(**p) == exe(launcher_pid))
        .collect();
    ensure(ours == vec![&init], || {
        format!("nimbus processes in the instance: {ours:?} (all: {in_cgroup:?}), want only {init}")
    })?;
    let dirs = inst.cgroup_dirs();
    inst.kill();
    let exit = inst.wait().await;
    ensure(exit.signal == Some(libc::SIGKILL), || {
        format!("exit: {exit:?}")
    })?;
    drop(inst);
    wait_gone(&dirs).await?;
    // The launcher reaps its helpers: none is left a zombie.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let zombies = zombie_children(launcher_pid);
        if zombies.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the launcher left zombies: {zombies:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn helpers_start_without_a_launcher(ctx: &Ctx) -> Result<(), String> {
    let mut config = ctx.config.clone();
    config.launcher = None;
    let spec = ctx.spec("exec-helper", "echo pid=$$; echo host=$(hostname)");
    let inst = spawn(&config, spec).await.map_err(|e| e.to_string())?;
    let helper = inst.pid().ok_or("no helper pid")?;
    let (ppid, _) = ppid_and_state(helper).ok_or("the helper is gone")?;
    ensure(ppid == std::process::id(), || {
        format!("helper {helper} has parent {ppid}, not this process")
    })?;
    let o = collect(inst).await;
    ensure(line_value(&o.stdout, "pid") == Some("2"), || {
        format!("stdout: {}", o.stdout)
    })?;
    ensure(o.exit.code == Some(0), || format!("exit: {:?}", o.exit))
}

async fn a_dead_launcher_is_replaced(ctx: &Ctx) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let launcher = Launcher::start(&exe, &[LAUNCHER_ARG.to_string()]).map_err(|e| e.to_string())?;
    let first = launcher.pid().ok_or("the launcher is not running")?;
    let mut config = ctx.config.clone();
    config.launcher = Some(launcher.clone());
    // The launcher this test started, killed by its pid.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| e.to_string())?;
    // The first spawn after its death may fall back to executing the helper; either way it
    // works, and a new launcher serves the next ones.
    for round in 0..2 {
        let o = ctx
            .run_with(&config, ctx.spec(&format!("relaunch-{round}"), "echo up"))
            .await?;
        ensure(o.stdout.trim() == "up" && o.exit.code == Some(0), || {
            format!("round {round}: stdout {:?}, exit {:?}", o.stdout, o.exit)
        })?;
    }
    let second = launcher.pid().ok_or("no launcher after the restart")?;
    ensure(second != first, || {
        format!("the launcher is still {first}, which was killed")
    })
}

async fn a_launcher_that_stops_answering_is_replaced(ctx: &Ctx) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let launcher = Launcher::start(&exe, &[LAUNCHER_ARG.to_string()]).map_err(|e| e.to_string())?;
    let first = launcher.pid().ok_or("the launcher is not running")?;
    let mut config = ctx.config.clone();
    config.launcher = Some(launcher.clone());
    // The launcher this test started, stopped by its pid: it takes requests but never answers.
    let pid = nix::unistd::Pid::from_raw(first as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).map_err(|e| e.to_string())?;
    // The start gives up on it after its answer timeout and executes the helper instead...
    let o = ctx
        .run_with(&config, ctx.spec("stopped-launcher", "echo up"))
        .await;
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    let o = o?;
    ensure(o.stdout.trim() == "up" && o.exit.code == Some(0), || {
        format!("stdout {:?}, exit {:?}", o.stdout, o.exit)
    })?;
    // ...and the next start gets a new launcher; the stopped one is gone.
    let o = ctx
        .run_with(&config, ctx.spec("stopped-launcher-2", "echo up"))
        .await?;
    ensure(o.stdout.trim() == "up", || format!("stdout {:?}", o.stdout))?;
    let second = launcher.pid().ok_or("no launcher after the replacement")?;
    ensure(second != first, || format!("the launcher is still {first}"))?;
    ensure(!Path::new(&format!("/proc/{first}")).exists(), || {
        format!("the stopped launcher {first} is still there")
    })
}

async fn direct_env_cwd_and_exec_error(ctx: &Ctx) -> Result<(), String> {
    let mut spec = ctx.spec("direct-env", "tr '\\0' '\\n' < /proc/$$/environ; pwd");
    spec.env = vec![("ONLY".into(), "this".into())];
    let o = ctx.run(spec.clone()).await?;
    let want = format!("ONLY=this\n{}\n", spec.code_dir.display());
    ensure(o.stdout == want, || {
        format!("got {:?} want {want:?}", o.stdout)
    })?;
    ensure(o.exit.code == Some(0), || format!("{:?}", o.exit))?;
    ensure(!ctx.config.tmp_dir("direct-env").exists(), || {
        "per-instance tmp dir left behind".into()
    })?;

    spec.program = spec.code_dir.join("missing");
    let err = spawn(&ctx.config, spec.clone())
        .await
        .err()
        .ok_or("spawn succeeded")?;
    let want = format!(
        "fork/exec {}: no such file or directory",
        spec.program.display()
    );
    ensure(err.to_string() == want, || format!("got {err}"))
}

async fn direct_kill_takes_the_process_group(ctx: &Ctx) -> Result<(), String> {
    let spec = ctx.spec("direct-kill", "sleep 1000 & (sleep 1000 &); echo $$; wait");
    let mut inst = spawn(&ctx.config, spec).await.map_err(|e| e.to_string())?;
    let mut out = BufReader::new(inst.take_stdout().unwrap()).lines();
    let pgid: i32 = out
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .and_then(|l| l.parse().ok())
        .ok_or("no pid")?;
    let members = group_members(pgid);
    ensure(members.len() >= 3, || format!("group {pgid}: {members:?}"))?;
    inst.kill();
    let exit = inst.wait().await;
    ensure(exit.signal == Some(9), || format!("{exit:?}"))?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let left = group_members(pgid);
    ensure(left.is_empty(), || format!("survivors {left:?}"))
}

fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields.get(2).and_then(|p| p.parse::<i32>().ok()) == Some(pgid) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

fn cgroup_parent_dirs(ctx: &Ctx) -> Vec<PathBuf> {
    ["memory", "cpu", "pids", "unified"]
        .iter()
        .map(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join(&ctx.config.cgroup_name)
        })
        .chain([Path::new("/sys/fs/cgroup").join(&ctx.config.cgroup_name)])
        .collect()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default().trim().to_string()
}

async fn wait_gone(dirs: &[PathBuf]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while dirs.iter().any(|d| d.exists()) {
        if Instant::now() > deadline {
            return Err(format!("cgroup dirs not removed: {dirs:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The motivating case for ro_paths: a pyenv interpreter under /root (0700) run as nobody.
async fn interpreter_under_private_home_runs(ctx: &Ctx) -> Result<(), String> {
    let Some(prefix) = fs::read_dir("/root/.pyenv/versions")
        .ok()
        .and_then(|mut d| d.find_map(|e| Some(e.ok()?.path())))
        .filter(|p| p.join("bin/python3").exists())
    else {
        println!("       (no pyenv interpreter under /root: skipped)");
        return Ok(());
    };
    let mut spec = ctx.spec("py-test", "");
    spec.program = prefix.join("bin/python3");
    spec.args = vec![
        "-c".into(),
        "import os, json; print(json.dumps([os.getuid(), os.getcwd()]))".into(),
    ];
    spec.ro_paths = vec![prefix.clone()];
    let o = ctx.run(spec).await?;
    let want = format!("[{UID}, \"/var/task\"]\n");
    ensure(o.stdout == want, || {
        format!("got {:?} {:?} {:?}", o.stdout, o.stderr, o.exit)
    })
}

/// A spare whose prestarted program is `script` (run by /bin/sh, which waits on fd 3).
fn spare_spec(ctx: &Ctx, id: &str, script: &str) -> SpareSpec {
    let runtime = ctx.data().join("runtime-".to_string() + id);
    fs::create_dir_all(&runtime).unwrap();
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(runtime.join("pre.sh"), script).unwrap();
    fs::set_permissions(runtime.join("pre.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    SpareSpec {
        id: id.to_string(),
        code_root: ctx.data().join("code"),
        runtime_dir: Some(runtime),
        ro_paths: vec![],
        mask_paths: vec![ctx.data()],
        memory_mb: 128,
        cpu_weight_mb: 128,
        pids_max: 64,
        tmp_mb: 8,
        uid: UID,
        gid: GID,
        prestart: Some(Program {
            program: "/bin/sh".into(),
            args: vec!["/var/runtime/pre.sh".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        }),
        adoptable: false,
    }
}

fn assignment(code: &str, start: AssignStart) -> Assignment {
    Assignment {
        code: code.to_string(),
        memory_mb: 256,
        cpu_weight_mb: 256,
        pids_max: 64,
        tmp_mb: 32,
        start,
    }
}

async fn spare_handoff_runs_the_prestarted_program(ctx: &Ctx) -> Result<(), String> {
    // The code dir exists before the spare is assigned, as a function's code does.
    ctx.spec("handoff-code", "exit 0");
    // Before the handoff the program sees no code; after it, its function's code and env.
    let script = "echo before=$(ls -A /var/task | wc -l); \
                  cat <&3 >/tmp/handoff; env=$(tr '\\0' '\\n' </tmp/handoff); echo \"$env\"; \
                  echo ends=$(tail -c 3 /tmp/handoff | od -An -tx1 | tr -d ' \\n'); \
                  echo after=$(ls /var/task); echo staging=$(ls -a / | grep -c nimbus-code); \
                  echo tmp=$(df -m /tmp | awk 'NR==2{print $2}'); echo uid=$(id -u); echo cwd=$(pwd)";
    let mut spare = prepare_spare(&ctx.config, spare_spec(ctx, "handoff-test", script))
        .await
        .map_err(|e| e.to_string())?;
    // Wait for the prestarted program's first line, so it looked before the assignment.
    let mut first = Vec::new();
    let out = spare.stdout_mut().ok_or("no stdout")?;
    let mut byte = [0u8; 1];
    while out.read(&mut byte).await.map_err(|e| e.to_string())? == 1 && byte[0] != b'\n' {
        first.push(byte[0]);
    }
    ensure(first == b"before=0", || {
        format!(
            "code visible before the assignment: {}",
            String::from_utf8_lossy(&first)
        )
    })?;
    ensure(spare.uid() == UID, || "uid".into())?;
    let inst = spare
        .assign(assignment(
            "handoff-code",
            AssignStart::Handoff {
                env: vec![("FN".into(), "hello world".into())],
            },
        ))
        .await
        .map_err(|e| e.to_string())?;
    // The function's limits, where they differ from the spare's (memory and CPU: 256 MB
    // against 128) and where they do not (pids: 64 both).
    let limit = |files: &[&str]| {
        inst.cgroup_dirs().iter().find_map(|d| {
            files
                .iter()
                .find_map(|f| fs::read_to_string(d.join(f)).ok())
                .map(|v| v.trim().to_string())
        })
    };
    let memory = limit(&["memory.max", "memory.limit_in_bytes"]);
    ensure(memory.as_deref() == Some("268435456"), || {
        format!("memory limit after the assignment: {memory:?}")
    })?;
    let cpu = limit(&["cpu.weight", "cpu.shares"]);
    ensure(matches!(cpu.as_deref(), Some("14") | Some("148")), || {
        format!("CPU weight after the assignment: {cpu:?}")
    })?;
    let pids = limit(&["pids.max"]);
    ensure(pids.as_deref() == Some("64"), || {
        format!("pids limit after the assignment: {pids:?}")
    })?;
    let o = collect(inst).await;
    ensure(o.exit.code == Some(0), || {
        format!("exit {:?}: {}", o.exit, o.stderr)
    })?;
    ensure(line_value(&o.stdout, "FN") == Some("hello world"), || {
        format!("handoff env missing: {}", o.stdout)
    })?;
    // The environment's closing empty entry, then the byte that says the code is mounted.
    ensure(line_value(&o.stdout, "ends") == Some("000000"), || {
        format!(
            "handoff not ended by an empty entry and the code's byte: {}",
            o.stdout
        )
    })?;
    ensure(line_value(&o.stdout, "after") == Some("run.sh"), || {
        format!("/var/task after the assignment: {}", o.stdout)
    })?;
    ensure(line_value(&o.stdout, "staging") == Some("0"), || {
        format!("staging dir left behind: {}", o.stdout)
    })?;
    ensure(line_value(&o.stdout, "tmp") == Some("32"), || {
        format!("/tmp not resized to the function's: {}", o.stdout)
    })?;
    ensure(
        line_value(&o.stdout, "uid") == Some(&UID.to_string()),
        || format!("uid: {}", o.stdout),
    )
}

async fn spare_exec_replaces_the_prestarted_program(ctx: &Ctx) -> Result<(), String> {
    let spec = ctx.spec(
        "exec-code",
        "echo ran=$(pwd); cat /proc/1/status >/dev/null; ls /proc | grep -c '^[0-9]'",
    );
    let spare = prepare_spare(
        &ctx.config,
        spare_spec(ctx, "exec-test", "cat <&3; echo prestart-ran"),
    )
    .await
    .map_err(|e| e.to_string())?;
    let inst = spare
        .assign(assignment(
            "exec-code",
            AssignStart::Exec(Program {
                program: spec.program.clone(),
                args: vec![],
                env: spec.env.clone(),
            }),
        ))
        .await
        .map_err(|e| e.to_string())?;
    let o = collect(inst).await;
    ensure(o.exit.code == Some(0), || {
        format!("exit {:?}: {}", o.exit, o.stderr)
    })?;
    ensure(line_value(&o.stdout, "ran") == Some("/var/task"), || {
        format!("exec'd program output: {}", o.stdout)
    })?;
    ensure(!o.stdout.contains("prestart-ran"), || {
        format!("the prestarted program was not killed: {}", o.stdout)
    })
}

async fn spare_rejects_bad_code_names(ctx: &Ctx) -> Result<(), String> {
    for bad in ["..", "a/b", ""] {
        let spare = prepare_spare(&ctx.config, spare_spec(ctx, "badcode-test", "cat <&3"))
            .await
            .map_err(|e| e.to_string())?;
        let err = match spare
            .assign(assignment(bad, AssignStart::Handoff { env: vec![] }))
            .await
        {
            Ok(_) => return Err(format!("code name {bad:?} was accepted")),
            // A refused spare is killed and seen gone, so its uid can be used again.
            Err(e) if !e.reaped => return Err(format!("refused spare not reaped: {e}")),
            Err(e) => e.to_string(),
        };
        ensure(err.contains("/var/task"), || {
            format!("error does not name /var/task: {err}")
        })?;
    }
    Ok(())
}

async fn dropped_spare_leaves_nothing(ctx: &Ctx) -> Result<(), String> {
    let mut spare = prepare_spare(
        &ctx.config,
        spare_spec(ctx, "drop-spare", "cat <&3; sleep 100"),
    )
    .await
    .map_err(|e| e.to_string())?;
    ensure(spare.is_alive(), || "spare died".into())?;
    let cg = cgroup_parent_dirs(ctx)
        .into_iter()
        .map(|d| d.join("drop-spare"))
        .filter(|d| d.exists())
        .collect::<Vec<_>>();
    ensure(!cg.is_empty(), || "spare has no cgroup".into())?;
    let _ = tokio::time::timeout(Duration::from_millis(1), spare.wait()).await;
    drop(spare);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cg.iter().any(|d| d.exists()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure(cg.iter().all(|d| !d.exists()), || {
        format!("cgroups left behind: {cg:?}")
    })
}
