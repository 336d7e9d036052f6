//! Topic names and topic filters (§4.7).
//!
//! Names and filters are compared byte for byte, never normalised [MQTT-4.7.3-4]. A filter
//! starting with a wildcard never matches a name starting with `$` [MQTT-4.7.2-1], so `#`
//! does not see `$SYS/...` or `$hw/...`; a filter naming `$hw` explicitly does.

/// Checks a topic name as PUBLISH and will messages carry it: at least one character
/// [MQTT-4.7.3-1], no wildcards [MQTT-3.3.2-2]. (U+0000 and bad UTF-8 are the decoder's
/// check, [MQTT-4.7.3-2].) Returns the statement broken.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("MQTT-4.7.3-1");
    }
    // Bytes, not chars: both are ASCII, and this runs for every PUBLISH (the char-set search
    // was half of the broker's time under a flood in a debug build).
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err("MQTT-3.3.2-2");
    }
    Ok(())
}

/// Checks a topic filter: at least one character [MQTT-4.7.3-1]; `#` only alone as the last
/// level [MQTT-4.7.1-2]; `+` only as a whole level [MQTT-4.7.1-3].
pub fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("MQTT-4.7.3-1");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("MQTT-4.7.1-2");
        }
        if level.contains('+') && level != "+" {
            return Err("MQTT-4.7.1-3");
        }
    }
    Ok(())
}

/// Number of levels in a name or filter (`a/b` has 2, `/` has 2).
pub fn levels(s: &str) -> usize {
    s.bytes().filter(|b| *b == b'/').count() + 1
}

/// Whether the (valid) topic `filter` matches the (valid) topic `name`: `+` is one level,
/// a trailing `#` is the parent level and everything below it (`a/#` matches `a`), and a
/// wildcard first level never matches a `$` name.
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = name.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_wildcards_and_not_empty() {
        assert_eq!(check_name(""), Err("MQTT-4.7.3-1"));
        assert_eq!(check_name("a/+"), Err("MQTT-3.3.2-2"));
        assert_eq!(check_name("a/#"), Err("MQTT-3.3.2-2"));
        assert_eq!(check_name("a+b"), Err("MQTT-3.3.2-2"));
        for ok in [
            "/",
            "a",
            "$SYS/x",
            "a//b",
            " ",
            "$hw/events/device/ns/d/twin/update",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn filters_place_wildcards_as_the_spec_says() {
        for ok in [
            "#", "+", "a/#", "a/+/b", "+/+", "/#", "/+", "$SYS/#", "a//b", "+/#",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(check_filter(""), Err("MQTT-4.7.3-1"));
        for bad in ["a/#/b", "a#", "#/", "a/b#", "##"] {
            assert_eq!(check_filter(bad), Err("MQTT-4.7.1-2"), "{bad:?}");
        }
        for bad in ["a+", "a/+b", "++", "+a/b"] {
            assert_eq!(check_filter(bad), Err("MQTT-4.7.1-3"), "{bad:?}");
        }
    }

    #[test]
    fn matching_examples_from_section_4_7() {
        // §4.7.1.2: "sport/tennis/player1/#" matches these three.
        for t in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches("sport/tennis/player1/#", t), "{t}");
        }
        assert!(matches("sport/#", "sport"), "# includes the parent level");
        assert!(matches("#", "a/b/c"));
        // §4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        // §4.7.3: case and spaces matter.
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(matches("Accounts payable", "Accounts payable"));
    }

    #[test]
    fn wildcards_do_not_match_dollar_topics() {
        // [MQTT-4.7.2-1]
        assert!(!matches("#", "$SYS/broker/clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!matches("+/+", "$hw/events"));
        assert!(matches("$SYS/#", "$SYS/broker/clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches(
            "$hw/events/device/+/+/twin/+",
            "$hw/events/device/default/t/twin/update"
        ));
        // Only the first level is special.
        assert!(matches("a/#", "a/$b"));
    }

    #[test]
    fn levels_count_separators() {
        assert_eq!(levels("a"), 1);
        assert_eq!(levels("/"), 2);
        assert_eq!(levels("a/b/c"), 3);
    }
}
