//! Small values the company set-up needs (as in the saga tests' helpers, kept
//! here so this binary does not depend on that harness).

use qapmap_proto::common::v1::{Date, Decimal, Money};
pub(crate) use qapmap_testkit::fixtures::four_year_one_year_cliff;
use uuid::Uuid;

pub(crate) fn dec(value: &str) -> Option<Decimal> {
    Some(Decimal {
        value: value.to_owned(),
    })
}

pub(crate) fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        amount: dec(amount),
        currency: "USD".to_owned(),
    })
}

pub(crate) fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

pub(crate) fn request_id() -> String {
    Uuid::new_v4().to_string()
}
