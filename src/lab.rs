//! `segue lab`: a fleet on one machine (issue "At scale"): the origin, a shield POP,
//! POPs in listener regions behind it, the control plane and the app API, all real
//! servers on loopback, started the way `segue up` starts its one POP.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::up::{Plan, PopPlan};
use crate::Failure;

/// Listener regions: name, UTC offset in minutes, the countries they serve.
const REGIONS: [(&str, i32, &[&str]); 3] = [
    ("eu", 60, &["SE", "NO", "DK", "FI", "DE", "FR", "GB", "NL", "ES", "IT"]),
    ("us", -300, &["US", "CA", "BR"]),
    ("ap", 540, &["JP", "AU", "IN"]),
];

/// `segue lab`'s options.
#[derive(clap::Args)]
pub struct LabArgs {
    /// Where all state lives.
    #[arg(long, default_value = "./lab", value_name = "DIR")]
    data_dir: PathBuf,
    /// POPs, spread over the regions in turn.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pops: u16,
    /// Listener regions (eu, us, ap: the first ones).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=3))]
    regions: u16,
    /// Put a shield POP between the POPs and the origin.
    #[arg(long)]
    shield: bool,
    /// First port (see above); 0 for free ports.
    #[arg(long, default_value_t = 7100, value_name = "P")]
    ports_from: u16,
    /// Length of each demo track in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=600))]
    demo_track_secs: u32,
    /// Restart a POP or the origin that dies (a scenario killed it) after this many
    /// seconds, on the same port; 0: leave it dead.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    restart_after_secs: u64,
    /// Start one more edge outside the control plane, in front of the origin, as the
    /// app API's overflow CDN (for the overflow scenario). Its `listening on` line
    /// comes last.
    #[arg(long)]
    overflow: bool,
    /// Each POP reports itself saturated with this many client connections open (its
    /// `capacity_connections`); 0: never.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pop_capacity_connections: u64,
}

pub async fn lab(args: LabArgs) -> Result<(), Failure> {
    let LabArgs {
        data_dir,
        pops,
        regions,
        shield,
        ports_from,
        demo_track_secs,
        restart_after_secs,
        overflow,
        pop_capacity_connections,
    } = args;
    let at = |offset: u16| -> Result<SocketAddr, Failure> {
        if ports_from == 0 {
            return Ok(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        let port = ports_from
            .checked_add(offset)
            .ok_or_else(|| Failure::Usage(format!("--ports-from {ports_from}: the POPs' ports would pass 65535")))?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let regions: Vec<(String, i32, Vec<String>)> = REGIONS[..usize::from(regions)]
        .iter()
        .map(|(name, offset, countries)| {
            ((*name).to_owned(), *offset, countries.iter().map(|c| (*c).to_owned()).collect())
        })
        .collect();
    let mut plan_pops = Vec::with_capacity(usize::from(pops));
    let mut per_region = vec![0u16; regions.len()];
    for i in 0..pops {
        let r = usize::from(i) % regions.len();
        per_region[r] += 1;
        plan_pops.push(PopPlan {
            name: format!("pop-{}-{}", regions[r].0, per_region[r]),
            region: regions[r].0.clone(),
            listen: at(11 + i)?,
            behind_shield: shield,
        });
    }
    crate::up::run(Plan {
        label: "segue lab",
        data_dir,
        origin_listen: at(0)?,
        cp_listen: at(1)?,
        app_listen: at(2)?,
        pops: plan_pops,
        shield: if shield { Some(at(10)?) } else { None },
        regions,
        demo_track_secs,
        subsonic_proxy: false,
        processes: true,
        // A lab marks a killed POP down within seconds, not the production 15.
        heartbeat_secs: 1,
        restart_after: (restart_after_secs > 0).then(|| std::time::Duration::from_secs(restart_after_secs)),
        overflow,
        capacity_connections: pop_capacity_connections,
    })
    .await
}
