//! Record value sizes: one fixed size, or a distribution drawn per record.
//!
//! Real topics rarely carry records of one size, and a broker's per-record and per-byte costs
//! only separate when sizes vary. Like the keys ([`super::keys`]), record k's size is a pure
//! function of k and the producer's seed, so a run is reproducible and both producers (native
//! and librdkafka) send the same sizes for the same k. Sizes are drawn once into a pool of
//! [`POOL`] entries and record k takes a hashed pool entry: drawing a normal or lognormal value
//! per record (logarithms, square roots, cosines) would cost more than encoding the record.
//!
//! - fixed: every value `bytes` long (`--record-bytes`, `value_bytes = 1024`).
//! - uniform: any size in `min..=max` equally likely.
//! - normal: Gaussian with `mean` and `stddev`, rounded and clamped to `min..=max` (clamping
//!   moves the mean when the bounds are not symmetric around it).
//! - lognormal: `median · e^(sigma·Z)` (Z standard normal), clamped to `min..=max`: most values
//!   near the median and a long tail of large ones, as message sizes usually are. Its mean is
//!   `median · e^(sigma²/2)` before clamping.

use std::fmt;

use super::keys::splitmix64;

/// Sizes drawn per producer; a power of two (the index is a masked hash).
pub const POOL: usize = 1 << 14;
const _: () = assert!(POOL.is_power_of_two());

/// How big each record's value is, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeDistribution {
    Fixed(u64),
    Uniform { min: u64, max: u64 },
    Normal { mean: f64, stddev: f64, min: u64, max: u64 },
    LogNormal { median: f64, sigma: f64, min: u64, max: u64 },
}

impl SizeDistribution {
    /// The distribution called `name` with `fields` (key, value), as written after the name in
    /// `--record-bytes-dist` or beside `distribution` in a workload file. Sizes take units
    /// ("1KiB"); every field is required and no other is accepted.
    pub fn from_fields(name: &str, fields: &[(String, String)]) -> Result<SizeDistribution, String> {
        let wanted: &[&str] = match name {
            "fixed" => &["bytes"],
            "uniform" => &["min", "max"],
            "normal" => &["mean", "stddev", "min", "max"],
            "lognormal" => &["median", "sigma", "min", "max"],
            other => {
                return Err(format!("unknown size distribution {other:?}: use fixed, uniform, normal or lognormal"))
            }
        };
        for (k, _) in fields {
            if !wanted.contains(&k.as_str()) {
                return Err(format!("{name} takes {}, not {k:?}", wanted.join(", ")));
            }
        }
        let raw = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| format!("{name} needs {}: {key} is missing", wanted.join(", ")))
        };
        let size = |key: &str| crate::parse_size(raw(key)?).map_err(|e| format!("{name} {key}: {e}"));
        let number = |key: &str| {
            let v = raw(key)?;
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| format!("{name} {key} = {v:?} is not a positive number"))
        };
        let d = match name {
            "fixed" => SizeDistribution::Fixed(size("bytes")?),
            "uniform" => SizeDistribution::Uniform { min: size("min")?, max: size("max")? },
            "normal" => SizeDistribution::Normal {
                mean: size("mean")? as f64,
                stddev: number("stddev")?,
                min: size("min")?,
                max: size("max")?,
            },
            _ => SizeDistribution::LogNormal {
                median: size("median")? as f64,
                sigma: number("sigma")?,
                min: size("min")?,
                max: size("max")?,
            },
        };
        if d.min() > d.max() {
            return Err(format!("{name}: min {} is above max {}", d.min(), d.max()));
        }
        let center = match d {
            SizeDistribution::Normal { mean, .. } => Some(mean),
            SizeDistribution::LogNormal { median, .. } => Some(median),
            _ => None,
        };
        if let Some(c) = center.filter(|c| *c < d.min() as f64 || *c > d.max() as f64) {
            return Err(format!("{name}: {c} is outside min..max ({}..{})", d.min(), d.max()));
        }
        Ok(d)
    }

    /// `--record-bytes-dist NAME:KEY=VALUE,...`, e.g. `uniform:min=100,max=2000`.
    pub fn parse(s: &str) -> Result<SizeDistribution, String> {
        let (name, rest) = s.split_once(':').unwrap_or((s, ""));
        let fields = rest
            .split(',')
            .filter(|f| !f.trim().is_empty())
            .map(super::args::parse_key_value)
            .collect::<Result<Vec<_>, _>>()?;
        SizeDistribution::from_fields(name.trim(), &fields)
    }

    /// Smallest size drawn.
    pub fn min(&self) -> u64 {
        match *self {
            SizeDistribution::Fixed(b) => b,
            SizeDistribution::Uniform { min, .. }
            | SizeDistribution::Normal { min, .. }
            | SizeDistribution::LogNormal { min, .. } => min,
        }
    }

    /// Largest size drawn.
    pub fn max(&self) -> u64 {
        match *self {
            SizeDistribution::Fixed(b) => b,
            SizeDistribution::Uniform { max, .. }
            | SizeDistribution::Normal { max, .. }
            | SizeDistribution::LogNormal { max, .. } => max,
        }
    }

    /// The fixed size, if every value has it.
    pub fn fixed(&self) -> Option<u64> {
        match *self {
            SizeDistribution::Fixed(b) => Some(b),
            _ => None,
        }
    }

    /// One draw from uniforms `u1`, `u2` in (0, 1].
    fn draw(&self, u1: f64, u2: f64) -> u64 {
        // Box–Muller: a standard normal from two uniforms.
        let z = || (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let clamp = |x: f64, min: u64, max: u64| (x.round().max(min as f64) as u64).min(max);
        match *self {
            SizeDistribution::Fixed(b) => b,
            SizeDistribution::Uniform { min, max } => min + ((u1 * (max - min + 1) as f64) as u64).min(max - min),
            SizeDistribution::Normal { mean, stddev, min, max } => clamp(mean + stddev * z(), min, max),
            SizeDistribution::LogNormal { median, sigma, min, max } => clamp(median * (sigma * z()).exp(), min, max),
        }
    }
}

