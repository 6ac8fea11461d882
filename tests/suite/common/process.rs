//! The real binary as an operator runs it: temp files, a child process whose output goes to
//! files (a chatty log never blocks it), and `entragate serve` on fixed loopback ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use entragate::dev::{DevIssuer, EchoUpstream};

use super::{API_CLIENT_ID, AUDIENCE, TENANT, loopback};

pub const BIN: &str = env!("CARGO_BIN_EXE_entragate");

/// A unique path under the temp dir, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn path(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self(std::env::temp_dir().join(format!(
            "entragate-process-test-{}-{}-{nanos}-{tag}",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        )))
    }

    pub fn with(tag: &str, contents: &str) -> Self {
        let f = Self::path(tag);
        f.write(contents);
        f
    }

    /// Replaces the contents at once (write a sibling, then rename), as a config tool would.
    pub fn write(&self, contents: &str) {
        let tmp = self.0.with_extension("new");
        std::fs::write(&tmp, contents).expect("write temp file");
        std::fs::rename(&tmp, &self.0).expect("rename temp file");
    }

    pub fn read(&self) -> String {
        std::fs::read(&self.0)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A child `entragate` process, killed when dropped (a failing test leaves nothing behind).
pub struct Proc {
    child: Child,
    stdout: TempFile,
    stderr: TempFile,
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_with_stdin(args, env, None)
    }

    /// Like [`Proc::spawn`], with `stdin` as standard input.
    pub fn spawn_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Self {
        Self::spawn_under(&[], args, env, stdin)
    }

    /// Like [`Proc::spawn_with_stdin`], started by `wrapper` (a command that runs the rest of
    /// its arguments, e.g. `prlimit --nofile=256 --`).
    pub fn spawn_under(
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Self {
        let stdout = TempFile::path("stdout");
        let stderr = TempFile::path("stderr");
        let input = stdin.map(|text| TempFile::with("stdin", text));
        let mut cmd = match wrapper {
            [] => Command::new(BIN),
            [program, rest @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(BIN);
                cmd
            }
        };
        cmd.args(args)
            .current_dir(std::env::temp_dir())
            .stdin(match &input {
                Some(f) => Stdio::from(std::fs::File::open(&f.0).expect("stdin file")),
                None => Stdio::null(),
            })
            .stdout(std::fs::File::create(&stdout.0).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr.0).expect("stderr file"));
        // Only what the test says: nothing inherited from the developer's shell.
        for (name, _) in std::env::vars() {
            if name.starts_with("ENTRAGATE_") || name == "RUST_LOG" {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("spawn entragate");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Runs to the end (at most 60 s): exit code, stdout, stderr.
    pub async fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut p = Self::spawn_with_stdin(args, env, stdin);
        let status = p
            .wait_exit(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("entragate {args:?} still running after 60s"));
        Output {
            code: status.code(),
            stdout: p.stdout(),
            stderr: p.stderr(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM", "HUP") with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// The exit status once the process ends, or `None` if it still runs after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.read()
    }

    pub fn stderr(&self) -> String {
        self.stderr.read()
    }

    /// Waits (at most 10 s) until stderr holds `text`; returns stderr.
    pub async fn wait_for_stderr(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let err = self.stderr();
            if err.contains(text) {
                return err;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in stderr within 10s:\n{err}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Ports that were free a moment ago (bound together, so they differ, then released).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind(loopback()).expect("bind"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("addr").port())
}

/// The config the tests' `serve` runs with.
pub fn config_text(
    addr: SocketAddr,
    admin: SocketAddr,
    issuer: &DevIssuer,
    upstream: &str,
    server_extra: &str,
    entra_extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = "{addr}"
admin_listen = "{admin}"
{server_extra}

[upstream]
url = "{upstream}"

[entra]
tenant_id = "{TENANT}"
authority = "{authority}"
audiences = ["{AUDIENCE}", "{API_CLIENT_ID}"]
{entra_extra}
"#,
        authority = issuer.authority(),
    )
}

/// `entragate serve` on fixed loopback ports, ready (keys loaded).
pub struct Gateway {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: TempFile,
}

impl Gateway {
    pub async fn start(
        issuer: &DevIssuer,
        upstream: &str,
        server_extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with(issuer, upstream, server_extra, "", env, &[]).await
    }

    /// With extra `[entra]` lines and extra `serve` arguments.
    pub async fn start_with(
        issuer: &DevIssuer,
        upstream: &str,
        server_extra: &str,
        entra_extra: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let [port, admin_port] = free_ports::<2>();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let text = config_text(addr, admin, issuer, upstream, server_extra, entra_extra);
        let config = TempFile::with("config.toml", &text);
        let mut all = vec!["serve", "--config", config.as_str()];
        all.extend_from_slice(args);
        let mut proc = Proc::spawn(&all, env);

        let client = super::client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = proc.exited() {
                panic!(
                    "entragate exited early with {status}\nstderr:\n{}",
                    proc.stderr()
                );
            }
            if let Ok(r) = client.get(format!("http://{admin}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not ready within 20s\nstderr:\n{}",
                proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            proc,
            addr,
            admin,
            config,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then the exit status (which must come within `within`).
    pub async fn stop(&mut self, within: Duration) -> ExitStatus {
        self.proc.sigterm();
        match self.proc.wait_exit(within).await {
            Some(status) => status,
            None => panic!(
                "still running {within:?} after SIGTERM\nstderr:\n{}",
                self.proc.stderr()
            ),
        }
    }
}

pub async fn start_upstreams() -> (DevIssuer, EchoUpstream) {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let echo = EchoUpstream::start(loopback()).await.expect("echo");
    (issuer, echo)
}
