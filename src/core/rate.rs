//! Rates and durations written the way people say them: "10/s", "1000/day", "0.1/s",
//! "5/10s", "250ms". Everything becomes an exact rational of whole units per whole
//! milliseconds, so "0.1/s" is one unit per 10,000 ms and never a rounded float.

use std::fmt;

/// `amount` units every `period_ms` milliseconds, kept in lowest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub amount: u64,
    pub period_ms: u64,
}

/// Largest integer a Lua (double) number holds exactly; the Redis twin of the engine
/// computes with those, so every stored quantity must stay at or below it.
pub const MAX_EXACT: u64 = 1 << 53;

/// The longest period or window accepted: one year. Longer limits are almost always a
/// typo, and keeping periods bounded keeps every product below [`MAX_EXACT`].
pub const MAX_PERIOD_MS: u64 = 366 * 24 * 3_600_000;

impl Rate {
    /// Builds a rate in lowest terms. Both parts must be non-zero.
    pub fn new(amount: u64, period_ms: u64) -> Result<Rate, String> {
        if amount == 0 {
            return Err("the amount must be greater than zero".into());
        }
        if period_ms == 0 {
            return Err("the period must be at least 1 ms".into());
        }
        let g = gcd(amount, period_ms);
        Ok(Rate { amount: amount / g, period_ms: period_ms / g })
    }

    /// Parses "N/unit" or "N/<duration>", N a whole or decimal number.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (count, per) = text.split_once('/').ok_or_else(|| {
            format!("`{text}` is not a rate: write it as COUNT/PERIOD, like \"10/s\" or \"1000/day\"")
        })?;
        let (numerator, scale) = parse_decimal(count.trim())
            .ok_or_else(|| format!("`{}` is not a number (in rate `{text}`)", count.trim()))?;
        let period = parse_duration_ms(per.trim(), true)?;
        if period > MAX_PERIOD_MS {
            return Err(format!("the period of `{text}` is longer than one year"));
        }
        let period_scaled = period.checked_mul(scale).ok_or_else(|| format!("`{text}` has too many decimal places"))?;
        Rate::new(numerator, period_scaled).map_err(|e| format!("{e} (in rate `{text}`)"))
    }

    /// The amount per period as a whole count over a whole window, for window limits
    /// ("5000/min"): fractional counts make no sense there.
    pub fn parse_window(text: &str) -> Result<(u64, u64), String> {
        let (count, per) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a window limit: write it as COUNT/WINDOW, like \"5000/min\""))?;
        let count = count.trim();
        let limit: u64 =
            count.parse().map_err(|_| format!("`{count}` is not a whole number of units (in `{text}`)"))?;
        if limit == 0 {
            return Err(format!("the count in `{text}` must be at least 1"));
        }
        let window = parse_duration_ms(per.trim(), true)?;
        if window > MAX_PERIOD_MS {
            return Err(format!("the window of `{text}` is longer than one year"));
        }
        Ok((limit, window))
    }

    /// Milliseconds for `units` to accrue, rounded up.
    pub fn ms_for(&self, units: u64) -> u64 {
        let num = units as u128 * self.period_ms as u128;
        num.div_ceil(self.amount as u128).min(u64::MAX as u128) as u64
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.amount, format_duration(self.period_ms))
    }
}

/// Parses "250ms", "10s", "1.5h", "day", "min". A bare unit means one of it when
/// `bare_unit_ok` (the rate form "10/s").
pub fn parse_duration_ms(text: &str, bare_unit_ok: bool) -> Result<u64, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms: u64 = match unit.trim() {
        "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 7 * 86_400_000,
        "" => return Err(format!("`{text}` has no unit: add ms, s, min, h, day or week")),
        other => return Err(format!("`{other}` is not a time unit: use ms, s, min, h, day or week")),
    };
    if number.is_empty() {
        return if bare_unit_ok { Ok(unit_ms) } else { Err(format!("`{text}` has no number")) };
    }
    let (numerator, scale) =
        parse_decimal(number).ok_or_else(|| format!("`{number}` is not a number (in `{text}`)"))?;
    let total = numerator.checked_mul(unit_ms).ok_or_else(|| format!("`{text}` is too long"))?;
    if total % scale != 0 {
        return Err(format!("`{text}` is not a whole number of milliseconds"));
    }
    let ms = total / scale;
    if ms == 0 {
        return Err(format!("`{text}` must be at least 1 ms"));
    }
    Ok(ms)
}

