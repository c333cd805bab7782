//! `stratus sandbox create|ls|show|start|stop|rm|wait`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};
use stratus_client::Authed;

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Create a machine running a compose file, with public ports; prints where each port is.
    Create {
        /// The docker-compose file.
        #[arg(short = 'f', long = "file", default_value = "docker-compose.yml")]
        file: PathBuf,
        /// Spec id (see the catalog: 1 = 2 cores / 4 GiB, 2 = 4 cores / 8 GiB by default).
        #[arg(long, default_value_t = 1)]
        spec: i64,
        /// Image id from the catalog.
        #[arg(long, default_value_t = 1)]
        image: i64,
        /// Months (30 days each) to rent it for; charged at once.
        #[arg(long, default_value_t = 1)]
        duration: i64,
        /// Instance name [default: the compose file's directory name].
        #[arg(long)]
        name: Option<String>,
        /// Public port mappings as NAME=PORT (PORT: a port the compose file publishes).
        #[arg(long = "map", value_name = "NAME=PORT")]
        maps: Vec<String>,
        /// SSH public key file (for runtimes that offer SSH).
        #[arg(long)]
        public_key_file: Option<PathBuf>,
    },
    /// List your instances.
    Ls,
    /// Show one instance and its public ports.
    Show { id: String },
    /// Start a stopped instance.
    Start { id: String },
    /// Stop a running instance.
    Stop { id: String },
    /// Restart an instance.
    Restart { id: String },
    /// Delete an instance (its ports are freed).
    Rm { id: String },
    /// Wait until an instance reaches a status (1 running, 4 closed, 7 deleted…).
    Wait {
        id: String,
        #[arg(long, default_value_t = 1)]
        status: i64,
        /// Seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

const STATUS: [&str; 11] = [
    "creating",
    "running",
    "starting",
    "closing",
    "closed",
    "restarting",
    "deleting",
    "deleted",
    "expired",
    "recreating",
    "failed",
];

fn status_name(v: &Value) -> &'static str {
    v.as_i64()
        .and_then(|i| STATUS.get(i as usize).copied())
        .unwrap_or("?")
}

fn print_instance(i: &Value) {
    println!(
        "instance {}  {}",
        i["id"].as_str().unwrap_or(""),
        i["name"].as_str().unwrap_or("")
    );
    println!(
        "  status:   {} ({})",
        status_name(&i["status"]),
        i["status"]
    );
    if let Some(r) = i["statusReason"].as_str().filter(|r| !r.is_empty()) {
        println!("  reason:   {r}");
    }
    println!(
        "  spec:     {} cores, {} GiB; image {}",
        i["core"],
        i["memory"],
        i["imageName"].as_str().unwrap_or("")
    );
    for m in i["networkMappings"].as_array().into_iter().flatten() {
        println!(
            "  port {:>5} ({}) -> {}:{}",
            m["computerPort"],
            m["name"].as_str().unwrap_or(""),
            m["serverIp"].as_str().unwrap_or(""),
            m["serverPort"]
        );
    }
}

pub async fn run(command: SandboxCommand) -> anyhow::Result<()> {
    let mut s = Authed::load()?;
    match command {
        SandboxCommand::Create {
            file,
            spec,
            image,
            duration,
            name,
            maps,
            public_key_file,
        } => {
            let yaml =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let name = name.unwrap_or_else(|| {
                std::fs::canonicalize(&file)
                    .ok()
                    .and_then(|p| {
                        p.parent()
                            .and_then(|d| d.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                    })
                    .unwrap_or_else(|| "sandbox".into())
            });
            let mut mappings = Vec::new();
            for m in &maps {
                let (n, p) = m
                    .split_once('=')
                    .with_context(|| format!("--map {m}: use NAME=PORT"))?;
                let port: u16 = p
                    .parse()
                    .with_context(|| format!("--map {m}: PORT must be a number"))?;
                mappings.push(json!({"name": n, "protocol": "TCP", "computerPort": port}));
            }
            let public_key = match public_key_file {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let body = json!({
                "instance": {
                    "specId": spec, "imageId": image, "duration": duration, "name": name,
                    "publicKey": public_key,
                    "dockerCompose": base64::engine::general_purpose::STANDARD.encode(yaml),
                },
                "networkMapping": mappings,
            });
            let v: Value = s
                .json(|c| c.request(Method::POST, "/api/v1/sandbox").json(&body))
                .await?;
            let d = &v["data"];
            println!(
                "instance {} created; it boots in the background",
                d["instanceId"].as_str().unwrap_or("")
            );
            for m in d["networkMappings"].as_array().into_iter().flatten() {
                println!(
                    "  {} (port {}) is reachable at {}:{}",
                    m["name"].as_str().unwrap_or(""),
                    m["computerPort"],
                    m["serverIp"].as_str().unwrap_or(""),
                    m["serverPort"]
                );
            }
        }
        SandboxCommand::Ls => {
            let v: Value = s
                .json(|c| c.request(Method::GET, "/api/v1/instance"))
                .await?;
            let list = v["data"].as_array().cloned().unwrap_or_default();
            for i in &list {
                let ports: Vec<String> = i["networkMappings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        format!(
                            "{}->{}:{}",
                            m["computerPort"],
                            m["serverIp"].as_str().unwrap_or(""),
                            m["serverPort"]
                        )
                    })
                    .collect();
                println!(
                    "{}  {:<10} {:<20} {}",
                    i["id"].as_str().unwrap_or(""),
                    status_name(&i["status"]),
                    i["name"].as_str().unwrap_or(""),
                    ports.join(" ")
                );
            }
            if list.is_empty() {
                eprintln!("no instances");
            }
        }
        SandboxCommand::Show { id } => {
            let url = format!("/api/v1/instance/{id}");
            let v: Value = s.json(|c| c.request(Method::GET, &url)).await?;
            print_instance(&v["data"]);
        }
        SandboxCommand::Start { id } => action(&mut s, &id, "start").await?,
        SandboxCommand::Stop { id } => action(&mut s, &id, "stop").await?,
        SandboxCommand::Restart { id } => action(&mut s, &id, "restart").await?,
        SandboxCommand::Rm { id } => {
            let url = format!("/api/v1/instance/{id}");
            s.send(|c| c.request(Method::DELETE, &url)).await?;
            eprintln!("deleting {id}");
        }
        SandboxCommand::Wait {
            id,
            status,
            timeout,
        } => {
            let url = format!("/api/v1/instance/{id}/wait?status={status}&timeout={timeout}");
            match s.json::<Value>(|c| c.request(Method::GET, &url)).await {
                Ok(v) => print_instance(&v["data"]),
                Err(e) => bail!("{e}"),
            }
        }
    }
    Ok(())
}

async fn action(s: &mut Authed, id: &str, what: &str) -> anyhow::Result<()> {
    let url = format!("/api/v1/instance/{id}/{what}");
    s.send(|c| c.request(Method::PUT, &url).json(&json!({})))
        .await?;
    eprintln!("{what} requested for {id}");
    Ok(())
}
