//! `qapmap.common.v1.Date` <-> `chrono::NaiveDate` at the gRPC edge.

use chrono::{Datelike, NaiveDate, Utc};
use qapmap_proto::common::v1 as proto;

use crate::error::ApiError;

/// A required date field.
pub fn required(field: &str, value: Option<&proto::Date>) -> Result<NaiveDate, ApiError> {
    optional(field, value)?.ok_or_else(|| ApiError::invalid(field, "is required"))
}

/// An optional date: absent, or all zeros, is `None`.
pub fn optional(field: &str, value: Option<&proto::Date>) -> Result<Option<NaiveDate>, ApiError> {
    let Some(date) = value else { return Ok(None) };
    if date.year == 0 && date.month == 0 && date.day == 0 {
        return Ok(None);
    }
    let in_range = (1900..=9999).contains(&date.year);
    let parsed = u32::try_from(date.month)
        .ok()
        .zip(u32::try_from(date.day).ok())
        .and_then(|(month, day)| NaiveDate::from_ymd_opt(date.year, month, day))
        .filter(|_| in_range);
    parsed.map(Some).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!(
                "{:04}-{:02}-{:02} is not a calendar date between 1900 and 9999",
                date.year, date.month, date.day
            ),
        )
    })
}

/// An effective date: defaults to today (UTC) when absent.
pub fn effective_or_today(field: &str, value: Option<&proto::Date>) -> Result<NaiveDate, ApiError> {
    Ok(optional(field, value)?.unwrap_or_else(today))
}

/// Today in UTC: the default effective date.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

pub fn to_proto(date: NaiveDate) -> proto::Date {
    proto::Date {
        year: date.year(),
        month: i32::try_from(date.month()).unwrap_or_default(),
        day: i32::try_from(date.day()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i32, month: i32, day: i32) -> proto::Date {
        proto::Date { year, month, day }
    }

    #[test]
    fn impossible_dates_are_refused_with_the_field_name() {
        let error = required("grant_date", Some(&date(2023, 2, 29))).expect_err("not a leap year");
        assert!(
            matches!(error, ApiError::InvalidArgument { ref field, .. } if field == "grant_date")
        );
        assert!(required("grant_date", Some(&date(2024, 13, 1))).is_err());
        assert!(required("grant_date", None).is_err());
    }

    #[test]
    fn dates_round_trip() {
        let parsed = required("d", Some(&date(2024, 2, 29))).expect("leap day");
        assert_eq!(to_proto(parsed), date(2024, 2, 29));
    }
}
