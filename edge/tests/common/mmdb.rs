//! A minimal writer of MaxMind DB files (IPv4 trees, 24-bit records), so tests use a
//! real GeoIP database of their own making: `country_db(&[("127.0.0.1/32", "SE")])`.

fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
    assert!(size < 29);
    if kind <= 7 {
        out.push(kind << 5 | size as u8);
    } else {
        out.push(size as u8);
        out.push(kind - 7);
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    control(2, s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

fn uint(kind: u8, v: u64, out: &mut Vec<u8>) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(kind, 8 - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// A Country-style database mapping each IPv4 network to `{"country": {"iso_code": CC}}`.
pub fn country_db(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (net, cc) in entries {
        let offset = data.len();
        control(7, 1, &mut data);
        string("country", &mut data);
        control(7, 1, &mut data);
        string("iso_code", &mut data);
        string(cc, &mut data);
        let (addr, len) = net.split_once('/').unwrap();
        let addr = u32::from(addr.parse::<std::net::Ipv4Addr>().unwrap());
        let len: usize = len.parse().unwrap();
        let mut node = 0;
        for depth in 0..len {
            let bit = ((addr >> (31 - depth)) & 1) as usize;
            if depth + 1 == len {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for rec in node {
            let v = match *rec {
                Rec::Empty => count,
                Rec::Node(n) => n,
                Rec::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let m = &mut out;
    control(7, 9, m);
    string("node_count", m);
    uint(6, count as u64, m);
    string("record_size", m);
    uint(5, 24, m);
    string("ip_version", m);
    uint(5, 4, m);
    string("database_type", m);
    string("Segue-Test-Country", m);
    string("languages", m);
    control(11, 0, m);
    string("binary_format_major_version", m);
    uint(5, 2, m);
    string("binary_format_minor_version", m);
    uint(5, 0, m);
    string("build_epoch", m);
    uint(9, 1_700_000_000, m);
    string("description", m);
    control(7, 0, m);
    out
}