impl fmt::Display for SizeDistribution {
    /// In `--record-bytes-dist` syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SizeDistribution::Fixed(b) => write!(f, "fixed:bytes={b}"),
            SizeDistribution::Uniform { min, max } => write!(f, "uniform:min={min},max={max}"),
            SizeDistribution::Normal { mean, stddev, min, max } => {
                write!(f, "normal:mean={mean},stddev={stddev},min={min},max={max}")
            }
            SizeDistribution::LogNormal { median, sigma, min, max } => {
                write!(f, "lognormal:median={median},sigma={sigma},min={min},max={max}")
            }
        }
    }
}

/// The sizes one producer draws from.
pub struct Sizes {
    /// `None`: every value is `fixed` bytes.
    pool: Option<Vec<u32>>,
    fixed: usize,
    salt: u64,
}

impl Sizes {
    pub fn new(d: &SizeDistribution, seed: u64) -> Sizes {
        assert!(d.max() <= u64::from(u32::MAX), "value sizes are bounded far below 4 GiB by validation");
        let salt = seed ^ 0x5153_7A65;
        if let Some(b) = d.fixed() {
            return Sizes { pool: None, fixed: b as usize, salt };
        }
        // Uniforms in (0, 1]: 53 random bits, never 0 (ln 0).
        let u = |i: u64| ((splitmix64(i ^ salt) >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let pool = (0..POOL as u64).map(|i| d.draw(u(2 * i), u(2 * i + 1)) as u32).collect();
        Sizes { pool: Some(pool), fixed: 0, salt }
    }

    /// Record k's value size.
    #[inline]
    pub fn size(&self, k: u64) -> usize {
        match &self.pool {
            None => self.fixed,
            Some(pool) => pool[(splitmix64(k ^ self.salt.rotate_left(17)) as usize) & (POOL - 1)] as usize,
        }
    }

    /// Mean value size (of the pool: what a long run averages).
    pub fn mean(&self) -> f64 {
        match &self.pool {
            None => self.fixed as f64,
            Some(pool) => pool.iter().map(|&s| f64::from(s)).sum::<f64>() / POOL as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(d: &SizeDistribution, n: u64) -> (f64, f64, u64, u64) {
        let s = Sizes::new(d, 7);
        let xs: Vec<f64> = (0..n).map(|k| s.size(k) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let (lo, hi) = (0..n).map(|k| s.size(k) as u64).fold((u64::MAX, 0), |(a, b), x| (a.min(x), b.max(x)));
        (mean, var.sqrt(), lo, hi)
    }

    #[test]
    fn parses_both_syntaxes_and_refuses_mistakes() {
        assert_eq!(
            SizeDistribution::parse("uniform:min=100,max=2KiB").unwrap(),
            SizeDistribution::Uniform { min: 100, max: 2048 }
        );
        let n = SizeDistribution::parse("normal:mean=1024,stddev=256,min=64,max=4096").unwrap();
        assert_eq!(n, SizeDistribution::Normal { mean: 1024.0, stddev: 256.0, min: 64, max: 4096 });
        assert_eq!(SizeDistribution::parse(&n.to_string()).unwrap(), n, "Display is the same syntax");
        let l = SizeDistribution::parse("lognormal:median=1KiB,sigma=0.5,min=28,max=1MiB").unwrap();
        assert_eq!(l, SizeDistribution::LogNormal { median: 1024.0, sigma: 0.5, min: 28, max: 1 << 20 });
        assert_eq!(SizeDistribution::parse("fixed:bytes=512").unwrap(), SizeDistribution::Fixed(512));
        let err = |s: &str| SizeDistribution::parse(s).unwrap_err();
        assert!(err("gauss:mean=1").contains("unknown size distribution"));
        assert!(err("uniform:min=100").contains("max is missing"));
        assert!(err("uniform:min=100,max=200,mean=150").contains("not \"mean\""));
        assert!(err("uniform:min=300,max=200").contains("above max"));
        assert!(err("normal:mean=5000,stddev=1,min=1,max=4096").contains("outside"));
        assert!(err("lognormal:median=100,sigma=-1,min=1,max=4096").contains("positive"));
        assert!(err("uniform:min=1 parsec,max=2").contains("min"));
    }

    #[test]
    fn fixed_has_no_pool() {
        let s = Sizes::new(&SizeDistribution::Fixed(100), 1);
        assert!(s.pool.is_none());
        assert!((0..1000).all(|k| s.size(k) == 100));
    }

    #[test]
    fn uniform_draws_cover_the_range_evenly() {
        let d = SizeDistribution::Uniform { min: 100, max: 2000 };
        let (mean, sd, lo, hi) = stats(&d, 200_000);
        assert!((lo, hi) == (100, 2000), "every size within bounds, both ends reached: {lo}..{hi}");
        assert!((mean - 1050.0).abs() < 15.0, "mean {mean}");
        // A uniform over 1901 values: sd = 1901 / sqrt(12) ≈ 548.8.
        assert!((sd - 548.8).abs() < 15.0, "sd {sd}");
    }

    #[test]
    fn normal_draws_have_their_mean_and_spread_within_bounds() {
        let d = SizeDistribution::Normal { mean: 1024.0, stddev: 256.0, min: 64, max: 4096 };
        let (mean, sd, lo, hi) = stats(&d, 200_000);
        assert!(lo >= 64 && hi <= 4096);
        assert!((mean - 1024.0).abs() < 10.0, "mean {mean}");
        assert!((sd - 256.0).abs() < 10.0, "sd {sd}");
        // Clamping: a tight max piles the upper tail onto it.
        let clamped = SizeDistribution::Normal { mean: 1024.0, stddev: 256.0, min: 1000, max: 1100 };
        let (_, _, lo, hi) = stats(&clamped, 10_000);
        assert_eq!((lo, hi), (1000, 1100));
    }

    #[test]
    fn lognormal_draws_have_their_median_and_a_long_tail() {
        let d = SizeDistribution::LogNormal { median: 1000.0, sigma: 0.5, min: 28, max: 1 << 20 };
        let s = Sizes::new(&d, 3);
        let mut xs: Vec<usize> = (0..100_000).map(|k| s.size(k)).collect();
        xs.sort_unstable();
        let median = xs[xs.len() / 2] as f64;
        assert!((median - 1000.0).abs() < 30.0, "median {median}");
        let mean = xs.iter().sum::<usize>() as f64 / xs.len() as f64;
        // e^(0.125) · 1000 ≈ 1133.
        assert!((mean - 1133.0).abs() < 25.0, "mean {mean}");
        assert!(xs[xs.len() - 1] > 3 * 1000, "a long upper tail");
    }

    #[test]
    fn draws_are_reproducible_per_seed() {
        let d = SizeDistribution::Uniform { min: 28, max: 10_000 };
        let (a, b, c) = (Sizes::new(&d, 5), Sizes::new(&d, 5), Sizes::new(&d, 6));
        assert!((0..1000).all(|k| a.size(k) == b.size(k)));
        assert!((0..1000).any(|k| a.size(k) != c.size(k)), "another producer draws other sizes");
    }
}
