//! Decimal strings at the gRPC edge: share counts and money are
//! `rust_decimal::Decimal` inside and `qapmap.common.v1.Decimal` on the wire,
//! never floats.

use std::str::FromStr;

use qapmap_proto::common::v1 as proto;
use rust_decimal::Decimal;

use crate::error::ApiError;

/// Most decimal places any quantity or amount may have (OCF allows 10).
pub const MAX_SCALE: u32 = 10;
/// Most digits before the decimal point: 10^18 shares or currency units is
/// far beyond any real company and keeps products inside Decimal's 28 digits.
pub const MAX_INTEGER_DIGITS: usize = 18;

/// Parses the strict wire format: optional `-`, digits, optional `.` and
/// 1–10 digits. Rejects exponents, `+`, spaces and separators.
pub fn parse_str(field: &str, text: &str) -> Result<Decimal, ApiError> {
    let invalid = |why: &str| ApiError::invalid(field, why.to_owned());
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (integer, fraction) = match unsigned.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (unsigned, None),
    };
    if integer.is_empty() || !integer.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "must be a decimal number such as \"1250\" or \"0.25\"",
        ));
    }
    if integer.len() > MAX_INTEGER_DIGITS {
        return Err(invalid("has more than 18 digits before the decimal point"));
    }
    if let Some(fraction) = fraction {
        if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "must be a decimal number such as \"1250\" or \"0.25\"",
            ));
        }
        if fraction.len() > MAX_SCALE as usize {
            return Err(invalid("has more than 10 decimal places"));
        }
    }
    Decimal::from_str(text).map_err(|_| invalid("is not a valid decimal number"))
}

/// A required decimal field.
pub fn required(field: &str, value: Option<&proto::Decimal>) -> Result<Decimal, ApiError> {
    match value {
        Some(value) if !value.value.is_empty() => parse_str(field, &value.value),
        _ => Err(ApiError::invalid(field, "is required")),
    }
}

/// An optional decimal field: absent or empty is `None`.
pub fn optional(field: &str, value: Option<&proto::Decimal>) -> Result<Option<Decimal>, ApiError> {
    match value {
        Some(value) if !value.value.is_empty() => parse_str(field, &value.value).map(Some),
        _ => Ok(None),
    }
}

/// A required decimal that must be above zero (quantities, prices of a trade).
pub fn positive(field: &str, value: Option<&proto::Decimal>) -> Result<Decimal, ApiError> {
    let parsed = required(field, value)?;
    if parsed <= Decimal::ZERO {
        return Err(ApiError::invalid(field, "must be above 0"));
    }
    Ok(parsed)
}

/// A required decimal that must not be negative (par values, prices that may be 0).
pub fn non_negative(field: &str, value: Option<&proto::Decimal>) -> Result<Decimal, ApiError> {
    let parsed = required(field, value)?;
    if parsed < Decimal::ZERO {
        return Err(ApiError::invalid(field, "must not be negative"));
    }
    Ok(parsed)
}

/// The wire form, without trailing zeros ("1.50" becomes "1.5").
pub fn to_proto(value: Decimal) -> proto::Decimal {
    proto::Decimal {
        value: value.normalize().to_string(),
    }
}

/// An amount in one currency, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub amount: Decimal,
    pub currency: Currency,
}

/// An ISO 4217 alphabetic code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(field: &str, code: &str) -> Result<Self, ApiError> {
        if !ISO_4217_CODES.contains(&code) {
            return Err(ApiError::invalid(
                field,
                format!("{code:?} is not an ISO 4217 currency code"),
            ));
        }
        let bytes = code.as_bytes();
        Ok(Self([bytes[0], bytes[1], bytes[2]]))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from an entry of ISO_4217_CODES, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Money {
    /// A required money field; `field` is its path, e.g. `exercise_price`.
    pub fn required(field: &str, value: Option<&proto::Money>) -> Result<Self, ApiError> {
        let value = value.ok_or_else(|| ApiError::invalid(field, "is required"))?;
        let amount = non_negative(&format!("{field}.amount"), value.amount.as_ref())?;
        let currency = Currency::parse(&format!("{field}.currency"), &value.currency)?;
        Ok(Self { amount, currency })
    }

    /// An optional money field: absent means `None`.
    pub fn optional(field: &str, value: Option<&proto::Money>) -> Result<Option<Self>, ApiError> {
        match value {
            None => Ok(None),
            Some(_) => Self::required(field, value).map(Some),
        }
    }

    pub fn to_proto(self) -> proto::Money {
        proto::Money {
            amount: Some(to_proto(self.amount)),
            currency: self.currency.to_string(),
        }
    }
}

/// Active ISO 4217 alphabetic codes.
const ISO_4217_CODES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Decimal, ApiError> {
        parse_str("quantity", text)
    }

    #[test]
    fn the_wire_format_accepts_plain_decimals() {
        assert_eq!(parse("1250").expect("ok"), Decimal::from(1250));
        assert_eq!(parse("-3.5").expect("ok"), Decimal::new(-35, 1));
        assert_eq!(parse("0.0000000001").expect("ok"), Decimal::new(1, 10));
    }

    #[test]
    fn the_wire_format_rejects_floats_exponents_and_excess_precision() {
        for text in [
            "1e5",
            "+1",
            " 1",
            "1,000",
            "1.",
            ".5",
            "",
            "NaN",
            "0.00000000001",
        ] {
            let error = parse(text).expect_err(text);
            assert!(
                matches!(error, ApiError::InvalidArgument { ref field, .. } if field == "quantity")
            );
        }
        assert!(parse("1234567890123456789").is_err(), "19 integer digits");
    }

    #[test]
    fn output_drops_trailing_zeros() {
        assert_eq!(to_proto(Decimal::new(150, 2)).value, "1.5");
        assert_eq!(to_proto(Decimal::from(25_000)).value, "25000");
    }

    #[test]
    fn currencies_must_be_iso_4217() {
        assert!(Currency::parse("currency", "USD").is_ok());
        assert!(Currency::parse("currency", "usd").is_err());
        assert!(Currency::parse("currency", "XYZ").is_err());
    }

    #[test]
    fn positive_refuses_zero_and_negatives() {
        let zero = proto::Decimal { value: "0".into() };
        let negative = proto::Decimal { value: "-1".into() };
        assert!(positive("quantity", Some(&zero)).is_err());
        assert!(positive("quantity", Some(&negative)).is_err());
        assert!(positive("quantity", None).is_err());
    }
}
