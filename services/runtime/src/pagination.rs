//! Keyset pagination for every list call: `page_size` (0 means the default,
//! capped at the maximum) and an opaque `page_token` that names the last key
//! of the previous page. Keyset rather than offset: pages stay stable while
//! rows are added, and a deep page costs what the first one does.

use crate::error::ApiError;

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;
const TOKEN_PREFIX: &str = "v1.";

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many rows to return.
    pub size: u32,
    /// The sort key after which this page starts; `None` for the first page.
    pub after: Option<String>,
}

impl PageRequest {
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self, ApiError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(ApiError::invalid("page_size", "must not be negative")),
            n => u32::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(page_token)?)
        };
        Ok(Self { size, after })
    }

    /// Rows to fetch: one more than the page, to learn whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// Trims the extra row fetched by [`Self::fetch_limit`] and returns the
    /// token for the next page (empty when this is the last).
    pub fn finish<T>(&self, rows: &mut Vec<T>, key_of: impl Fn(&T) -> String) -> String {
        let (page, token) = self.page_of(rows, key_of);
        let kept = page.len();
        rows.truncate(kept);
        token
    }

    /// The page at the start of `rows` (the rows from the page's start on,
    /// all of them or at least one beyond the page) and the token for the
    /// next page (empty when this is the last): [`Self::finish`] without a
    /// copy, for rows already in memory.
    pub fn page_of<'a, T>(
        &self,
        rows: &'a [T],
        key_of: impl Fn(&T) -> String,
    ) -> (&'a [T], String) {
        let size = self.size as usize;
        if rows.len() > size {
            let page = &rows[..size];
            let token = page
                .last()
                .map(|row| encode_token(&key_of(row)))
                .unwrap_or_default();
            (page, token)
        } else {
            (rows, String::new())
        }
    }
}

/// The token naming `key` as the last key of a page.
fn encode_token(key: &str) -> String {
    // Without a `format!` per byte: the cap table writes a token on every
    // read of its first page, where that showed in profiles.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 2 * key.len());
    token.push_str(TOKEN_PREFIX);
    for byte in key.bytes() {
        token.push(char::from(DIGITS[usize::from(byte >> 4)]));
        token.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    token
}

fn decode_token(token: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::invalid("page_token", "is not a token this service issued");
    let hex = token.strip_prefix(TOKEN_PREFIX).ok_or_else(invalid)?;
    if hex.len() % 2 != 0 || hex.len() > 1024 {
        return Err(invalid());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(
            PageRequest::parse(0, "").expect("ok").size,
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(
            PageRequest::parse(10_000, "").expect("ok").size,
            MAX_PAGE_SIZE
        );
        assert!(PageRequest::parse(-1, "").is_err());
    }

    #[test]
    fn tokens_round_trip_and_forgeries_are_refused() {
        let page = PageRequest::parse(2, "").expect("ok");
        let mut rows = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let token = page.finish(&mut rows, Clone::clone);
        assert_eq!(rows, ["a", "b"]);
        let next = PageRequest::parse(2, &token).expect("ok");
        assert_eq!(next.after.as_deref(), Some("b"));
        assert!(PageRequest::parse(2, "garbage").is_err());
        assert!(PageRequest::parse(2, "v1.zz").is_err());
    }

    #[test]
    fn a_page_of_rows_in_memory_is_what_finish_keeps() {
        for size in [1, 2, 3, 4] {
            let page = PageRequest::parse(size, "").expect("ok");
            let all = ["a", "b", "c"].map(str::to_owned);
            let (kept, token) = page.page_of(&all, Clone::clone);
            let mut fetched = all.to_vec();
            let expected_token = page.finish(&mut fetched, Clone::clone);
            assert_eq!(kept, fetched.as_slice(), "page size {size}");
            assert_eq!(token, expected_token, "page size {size}");
            assert_eq!(token.is_empty(), size >= 3, "page size {size}");
        }
    }

    #[test]
    fn tokens_are_the_key_in_lowercase_hex_so_issued_tokens_stay_valid() {
        // Clients keep tokens across releases: the text must not change.
        assert_eq!(encode_token("A|1|z"), "v1.417c317c7a");
        let key = "7f00|0|\u{e9}\u{ff}";
        let token = encode_token(key);
        assert_eq!(token, "v1.376630307c307cc3a9c3bf");
        let parsed = PageRequest::parse(1, &token).expect("ok");
        assert_eq!(parsed.after.as_deref(), Some(key));
    }
}
