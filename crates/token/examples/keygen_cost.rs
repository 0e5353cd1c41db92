//! Cost of one managed-identity credential: `keygen_cost rsa|ec N` makes N
//! self-signed certificates. Run it under `valgrind --tool=callgrind` (instruction
//! counts do not depend on machine load) to compare the two key kinds
//! (docs/performance.md).

use std::time::{Duration, UNIX_EPOCH};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "ec".into());
    let n: u32 = args.next().as_deref().unwrap_or("1").parse()?;
    let nb = UNIX_EPOCH + Duration::from_secs(1_767_139_199);
    let na = nb + Duration::from_secs(90 * 86400);
    let generate = match kind.as_str() {
        "rsa" => misim_token::cert::generate_rsa_cert,
        "ec" => misim_token::cert::generate_ec_cert,
        other => return Err(format!("unknown key kind {other}: rsa or ec").into()),
    };
    for i in 0..n {
        let g = generate(&format!("client-{i}"), nb, na)?;
        std::hint::black_box(g);
    }
    println!("{n} {kind} certificates");
    Ok(())
}
