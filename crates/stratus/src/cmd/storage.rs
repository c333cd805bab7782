//! `stratus put|get|ls|rm|cid`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use stratus_client::storage::{cid_of_file, Progress};
use stratus_client::Authed;
use stratus_unixfs::Profile;

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// The file to upload.
    file: PathBuf,
    /// Storage target.
    #[arg(long, default_value = "mefs", value_parser = ["mefs", "ipfs"])]
    target: String,
    /// Import profile (memo, kubo, kubo-v0, unixfs-v1-2025); the target's default otherwise.
    #[arg(long)]
    profile: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The CID to download.
    cid: String,
    /// Where to write the file [default: the CID, in the current directory].
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    #[arg(long, default_value = "mefs", value_parser = ["mefs", "ipfs"])]
    target: String,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    #[arg(long, default_value = "mefs", value_parser = ["mefs", "ipfs"])]
    target: String,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    cid: String,
    #[arg(long, default_value = "mefs", value_parser = ["mefs", "ipfs"])]
    target: String,
}

#[derive(clap::Args, Debug)]
pub struct CidArgs {
    file: PathBuf,
    /// Import profile: memo (253,952-byte chunks, the server's default), kubo (what
    /// `ipfs add --cid-version=1` gives), kubo-v0 (plain `ipfs add`), unixfs-v1-2025.
    #[arg(long, default_value = "memo")]
    profile: String,
}

fn bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

fn progress_of(pb: &ProgressBar) -> Progress {
    let pb = pb.clone();
    Arc::new(move |n| pb.set_position(n))
}

pub async fn put(a: PutArgs) -> anyhow::Result<()> {
    let len = std::fs::metadata(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?
        .len();
    let mut s = Authed::load()?;
    let pb = bar(len);
    let cid = s
        .put(&a.file, &a.target, a.profile.as_deref(), progress_of(&pb))
        .await;
    pb.finish_and_clear();
    let cid = cid?;
    println!("{cid}");
    Ok(())
}

pub async fn get(a: GetArgs) -> anyhow::Result<()> {
    let out = a.output.clone().unwrap_or_else(|| PathBuf::from(&a.cid));
    let mut s = Authed::load()?;
    let pb = bar(0);
    let pb2 = pb.clone();
    let result = s
        .get(&a.cid, &a.target, &out, progress_of(&pb), &move |n| {
            pb2.set_length(n)
        })
        .await;
    pb.finish_and_clear();
    let (n, verified) = result?;
    match verified {
        Some(p) => eprintln!(
            "{n} bytes written to {} (verified, profile {p})",
            out.display()
        ),
        None => eprintln!("{n} bytes written to {} (not verified)", out.display()),
    }
    Ok(())
}

pub async fn ls(a: LsArgs) -> anyhow::Result<()> {
    let mut s = Authed::load()?;
    let objs = s.ls(&a.target).await?;
    for o in &objs {
        println!(
            "{}  {:>12}  {}  {}",
            o["Cid"].as_str().unwrap_or(""),
            o["Size"].as_u64().unwrap_or(0),
            o["ModTime"].as_str().unwrap_or(""),
            o["Name"].as_str().unwrap_or("")
        );
    }
    if objs.is_empty() {
        eprintln!("no files in {}", a.target);
    }
    Ok(())
}

pub async fn rm(a: RmArgs) -> anyhow::Result<()> {
    let mut s = Authed::load()?;
    s.rm(&a.cid, &a.target).await?;
    eprintln!("deleted {}", a.cid);
    Ok(())
}

pub fn cid(a: CidArgs) -> anyhow::Result<()> {
    let Some(profile) = Profile::by_name(&a.profile) else {
        bail!(
            "unknown profile {}; use memo, kubo, kubo-v0 or unixfs-v1-2025",
            a.profile
        );
    };
    let len = std::fs::metadata(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?
        .len();
    let pb = bar(len);
    let (cid, _) = cid_of_file(&a.file, profile, progress_of(&pb))?;
    pb.finish_and_clear();
    println!("{cid}");
    Ok(())
}
