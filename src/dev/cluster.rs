//! A private PostgreSQL started from the system's server binaries, for
//! `pgtenant dev` and the test harness.
//!
//! A guardian shell holds a pipe from this process: when the pipe closes —
//! on a clean stop, a crash or a kill — it stops the server and removes the
//! temporary directory. As root the server and the guardian run as `postgres`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// The superuser of the private cluster.
pub const SUPERUSER: &str = "postgres";
/// The port number in the socket file name (the cluster listens on no TCP port).
pub(crate) const SOCKET_PORT: u16 = 5432;

/// A running private PostgreSQL, reachable on a Unix socket.
pub struct Cluster {
    pub base_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// The TCP port, when the cluster also listens on 127.0.0.1.
    pub tcp_port: Option<u16>,
    guardian: Option<Child>,
}

impl Cluster {
    /// Starts a cluster in `data_dir` (kept afterwards, initialised if empty)
    /// or in a fresh temporary directory (removed afterwards).
    pub fn start(data_dir: Option<&Path>) -> anyhow::Result<Cluster> {
        Self::start_with(data_dir, None)
    }

    /// Like [`Cluster::start`], also listening on `127.0.0.1:<port>` with TLS
    /// from `tls` (certificate and key PEM files) when given.
    pub fn start_with(data_dir: Option<&Path>, tcp_tls: Option<TcpTls<'_>>) -> anyhow::Result<Cluster> {
        let bin_dir = find_bin_dir()?;
        let keep = data_dir.is_some();
        let base_dir = match data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                dir.canonicalize()?
            }
            None => {
                let dir = std::env::temp_dir().join(format!("pgtenant-{}", random_suffix()));
                std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                dir
            }
        };
        let data = base_dir.join("data");
        let socket_dir = base_dir.join("socket");
        std::fs::create_dir_all(&socket_dir)?;
        let as_postgres = is_root();
        if as_postgres {
            chown_tree(&base_dir, SUPERUSER)?;
        }

        if !data.join("PG_VERSION").exists() {
            run(
                command(as_postgres, &bin_dir.join("initdb")).arg("-D").arg(&data).args([
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ]),
                "initdb",
            )?;
        }
        let mut options = format!(
            "-c unix_socket_directories='{}' -c port={SOCKET_PORT} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            socket_dir.display()
        );
        let mut tcp_port = None;
        match tcp_tls {
            None => options.push_str(" -c listen_addresses=''"),
            Some(tcp) => {
                // The server wants its key owned by it and private.
                let cert = base_dir.join("server.crt");
                let key = base_dir.join("server.key");
                std::fs::copy(tcp.cert, &cert)?;
                std::fs::copy(tcp.key, &key)?;
                std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                if as_postgres {
                    chown_tree(&base_dir, SUPERUSER)?;
                }
                // One port for TCP and the socket file's name.
                let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
                options = options.replace(&format!("-c port={SOCKET_PORT}"), &format!("-c port={port}"));
                options.push_str(&format!(
                    " -c listen_addresses='127.0.0.1' -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
                    cert.display(),
                    key.display()
                ));
                tcp_port = Some(port);
            }
        }
        let guardian = launch(as_postgres, &bin_dir, &base_dir, &options, keep)?;
        Ok(Cluster { base_dir, socket_dir, bin_dir, tcp_port, guardian: Some(guardian) })
    }

    /// A hot standby of this cluster in a fresh temporary directory
    /// (`pg_basebackup -R`: it streams from this cluster over its Unix
    /// socket), reachable on a Unix socket of its own; removed afterwards.
    pub fn start_replica(&self) -> anyhow::Result<Cluster> {
        let base_dir = std::env::temp_dir().join(format!("pgtenant-replica-{}", random_suffix()));
        let socket_dir = base_dir.join("socket");
        std::fs::create_dir_all(&socket_dir).with_context(|| format!("cannot create {}", socket_dir.display()))?;
        let as_postgres = is_root();
        if as_postgres {
            chown_tree(&base_dir, SUPERUSER)?;
        }
        let copied = run(
            command(as_postgres, &self.bin_dir.join("pg_basebackup"))
                .arg("-D")
                .arg(base_dir.join("data"))
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &self.socket_port().to_string(), "-U", SUPERUSER, "-R", "-X", "stream"])
                .args(["-c", "fast", "--no-sync"]),
            "pg_basebackup",
        );
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&base_dir);
            return Err(e);
        }
        // A standby needs at least the primary's max_connections.
        let options = format!(
            "-c unix_socket_directories='{}' -c port={SOCKET_PORT} -c listen_addresses='' \
             -c fsync=off -c max_connections=300 -c hot_standby=on -c ssl=off",
            socket_dir.display()
        );
        let guardian = match launch(as_postgres, &self.bin_dir, &base_dir, &options, false) {
            Ok(guardian) => guardian,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&base_dir);
                return Err(e);
            }
        };
        Ok(Cluster { base_dir, socket_dir, bin_dir: self.bin_dir.clone(), tcp_port: None, guardian: Some(guardian) })
    }

    /// A `postgres://` URL for `user` on database `db` over the Unix socket.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@{}:{}/{db}", percent_encode(&self.socket_dir.to_string_lossy()), self.socket_port())
    }

    /// The number in the Unix socket's file name.
    pub fn socket_port(&self) -> u16 {
        self.tcp_port.unwrap_or(SOCKET_PORT)
    }

    /// Stops the server and removes a temporary directory; waits until done.
    pub(crate) fn stop(&mut self) {
        if let Some(mut guardian) = self.guardian.take() {
            if let Some(mut stdin) = guardian.stdin.take() {
                let _ = stdin.flush();
            }
            let _ = guardian.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server of `base_dir`/data with `options` and the guardian that
/// stops it (and removes `base_dir` unless `keep`) when its stdin closes.
fn launch(as_postgres: bool, bin_dir: &Path, base_dir: &Path, options: &str, keep: bool) -> anyhow::Result<Child> {
    let data = base_dir.join("data");
    run(
        command(as_postgres, &bin_dir.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(base_dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", options, "start"])
            .process_group(0),
        "pg_ctl start",
    )?;
    // Own process groups keep the server and the guardian out of the reach
    // of a terminal Ctrl-C, so pgtenant stops them in order.
    // The guardian: waits for its stdin to close, then cleans up.
    let script =
        r#"cat >/dev/null; "$1" -D "$2" -m fast -w stop >/dev/null 2>&1; if [ "$3" = remove ]; then rm -rf "$4"; fi"#;
    command(as_postgres, Path::new("/bin/sh"))
        .args(["-c", script, "guardian"])
        .arg(bin_dir.join("pg_ctl"))
        .arg(&data)
        .arg(if keep { "keep" } else { "remove" })
        .arg(base_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the cleanup guardian")
}

fn command(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", SUPERUSER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// TCP with TLS for a cluster: the server certificate and key files.
pub struct TcpTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// `initdb` on PATH, else the newest `/usr/lib/postgresql/*/bin`.
pub(crate) fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // The directory the server's binaries really live in (PATH may
                // hold links to a few of them), with pg_basebackup beside them.
                let real = dir.join("initdb").canonicalize().ok().and_then(|p| p.parent().map(Path::to_path_buf));
                return Ok(real.unwrap_or(dir));
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    match candidates.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server binaries found (initdb on PATH or /usr/lib/postgresql/*/bin); \
             on Debian: apt-get install postgresql"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn chown_tree(path: &Path, user: &str) -> anyhow::Result<()> {
    run(Command::new("chown").arg("-R").arg(user).arg(path), "chown")
}

fn random_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
