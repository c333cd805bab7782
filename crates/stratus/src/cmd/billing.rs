//! `stratus balance|packages|buy|ledger`.

use reqwest::Method;
use serde_json::{json, Value};
use stratus_client::Authed;

#[derive(clap::Args, Debug)]
pub struct PackagesArgs {
    #[arg(long, default_value = "mefs", value_parser = ["mefs", "ipfs"])]
    target: String,
}

#[derive(clap::Args, Debug)]
pub struct BuyArgs {
    /// The package id (see `stratus packages`).
    pkgid: u64,
    /// How many of the package.
    #[arg(long, default_value_t = 1)]
    amount: u64,
    #[arg(long, default_value = "mefs", value_parser = ["mefs", "ipfs"])]
    target: String,
}

#[derive(clap::Args, Debug)]
pub struct LedgerArgs {
    #[arg(long, default_value_t = 1)]
    page: u32,
    #[arg(long, default_value_t = 20)]
    size: u32,
}

pub async fn balance() -> anyhow::Result<()> {
    let mut s = Authed::load()?;
    let v: Value = s
        .json(|c| c.request(Method::GET, "/api/v1/balance"))
        .await?;
    let d = &v["data"];
    println!(
        "{} (smallest unit of {}, {} decimals)",
        d["balance"].as_str().unwrap_or("?"),
        d["asset"].as_str().unwrap_or("?"),
        d["decimals"]
    );
    Ok(())
}

pub async fn packages(a: PackagesArgs) -> anyhow::Result<()> {
    let mut s = Authed::load()?;
    let url = format!("/{}/pkginfos", a.target);
    let v: Value = s.json(|c| c.request(Method::GET, &url)).await?;
    for p in v.as_array().into_iter().flatten() {
        println!(
            "{:>4}  {:<28} {:>16} bytes  {:>4} days  price {}",
            p["Pkgid"],
            p["Name"].as_str().unwrap_or(""),
            p["Buysize"],
            p["Days"],
            p["Amount"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

pub async fn buy(a: BuyArgs) -> anyhow::Result<()> {
    let mut s = Authed::load()?;
    let url = format!("/{}/buypkg", a.target);
    let body = json!({"pkgid": a.pkgid, "amount": a.amount});
    let v: Value = s
        .json(|c| c.request(Method::POST, &url).json(&body))
        .await?;
    println!(
        "bought {} × package {}: {} bytes until {} (paid {}, balance {})",
        v["Count"],
        v["Pkgid"],
        v["Buysize"],
        v["Endtime"],
        v["Amount"].as_str().unwrap_or(""),
        v["Balance"].as_str().unwrap_or("")
    );
    Ok(())
}

pub async fn ledger(a: LedgerArgs) -> anyhow::Result<()> {
    let mut s = Authed::load()?;
    let url = format!("/api/v1/ledger?page={}&size={}", a.page, a.size);
    let v: Value = s.json(|c| c.request(Method::GET, &url)).await?;
    for e in v["data"]["list"].as_array().into_iter().flatten() {
        println!(
            "{:>6}  {:<6} {:>24}  balance {:>24}  {:<9} {}",
            e["id"],
            e["kind"].as_str().unwrap_or(""),
            e["amount"].as_str().unwrap_or(""),
            e["balanceAfter"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or(""),
            e["memo"].as_str().unwrap_or("")
        );
    }
    eprintln!("{} entries in all", v["data"]["total"]);
    Ok(())
}
