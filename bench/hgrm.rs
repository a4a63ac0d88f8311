//! HdrHistogram's percentile-distribution text (`.hgrm`), as written by
//! `AbstractHistogram.outputPercentileDistribution` in the Java library and
//! by wrk2, and read by the standard plotters (`plotFiles.html`,
//! `hdr-plot`).
//!
//! hdrhistogram 7.6 without default features has no serializer, and this
//! format is not one of its serializers anyway, so it is written here from
//! `iter_quantiles` with the Java format strings: five ticks per half
//! distance, values with three decimals, the last line (percentile 1.0)
//! without the `1/(1-Percentile)` column, and the `#[Mean …]` footer.
//!
//! Values are recorded in nanoseconds and written in **microseconds**
//! (a scaling ratio of 1000), the unit the rest of the report uses; a
//! broker whose latencies are tens of microseconds would lose most of its
//! digits in milliseconds.

use hdrhistogram::Histogram;
use std::io::{self, Write};

const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Nanoseconds per written unit.
const SCALE: f64 = 1000.0;

pub fn write(out: &mut impl Write, hist: &Histogram<u64>) -> io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !hist.is_empty() {
        for step in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += step.count_since_last_iteration();
            let value = step.value_iterated_to() as f64 / SCALE;
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {quantile:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                )?;
            } else {
                writeln!(out, "{value:12.3} {quantile:2.12} {total:10}")?;
            }
        }
    }
    let mean = if hist.is_empty() { 0.0 } else { hist.mean() };
    let stdev = if hist.is_empty() { 0.0 } else { hist.stdev() };
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        mean / SCALE,
        stdev / SCALE
    )?;
    writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        hist.max() as f64 / SCALE,
        hist.len()
    )?;
    // The Java library's sub-bucket count: the power of two that holds
    // 2 × 10^digits values at unit resolution.
    let sub_buckets = (2 * 10u64.pow(u32::from(hist.sigfig()))).next_power_of_two();
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        sub_buckets
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_has_the_standard_shape() {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            hist.record(v * 1000).unwrap();
        }
        let mut out = Vec::new();
        write(&mut out, &hist).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        let data: Vec<Vec<&str>> = lines[2..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(data.len() > 20);
        assert_eq!(data[0], ["1.000", "0.000000000000", "1", "1.00"]);
        let last = data.last().unwrap();
        // Values are the top of their bucket, as in the Java library.
        assert_eq!(last, &["1000.447", "1.000000000000", "1000"]);
        assert!(data[..data.len() - 1].iter().all(|row| row.len() == 4));
        assert!(text.contains("#[Mean    =      500.505, StdDeviation   =      288.676]"));
        assert!(text.contains("#[Max     =     1000.447, Total count    =         1000]"));
        assert!(text.ends_with("SubBuckets     =         2048]\n"));
    }
}
