//! Pin cookies: stickiness for requests that carry no user key.
//!
//! An anonymous request gets a fresh random id (128 bits from the host's entropy,
//! 32 lowercase hex characters). The id is hashed exactly like a sticky key, so it
//! lands in the same bucket ranges and ramps stay monotonic for anonymous users too;
//! the response sets it as a cookie and later requests are routed by it.

/// The pin cookie as configured, with its `Set-Cookie` attributes prepared once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinCookie {
    pub name: String,
    /// The cookie slot the pin is read from.
    pub slot: usize,
    /// `; Max-Age=86400; Path=/; Secure; HttpOnly; SameSite=Lax`
    attributes: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn parse(value: &str) -> Option<SameSite> {
        match value {
            "Strict" => Some(SameSite::Strict),
            "Lax" => Some(SameSite::Lax),
            "None" => Some(SameSite::None),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

impl PinCookie {
    pub fn new(
        name: String,
        slot: usize,
        max_age: u64,
        path: &str,
        secure: bool,
        http_only: bool,
        same_site: SameSite,
    ) -> PinCookie {
        let mut attributes = format!("; Max-Age={max_age}; Path={path}");
        if secure {
            attributes.push_str("; Secure");
        }
        if http_only {
            attributes.push_str("; HttpOnly");
        }
        attributes.push_str("; SameSite=");
        attributes.push_str(same_site.as_str());
        PinCookie {
            name,
            slot,
            attributes,
        }
    }

    /// The `Set-Cookie` value that hands `id` to the client.
    pub fn set_cookie(&self, id: &PinId) -> String {
        format!("{}={}{}", self.name, id.as_str(), self.attributes)
    }
}

/// Shortest and longest pin ids accepted (we issue 32; 16 = 64 bits).
const MIN_LEN: usize = 16;
const MAX_LEN: usize = 64;

/// A pin value read from a request is used only when well formed: 16 to 64
/// lowercase hex characters. Anything else is treated as absent and replaced.
pub fn is_well_formed(value: &[u8]) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// A freshly issued pin id: 128 random bits as 32 lowercase hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinId([u8; 32]);

impl PinId {
    pub fn from_random(bits: [u8; 16]) -> PinId {
        let digit = |nibble: u8| match nibble {
            0..=9 => b'0' + nibble,
            _ => b'a' + (nibble - 10),
        };
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(bits) {
            if let [hi, lo] = pair {
                *hi = digit(byte >> 4);
                *lo = digit(byte & 0x0f);
            }
        }
        PinId(hex)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lowercase_hex_and_well_formed() {
        let id = PinId::from_random([
            0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xa0, 0xff,
        ]);
        assert_eq!(id.as_str(), "deadbeef00010203040506070809a0ff");
        assert!(is_well_formed(id.as_bytes()));
    }

    #[test]
    fn malformed_pins() {
        for bad in [
            &b""[..],
            b"abc",
            b"DEADBEEF000102030405060708090A0F",
            b"deadbeef00010203040506070809a0fg",
            b"deadbeef-0010203040506070809a0ff",
            &[b'a'; 65],
            b"deadbeef00010203 ",
        ] {
            assert!(!is_well_formed(bad), "{bad:?}");
        }
        assert!(is_well_formed(&[b'0'; 16]));
        assert!(is_well_formed(&[b'f'; 64]));
    }

    #[test]
    fn set_cookie_attributes_in_order() {
        let id = PinId::from_random([0; 16]);
        let all = PinCookie::new(
            "canary_pin".into(),
            0,
            86400,
            "/",
            true,
            true,
            SameSite::Lax,
        );
        assert_eq!(
            all.set_cookie(&id),
            "canary_pin=00000000000000000000000000000000; Max-Age=86400; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        let bare = PinCookie::new("p".into(), 0, 60, "/app", false, false, SameSite::Strict);
        assert_eq!(
            bare.set_cookie(&id),
            "p=00000000000000000000000000000000; Max-Age=60; Path=/app; SameSite=Strict"
        );
    }
}
