//! Roles of `segue lab` run as child processes (`segue origin`, `segue edge`), each with
//! its own config file, log and metrics registry, so a scenario can kill one POP (or the
//! origin) with SIGKILL and the rest of the fleet sees a real outage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Failure;

/// How long a child may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running role.
pub struct Child {
    pub addr: SocketAddr,
    pub pid: u32,
    process: tokio::process::Child,
}

/// Write `config` to `config_path` (0600: it holds tokens) and start `segue ROLE --config
/// FILE`; its log goes to `log_path`. Returns once it listens.
pub async fn spawn(
    name: &str,
    role: &str,
    config: &toml::Table,
    config_path: &Path,
    log_path: &Path,
) -> Result<Child, Failure> {
    let fail = |what: String| Failure::Runtime(format!("{name}: {what}"));
    let text = toml::to_string(config).map_err(|e| fail(format!("config: {e}")))?;
    segue_core::fsutil::write_atomic(config_path, text.as_bytes(), 0o600)
        .map_err(|e| fail(format!("{}: {e}", config_path.display())))?;
    // The path as at the first start: after a rebuild, /proc/self/exe names a deleted file.
    static EXE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let exe = EXE
        .get_or_init(|| std::env::current_exe().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| fail(format!("cannot find this program: {e}")))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| fail(format!("{}: {e}", log_path.display())))?;
    let mut process = tokio::process::Command::new(exe)
        .arg(role)
        .arg("--config")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let pid = process.id().ok_or_else(|| fail("exited at once".into()))?;
    let stdout = process.stdout.take().ok_or_else(|| fail("no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let first = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.strip_prefix("listening on ").and_then(|a| a.parse::<SocketAddr>().ok()) {
                return Some(addr);
            }
        }
        None
    };
    let addr = match tokio::time::timeout(START_TIMEOUT, first).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(fail(format!("exited before listening; see {}", log_path.display()))),
        Err(_) => return Err(fail(format!("not listening after {START_TIMEOUT:?}; see {}", log_path.display()))),
    };
    // Keep reading so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Child { addr, pid, process })
}

impl Child {
    /// SIGTERM, then wait for it to drain and exit (SIGKILL after `grace`). A child
    /// already gone (a scenario killed it) is fine.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.process.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(grace, self.process.wait()).await.is_err() {
            let _ = self.process.kill().await;
        }
    }
}

/// Where a child keeps its config, log and pid.
pub struct Files {
    pub config: PathBuf,
    pub log: PathBuf,
    pub pid: PathBuf,
}

pub fn files(dir: &Path, role: &str) -> Files {
    Files {
        config: dir.join(format!("{role}.toml")),
        log: dir.join(format!("{role}.log")),
        pid: dir.join(format!("{role}.pid")),
    }
}

/// A child the lab restarts when it dies (as systemd's `Restart=on-failure` would), on
/// the address it had, after `restart_after`; `None`: a dead child stays dead.
pub struct Supervised {
    pub name: String,
    pub addr: SocketAddr,
    /// Holds the child's pid now (a restart changes it).
    pub pid_file: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn write_pid(path: &Path, pid: u32) {
    if let Err(e) = segue_core::fsutil::write_atomic(path, format!("{pid}\n").as_bytes(), 0o644) {
        eprintln!("segue lab: {}: {e}", path.display());
    }
}

pub async fn supervise(
    name: &str,
    role: &'static str,
    mut config: toml::Table,
    files: Files,
    restart_after: Option<Duration>,
) -> Result<Supervised, Failure> {
    let mut child = spawn(name, role, &config, &files.config, &files.log).await?;
    let addr = child.addr;
    write_pid(&files.pid, child.pid);
    // A restart binds the port it had: everything that knows the address keeps working.
    config.insert("listen".into(), toml::Value::String(addr.to_string()));
    let (stop, mut stopping) = tokio::sync::watch::channel(false);
    let label = name.to_owned();
    let pid_file = files.pid.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                status = child.process.wait() => {
                    let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    let Some(after) = restart_after else {
                        eprintln!("segue lab: {label} exited ({how}); not restarting");
                        let _ = stopping.changed().await;
                        return;
                    };
                    eprintln!("segue lab: {label} exited ({how}); restarting in {after:?}");
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(after) => {}
                            _ = stopping.changed() => return,
                        }
                        match spawn(&label, role, &config, &files.config, &files.log).await {
                            Ok(c) => {
                                eprintln!("segue lab: {label} is back on {} (pid {})", c.addr, c.pid);
                                write_pid(&files.pid, c.pid);
                                child = c;
                                break;
                            }
                            Err(Failure::Usage(e) | Failure::Runtime(e)) => eprintln!("segue lab: {e}"),
                        }
                    }
                }
                _ = stopping.changed() => {
                    child.stop(Duration::from_secs(30)).await;
                    return;
                }
            }
        }
    });
    Ok(Supervised { name: name.to_owned(), addr, pid_file, stop, task })
}

impl Supervised {
    /// Stop the child (SIGTERM, then SIGKILL after 30 s) and stop restarting it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
