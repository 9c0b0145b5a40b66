//! Durations as Kuma users write them: Go's `24h`, `1h30m`, `500ms`, plus
//! `d` and `y` for CA lifetimes (`10y`).

use std::time::Duration;

/// Parses `<number><unit>` repeated, units ms, s, m, h, d, y. Returns a
/// message fit to follow the field name when the text is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: use e.g. 30s, 24h, 1h30m, 10y");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let secs_per_unit: f64 = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "y" => 365.0 * 86_400.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = Duration::try_from_secs_f64(value as f64 * secs_per_unit)
            .map_err(|_| format!("{text:?} is too long a duration"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kuma_durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("10y"),
            Ok(Duration::from_secs(10 * 365 * 86_400))
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("99999999999999999999y").is_err());
        assert!(parse_duration("18446744073709551615y").is_err());
    }
}