/// Renders milliseconds in the largest unit that divides them exactly.
pub fn format_duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 5] = [(86_400_000, "day"), (3_600_000, "h"), (60_000, "min"), (1_000, "s"), (1, "ms")];
    for (size, name) in UNITS {
        if ms % size == 0 {
            let n = ms / size;
            return if n == 1 && size > 1 { name.to_string() } else { format!("{n}{name}") };
        }
    }
    unreachable!("1 divides every number")
}

/// "12.5" -> (125, 10). At most 6 decimal places; no sign, no exponent.
fn parse_decimal(text: &str) -> Option<(u64, u64)> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits_ok(whole) || !digits_ok(frac) || frac.len() > 6 {
        return None;
    }
    let scale = 10u64.pow(frac.len() as u32);
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: u64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    Some((whole.checked_mul(scale)?.checked_add(frac)?, scale))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoken_rates_become_exact_fractions() {
        assert_eq!(Rate::parse("10/s").unwrap(), Rate { amount: 1, period_ms: 100 });
        assert_eq!(Rate::parse("0.1/s").unwrap(), Rate { amount: 1, period_ms: 10_000 });
        assert_eq!(Rate::parse("1000/day").unwrap(), Rate { amount: 1, period_ms: 86_400 });
        assert_eq!(Rate::parse("3/s").unwrap(), Rate { amount: 3, period_ms: 1_000 });
        assert_eq!(Rate::parse("5 / 10s").unwrap(), Rate { amount: 1, period_ms: 2_000 });
        assert_eq!(Rate::parse("2.5/min").unwrap(), Rate { amount: 1, period_ms: 24_000 });
        assert_eq!(Rate::parse("100/500ms").unwrap(), Rate { amount: 1, period_ms: 5 });
    }

    #[test]
    fn bad_rates_say_what_is_wrong() {
        assert!(Rate::parse("10").unwrap_err().contains("COUNT/PERIOD"));
        assert!(Rate::parse("ten/s").unwrap_err().contains("not a number"));
        assert!(Rate::parse("0/s").unwrap_err().contains("greater than zero"));
        assert!(Rate::parse("10/fortnight").unwrap_err().contains("not a time unit"));
        assert!(Rate::parse("-1/s").unwrap_err().contains("not a number"));
        assert!(Rate::parse("1/2y").unwrap_err().contains("not a time unit"));
        assert!(Rate::parse("1/400day").unwrap_err().contains("one year"));
        assert!(Rate::parse("0.0000001/s").unwrap_err().contains("not a number"));
    }

    #[test]
    fn windows_need_whole_counts() {
        assert_eq!(Rate::parse_window("5000/min").unwrap(), (5000, 60_000));
        assert_eq!(Rate::parse_window("100/10s").unwrap(), (100, 10_000));
        assert!(Rate::parse_window("0.5/s").unwrap_err().contains("whole number"));
        assert!(Rate::parse_window("0/s").unwrap_err().contains("at least 1"));
        assert!(parse_duration_ms("0.5ms", false).unwrap_err().contains("whole number of milliseconds"));
    }

    #[test]
    fn accrual_time_rounds_up() {
        let r = Rate::parse("3/s").unwrap();
        assert_eq!(r.ms_for(1), 334);
        assert_eq!(r.ms_for(3), 1_000);
        assert_eq!(format_duration(86_400_000), "day");
        assert_eq!(format_duration(10_000), "10s");
        assert_eq!(r.to_string(), "3/s");
    }
}
