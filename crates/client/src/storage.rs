//! Storage commands: upload, download (verified), list, delete, offline CID.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;
use stratus_unixfs::{Importer, Profile};
use tokio::io::AsyncWriteExt;

use crate::{Authed, ClientError, Result};

/// Called with the number of bytes moved so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

impl Authed {
    /// Uploads `path` to `target`; returns the CID.
    pub async fn put(
        &mut self,
        path: &Path,
        target: &str,
        profile: Option<&str>,
        progress: Progress,
    ) -> Result<String> {
        let meta = tokio::fs::metadata(path).await?;
        if !meta.is_file() {
            return Err(ClientError::Usage(format!(
                "{} is not a file",
                path.display()
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let mut url = format!("/{target}/");
        if let Some(p) = profile {
            url.push_str(&format!("?profile={p}"));
        }
        let path = path.to_path_buf();
        let len = meta.len();
        let build = move |c: &crate::Client| {
            let progress = progress.clone();
            let path = path.clone();
            let name = name.clone();
            // The file is opened for each attempt (a refreshed token retries the upload).
            let stream = futures::stream::once(async move { tokio::fs::File::open(path).await })
                .map(|r| match r {
                    Ok(f) => tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                })
                .flatten()
                .scan(0u64, move |sent, chunk| {
                    if let Ok(b) = &chunk {
                        *sent += b.len() as u64;
                        progress(*sent);
                    }
                    futures::future::ready(Some(chunk))
                });
            let part = reqwest::multipart::Part::stream_with_length(
                reqwest::Body::wrap_stream(stream),
                len,
            )
            .file_name(name);
            c.request(Method::POST, &url)
                .multipart(reqwest::multipart::Form::new().part("file", part))
        };
        let v: Value = self.json(build).await?;
        v["cid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol(format!("no cid in {v}")))
    }

    /// Downloads `cid` from `target` into `out` (written beside it, renamed when complete), then
    /// checks that the bytes hash to `cid` under one of the known profiles. Returns the bytes
    /// written and the profile that verified them (None: could not be verified).
    pub async fn get(
        &mut self,
        cid: &str,
        target: &str,
        out: &Path,
        progress: Progress,
        total: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(u64, Option<&'static str>)> {
        let url = format!("/{target}/{cid}");
        let resp = self.send(|c| c.request(Method::GET, &url)).await?;
        if let Some(n) = resp.content_length() {
            total(n);
        }
        let tmp = partial_path(out);
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut stream = resp.bytes_stream();
        let mut got = 0u64;
        let result: Result<()> = async {
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| ClientError::Protocol(format!("download cut off: {e}")))?;
                file.write_all(&chunk).await?;
                got += chunk.len() as u64;
                progress(got);
            }
            file.flush().await?;
            file.sync_all().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let verified = verify(&tmp, cid).await?;
        if verified.is_none() && cid_parses(cid) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ClientError::Protocol(format!(
                "the downloaded bytes do not hash to {cid} under any known profile"
            )));
        }
        tokio::fs::rename(&tmp, out).await?;
        Ok((got, verified))
    }

    /// Lists the caller's objects in `target`.
    pub async fn ls(&mut self, target: &str) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let url = match &after {
                None => format!("/{target}/listobjects?limit=1000"),
                Some(a) => format!("/{target}/listobjects?limit=1000&after={a}"),
            };
            let v: Value = self.json(|c| c.request(Method::GET, &url)).await?;
            if let Some(objs) = v["Object"].as_array() {
                all.extend(objs.iter().cloned());
            }
            match v["NextAfter"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => return Ok(all),
            }
        }
    }

    /// Deletes the caller's object.
    pub async fn rm(&mut self, cid: &str, target: &str) -> Result<()> {
        let url = format!("/{target}/{cid}");
        self.send(|c| c.request(Method::DELETE, &url)).await?;
        Ok(())
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

fn cid_parses(cid: &str) -> bool {
    cid.parse::<stratus_unixfs::Cid>().is_ok()
}

/// The first profile under which `path` hashes to `cid`.
async fn verify(path: &Path, cid: &str) -> Result<Option<&'static str>> {
    let want: stratus_unixfs::Cid = match cid.parse() {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        for p in Profile::ALL {
            let f = std::fs::File::open(&path)?;
            let got =
                stratus_unixfs::import_reader(p, std::io::BufReader::with_capacity(1 << 20, f))?;
            if got.root == want || got.root.to_v1() == want.to_v1() {
                return Ok(Some(p.name));
            }
        }
        Ok(None)
    })
    .await
    .map_err(|e| ClientError::Protocol(e.to_string()))?
}

/// Computes the CID of a file offline, calling `progress` as it reads.
pub fn cid_of_file(path: &Path, profile: Profile, progress: Progress) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut imp = Importer::without_events(profile);
    let mut read = 0u64;
    loop {
        // The importer reads straight into its chunk buffers.
        let n = imp.read_from(&mut f)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        progress(read);
    }
    let done = imp.finish();
    Ok((done.root.to_string(), done.size))
}
