//! A process's life: spawned as `sampleapp run --spec FILE`, ready when
//! it reports its address, watched, and restarted after a crash (not
//! after a stop on purpose) at the address it first bound.

use super::*;

impl Supervisor {
    /// Spawn a process, wait for its readiness line, start its monitor.
    /// Boxed because the monitor calls it again to restart (a recursive
    /// future must have a known, `Send` type).
    pub(super) fn launch(
        &self,
        spec: ProcessSpec,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<SocketAddr>> + Send + '_>>
    {
        Box::pin(self.launch_now(spec))
    }

    pub(super) async fn launch_now(&self, spec: ProcessSpec) -> anyhow::Result<SocketAddr> {
        let (child, stdin, addr) = self.spawn(&spec).await?;
        let (tx, rx) = watch::channel(false);
        let generation = {
            let mut procs = lock(&self.s.procs);
            let entry = procs.entry(spec.name.clone()).or_insert_with(|| Proc {
                info: ProcInfo {
                    name: spec.name.clone(),
                    tier: spec.tier.tier().to_owned(),
                    addr,
                    pid: None,
                    state: ProcState::Running,
                    restarts: 0,
                    log_file: spec.log_file.clone(),
                },
                generation: 0,
                wanted: true,
                exited: rx.clone(),
            });
            entry.generation += 1;
            entry.wanted = true;
            entry.exited = rx;
            entry.info.addr = addr;
            entry.info.pid = child.id();
            entry.info.state = ProcState::Running;
            entry.generation
        };
        self.write_targets();
        tokio::spawn(
            self.clone()
                .monitor(spec.name.clone(), generation, child, stdin, tx),
        );
        tracing::info!(name = %spec.name, %addr, "process started");
        Ok(addr)
    }

    pub(super) async fn spawn(
        &self,
        spec: &ProcessSpec,
    ) -> anyhow::Result<(Child, ChildStdin, SocketAddr)> {
        let dir = self.s.config.data_dir.join("run");
        let spec_path = dir.join(format!("{}.json", spec.name));
        std::fs::write(&spec_path, serde_json::to_vec_pretty(spec)?)
            .with_context(|| format!("writing {}", spec_path.display()))?;
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(
            self.s
                .config
                .data_dir
                .join("logs")
                .join(format!("{}.stderr", spec.name)),
        )?;
        let mut child = Command::new(&self.s.exe)
            .args(["sampleapp", "run", "--spec"])
            .arg(&spec_path)
            .env(SUPERVISED_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.name, self.s.exe.display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(self.s.config.supervisor.start_timeout, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix(READY_PREFIX) {
                    return Ok::<_, std::io::Error>(Some(a.trim().to_owned()));
                }
            }
            Ok(None)
        })
        .await;
        let addr = match ready {
            Ok(Ok(Some(a))) => a
                .parse::<SocketAddr>()
                .with_context(|| format!("{}: bad address {a:?}", spec.name))?,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                bail!(
                    "{} exited before it was ready ({}); see {}",
                    spec.name,
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    self.s
                        .config
                        .data_dir
                        .join("logs")
                        .join(format!("{}.stderr", spec.name))
                        .display()
                );
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "{} did not report ready within {:?}",
                    spec.name,
                    self.s.config.supervisor.start_timeout
                );
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((child, stdin, addr))
    }

    /// Wait for a child to exit; restart it if it crashed and is wanted.
    pub(super) async fn monitor(
        self,
        name: String,
        generation: u64,
        mut child: Child,
        stdin: ChildStdin,
        exited: watch::Sender<bool>,
    ) {
        let status = child.wait().await;
        drop(stdin);
        let _ = exited.send(true);
        let restart = {
            let mut procs = lock(&self.s.procs);
            let Some(p) = procs.get_mut(&name) else {
                return;
            };
            if p.generation != generation {
                return;
            }
            p.info.pid = None;
            if p.wanted && !self.s.shutting_down.load(Ordering::Relaxed) {
                p.info.state = ProcState::Crashed;
                tracing::warn!(%name, status = ?status.ok(), "process exited unexpectedly; restarting");
                Some(p.info.clone())
            } else {
                p.info.state = ProcState::Stopped;
                None
            }
        };
        let Some(info) = restart else { return };
        tokio::time::sleep(self.s.config.supervisor.restart_backoff).await;
        // Stopped, or restarted by someone else, while we waited?
        {
            let procs = lock(&self.s.procs);
            match procs.get(&name) {
                Some(p)
                    if p.generation == generation
                        && p.wanted
                        && p.info.state == ProcState::Crashed => {}
                _ => return,
            }
        }
        if self.s.shutting_down.load(Ordering::Relaxed) {
            return;
        }
        let result = match self.respec(&info) {
            Ok(spec) => self.launch(spec).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                if let Some(p) = lock(&self.s.procs).get_mut(&name) {
                    p.info.restarts += 1;
                }
            }
            Err(e) => tracing::error!(%name, error = %e, "restart failed"),
        }
    }
}
